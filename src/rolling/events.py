"""Frozen, typed events: everything a rollout does, as it happens.

Every event carries ``at``, the event loop's clock (virtual under trio's
``MockClock``), and ``wall``, seconds since the epoch. Observers
(:data:`rolling.typing.Observer`) are called with each one, and
:meth:`RolloutHandle.events() <rolling.RolloutHandle.events>` streams them.

Adapters may define their own events by subclassing :class:`Event` (as
:class:`~rolling.drivers.ssh.CommandFinished` does), so that they travel
through the same observers.

This module is the events' one documented home; they are importable from
:mod:`rolling` too.

.. versionadded:: 0.1.0
   As part of :mod:`rolling`.

.. versionchanged:: 0.2.0
   Documented here, in :mod:`rolling.events`.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from ._analysis import Measurement, Verdict
    from ._result import RolloutResult, RolloutStatus
    from ._steps import Step

__all__ = [
    "AnalysisDecided",
    "BatchFinished",
    "BatchStarted",
    "ControlRequested",
    "Event",
    "FlagChanged",
    "GateChecked",
    "InstancePhaseChanged",
    "MeasurementTaken",
    "Phase",
    "ProgressDeadlineExceeded",
    "RollbackStarted",
    "RolloutFinished",
    "RolloutStarted",
    "StatusChanged",
    "StepFinished",
    "StepStarted",
    "TrafficShifted",
    "WaveStarted",
]


class Phase(enum.StrEnum):
    """Where one instance is in its life during a rollout.

    In place: ``DETACHING -> REPLACING -> WAITING_READY -> ATTACHING -> UPDATED``.
    Elastic with surge: ``LAUNCHING -> WAITING_READY -> ATTACHING -> DETACHING ->
    TERMINATING -> UPDATED``.

    Every instance a rollout works on ends on a final phase: ``UPDATED``,
    ``SKIPPED``, ``FAILED``, ``REVERTED``, ``REVERT_FAILED`` or ``INTERRUPTED``.
    A failed instance that is *restored* (``FailurePolicy.restore_failed``)
    goes ``FAILED -> REVERTING ->`` the phases of the way back to its old
    version ``-> FAILED``: the second ``FAILED`` is final, and its reason ends
    ``restored to v1`` (or says why not). A *revert* (the rollback of an
    updated instance, with ``rollback`` true) goes ``REVERTING ->`` the phases
    of the way back ``-> REVERTED`` (or ``REVERT_FAILED``).

    .. versionadded:: 0.1.0
    """

    PENDING = "pending"
    SKIPPED = "skipped"
    DETACHING = "detaching"
    DETACHED = "detached"
    REPLACING = "replacing"
    LAUNCHING = "launching"
    LAUNCHED = "launched"
    WAITING_READY = "waiting_ready"
    READY = "ready"
    ATTACHING = "attaching"
    ATTACHED = "attached"
    TERMINATING = "terminating"
    TERMINATED = "terminated"
    BACKING_OFF = "backing_off"
    UPDATED = "updated"
    FAILED = "failed"
    REVERTING = "reverting"
    REVERTED = "reverted"
    REVERT_FAILED = "revert_failed"
    INTERRUPTED = "interrupted"


@attrs.frozen(kw_only=True)
class Event:
    """Base of every event.

    Attributes:
        at: Event-loop time (``anyio.current_time()``).
        wall: Seconds since the epoch.
    """

    at: float
    wall: float


@attrs.frozen(kw_only=True)
class RolloutStarted(Event):
    """The rollout planned its work and is about to touch the fleet.

    No :class:`InstancePhaseChanged` comes before it: the ``SKIPPED`` phase
    events of the instances it lists in ``skipped`` follow it.

    Attributes:
        target: Version being rolled out.
        desired: Instances in the fleet.
        to_update: Ids to update, in the order they will start.
        skipped: Ids already on the target.
        unhealthy: Ids found unhealthy before starting (they go first).
        max_unavailable: Resolved availability budget.
        max_surge: Resolved surge budget.
    """

    target: str
    desired: int
    to_update: tuple[str, ...]
    skipped: tuple[str, ...]
    unhealthy: tuple[str, ...]
    max_unavailable: int
    max_surge: int


@attrs.frozen(kw_only=True)
class InstancePhaseChanged(Event):
    """One instance moved to another phase.

    Attributes:
        instance_id: Id of the instance of the starting fleet this concerns.
        phase: The new phase.
        version: The version the work is heading to.
        attempt: 1 for the first attempt, more on retries.
        current_id: Id of the live instance involved (differs after a launch).
        reason: Why, for failures and interruptions.
        rollback: Whether this is part of a rollback.
    """

    instance_id: str
    phase: Phase
    version: str
    attempt: int = 1
    current_id: str | None = None
    reason: str = ""
    rollback: bool = False


@attrs.frozen(kw_only=True)
class WaveStarted(Event):
    """A wave (failure domain) began.

    Attributes:
        index: 0-based wave number.
        key: The wave's key.
        instance_ids: Instances in it that need work.
    """

    index: int
    key: object
    instance_ids: tuple[str, ...]


@attrs.frozen(kw_only=True)
class BatchStarted(Event):
    """A lockstep batch began.

    Attributes:
        index: 0-based batch number.
        instance_ids: Instances in the batch.
    """

    index: int
    instance_ids: tuple[str, ...]


@attrs.frozen(kw_only=True)
class BatchFinished(Event):
    """A lockstep batch ended.

    Attributes:
        index: 0-based batch number.
        failed: How many of its instances failed.
    """

    index: int
    failed: int


@attrs.frozen(kw_only=True)
class StepStarted(Event):
    """A step began: a pause, gate, analysis or flag step, or a canary's traffic step.

    Each such step the rollout reaches has one ``StepStarted`` and, unless
    the rollout stops first, one :class:`StepFinished`, in order. An
    :class:`~rolling.Advance` is a target the rollout reaches, not a step that
    runs: it has no events of its own (the steps after it wait until it is
    reached).

    Attributes:
        index: Position in the rollout's steps; for the pause between batches
            (``Batches(pause=...)``), the number of the batch before it (from
            0); for a blue-green's holds, 0 (pre-promotion analysis), 1 (the
            wait for a promote) and 2 (post-promotion analysis).
        step: The step.
    """

    index: int
    step: Step


@attrs.frozen(kw_only=True)
class StepFinished(Event):
    """A step ended.

    Attributes:
        index: As in :class:`StepStarted`.
        step: The step.
        promoted: Whether :meth:`~rolling.RolloutHandle.promote` ended it.
    """

    index: int
    step: Step
    promoted: bool = False


@attrs.frozen(kw_only=True)
class GateChecked(Event):
    """A gate answered.

    Attributes:
        name: The gate's name.
        passed: Its answer.
        reason: Its reason, or the error it raised.
    """

    name: str
    passed: bool
    reason: str = ""


@attrs.frozen(kw_only=True)
class FlagChanged(Event):
    """The rollout set a feature flag, or tried to.

    Attributes:
        flag: The flag's key.
        value: The value it was set to.
        ok: Whether the setter stored it; when false the flag kept its value.
        cause: Why: ``enable`` (every serving instance runs the target),
            ``disable`` (before a rollback) or ``step`` (a
            :class:`~rolling.SetFlag` step).
        reason: Why it failed (the error the setter raised), else empty.

    .. versionadded:: 0.4.0
    """

    flag: str
    value: object
    ok: bool
    cause: str
    reason: str = ""


@attrs.frozen(kw_only=True)
class ControlRequested(Event):
    """A control call arrived: ``pause``, ``resume``, ``abort`` or ``promote``.

    Every call made while the rollout runs has one, a ``promote()`` refused
    with :class:`~rolling.ControlError` (nothing to promote) too. A background
    analysis that pauses the rollout for a person reports itself as a
    ``pause`` whose ``detail`` is the reason.

    Attributes:
        action: The call's name.
        detail: Its arguments, as text.
    """

    action: str
    detail: str = ""


@attrs.frozen(kw_only=True)
class StatusChanged(Event):
    """The rollout's status changed.

    Attributes:
        status: The new status.
    """

    status: RolloutStatus


@attrs.frozen(kw_only=True)
class ProgressDeadlineExceeded(Event):
    """No instance completed within the progress deadline.

    Attributes:
        seconds: The deadline.
        action: What happens now (``rollback``, ``halt`` or ``report``).
    """

    seconds: float
    action: str


@attrs.frozen(kw_only=True)
class RollbackStarted(Event):
    """A trigger fired and the rollback policy applies.

    Attributes:
        reason: The trigger.
        mode: ``revert`` or ``halt``.
        instance_ids: Instances to put back (empty for ``halt``).
    """

    reason: str
    mode: str
    instance_ids: tuple[str, ...]


@attrs.frozen(kw_only=True)
class RolloutFinished(Event):
    """The rollout ended.

    Attributes:
        result: Its result.
    """

    result: RolloutResult


@attrs.frozen(kw_only=True)
class MeasurementTaken(Event):
    """A metric was measured and the measurement judged.

    Attributes:
        analysis: The analysis's name.
        measurement: The measurement: metric, value, outcome and reason.
        background: Whether it belongs to the rollout's background analysis.

    .. versionadded:: 0.3.0
    """

    analysis: str
    measurement: Measurement
    background: bool = False


@attrs.frozen(kw_only=True)
class AnalysisDecided(Event):
    """An analysis reached its verdict (or was cut short by the rollout's end).

    Attributes:
        verdict: The verdict, with every metric's.

    .. versionadded:: 0.3.0
    """

    verdict: Verdict


@attrs.frozen(kw_only=True)
class TrafficShifted(Event):
    """A weighted or blue-green strategy moved traffic between the old and the new set.

    Attributes:
        percent: The new set's share of new requests that was asked for.
        achieved: The share the weights give (whole weights cannot meet every
            share exactly; see :class:`~rolling.SetWeight`).
        new_instances: Instances on the new side.
        new_weight: The weight each of them got (0 to
            :data:`~rolling.typing.MAX_WEIGHT`).
        old_weight: The weight each old instance got.
        reason: ``"step"`` (a :class:`~rolling.SetWeight`), ``"switch"`` (all
            traffic to the new set) or ``"promote"`` (every instance at full
            weight before a canary's window promotion).

    .. versionadded:: 0.4.0
    """

    percent: float
    achieved: float
    new_instances: int
    new_weight: int
    old_weight: int
    reason: str

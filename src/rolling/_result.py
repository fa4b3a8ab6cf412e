"""The outcome of a rollout: its status and what happened to every instance."""

from __future__ import annotations

import enum
from collections import Counter
from typing import cast

import attrs

from ._analysis import Measurement, Verdict
from .events import FlagChanged

__all__ = ["InstanceOutcome", "InstanceResult", "RolloutResult", "RolloutStatus"]


class RolloutStatus(enum.StrEnum):
    """How a rollout ended (or where it is, in a status snapshot).

    .. versionadded:: 0.1.0
    """

    PENDING = "pending"
    """Not started yet."""
    RUNNING = "running"
    """Updating instances."""
    PAUSED = "paused"
    """Paused by a step or by :meth:`~rolling.RolloutHandle.pause`."""
    ROLLING_BACK = "rolling_back"
    """Putting changed instances back on their old version."""
    SUCCEEDED = "succeeded"
    """Every instance runs the target version and is in traffic."""
    DEGRADED = "degraded"
    """Finished within the failure budget: some instances failed and are named."""
    ROLLED_BACK = "rolled_back"
    """A trigger fired and every changed instance is back, or named as failing to revert."""
    HALTED = "halted"
    """A trigger fired under the ``halt`` policy: the fleet is left mixed, exactly as reported."""
    ABORTED = "aborted"
    """Stopped by :meth:`~rolling.RolloutHandle.abort` (reverted unless ``rollback=False``)."""
    CANCELLED = "cancelled"
    """The task running the rollout was cancelled; in-flight work was finished or put back."""

    @property
    def finished(self) -> bool:
        """Whether this status is terminal."""
        return self not in {self.PENDING, self.RUNNING, self.PAUSED, self.ROLLING_BACK}


class InstanceOutcome(enum.StrEnum):
    """What happened to one instance.

    .. versionadded:: 0.1.0
    """

    PENDING = "pending"
    """Not reached (the rollout stopped first)."""
    IN_PROGRESS = "in_progress"
    """Being worked on (snapshots only)."""
    SKIPPED = "skipped"
    """Already on the target version."""
    UPDATED = "updated"
    """Now on the target version and in traffic."""
    FAILED = "failed"
    """Could not be updated; ``serving`` says whether it is back in traffic on its old version."""
    REVERTED = "reverted"
    """Was updated, then put back on its old version by the rollback."""
    REVERT_FAILED = "revert_failed"
    """The rollback could not put it back; ``reason`` says why."""
    INTERRUPTED = "interrupted"
    """Work stopped part-way (abort, halt, cancel); ``version`` and ``serving`` say where it is."""


@attrs.frozen(kw_only=True)
class InstanceResult:
    """The fate of one instance of the fleet as it was when the rollout started.

    Attributes:
        id: The instance's id when the rollout started.
        outcome: What happened to it.
        old_version: The version it ran when the rollout started.
        version: The version now running in its place (None when nothing runs there).
        current_id: Id of what now runs in its place: a new id after an elastic
            replacement, None when nothing does.
        serving: Whether what runs in its place is in traffic.
        attempts: Update attempts made (retries included).
        reason: Why it failed or stopped; empty on success.
        started_at: Event-loop time its work began, or None.
        finished_at: Event-loop time its work ended, or None.
        strays: Ids of instances its work launched or displaced that it left standing:
            they still exist and need a look. They are out of traffic (or in the router
            at weight 0), except after a halt of a canary or blue-green, which leaves both
            sets as they are: the new instance of an ``INTERRUPTED`` unit may then still
            take its share.
    """

    id: str
    outcome: InstanceOutcome
    old_version: str
    version: str | None
    current_id: str | None
    serving: bool
    attempts: int = 0
    reason: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    strays: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class RolloutResult:
    """What a rollout did.

    Attributes:
        status: How it ended.
        target: The version it rolled to.
        reason: Why it stopped early (the trigger), empty on success.
        instances: One entry per instance of the starting fleet, in inventory order.
        started_at: Event-loop time it started.
        finished_at: Event-loop time it ended.
        measurements: Every measurement of every analysis, in the order taken.
        verdicts: Every analysis's verdict (steps in order, and the background one).
        verdict: The verdict that decided the rollout: the one that failed
            or paused it, else the last one reached; None without analysis.
        flags: Every feature-flag change the rollout made or tried, in order
            (:class:`~rolling.FlagRules`, :class:`~rolling.SetFlag`).

    .. versionadded:: 0.1.0

    .. versionchanged:: 0.3.0
       ``measurements``, ``verdicts`` and ``verdict``.

    .. versionchanged:: 0.4.0
       ``flags``.
    """

    status: RolloutStatus
    target: str
    reason: str
    instances: tuple[InstanceResult, ...]
    started_at: float
    finished_at: float
    measurements: tuple[Measurement, ...] = ()
    verdicts: tuple[Verdict, ...] = ()
    verdict: Verdict | None = None
    flags: tuple[FlagChanged, ...] = ()

    @property
    def duration(self) -> float:
        """Seconds from start to end, on the event loop's clock."""
        return self.finished_at - self.started_at

    @property
    def counts(self) -> dict[InstanceOutcome, int]:
        """How many instances ended with each outcome."""
        return dict(Counter(i.outcome for i in self.instances))

    @property
    def ok(self) -> bool:
        """Whether the rollout succeeded."""
        return self.status is RolloutStatus.SUCCEEDED

    def by_id(self, instance_id: str) -> InstanceResult:
        """The result for the instance that had ``instance_id`` at the start."""
        for item in self.instances:
            if item.id == instance_id:
                return item
        raise KeyError(instance_id)

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dictionary, for machines."""
        return {
            "status": str(self.status),
            "target": self.target,
            "reason": self.reason,
            "duration": self.duration,
            "counts": {str(k): v for k, v in self.counts.items()},
            "instances": [
                {
                    k: (
                        str(v)
                        if isinstance(v, enum.Enum)
                        else list(cast("tuple[object, ...]", v))
                        if isinstance(v, tuple)
                        else v
                    )
                    for k, v in attrs.asdict(i).items()
                }
                for i in self.instances
            ],
            "measurements": [m.to_dict() for m in self.measurements],
            "verdicts": [v.to_dict() for v in self.verdicts],
            "verdict": None if self.verdict is None else self.verdict.to_dict(),
            "flags": [
                {
                    "flag": f.flag,
                    "value": f.value,
                    "ok": f.ok,
                    "cause": f.cause,
                    "reason": f.reason,
                    "at": f.at,
                }
                for f in self.flags
            ],
        }

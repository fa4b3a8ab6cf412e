"""The machine's record of one instance of the starting fleet, and its result."""

from __future__ import annotations

from typing import Any

import attrs

from ._collector import collector_paused
from ._frozen_builder import frozen_builder
from ._result import InstanceOutcome, InstanceResult

__all__ = [
    "Slot",
    "changed",
    "end_slots",
    "fleet_slots",
    "in_doubt",
    "instance_result",
    "needs_revert",
]


@attrs.define(eq=False)
class Slot:
    """One instance of the starting fleet and what stands in its place now.

    Only the machine changes a slot.
    """

    key: str
    position: int
    old_version: str
    live: Any
    serving_at_start: bool
    attached: bool = True
    ready: bool = True
    extra: Any = None
    extra_attached: bool = False
    doubt: bool = False
    """The last router call on :attr:`live` failed (raised or was cut): it may be in traffic
    or not. It counts as out of traffic (``attached`` is false), and is detached again
    before anything would stop it, or attached again to settle it."""
    extra_doubt: bool = False
    """The same for :attr:`extra`."""
    terminated_but: bool = False
    """Its old instance was terminated after the swap, but ``after_terminate`` raised: the
    reason says so, and a success keeps it."""
    tally: dict[InstanceOutcome, int] | None = attrs.field(default=None, kw_only=True, repr=False)
    """Slots by outcome, shared by the slots of a run, so a snapshot need not scan them."""
    outcome: InstanceOutcome = InstanceOutcome.PENDING
    """What happened to this instance so far: read it; change it with :meth:`set_outcome`."""
    reason: str = ""
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    changed_seq: int = -1
    replace_tried: bool = False
    # A tuple, not a list: nearly every slot has none, and the empty tuple is shared
    # (a list per slot is one more object for the collector to walk, a fleet's worth).
    strays: tuple[Any, ...] = ()
    batch: int | None = None
    lost: bool = False
    """Nothing stands in its place and nothing can be launched there: a resumed rollout
    whose instance is gone, with a driver that cannot launch. No pass works on it."""

    def set_outcome(self, value: InstanceOutcome) -> None:
        """Change :attr:`outcome`, keeping the run's tally.

        A method, not a property setter: a plain attribute reads faster than a property,
        and a unit reads the outcome more often than it changes it.
        """
        tally = self.tally
        if tally is not None:
            tally[self.outcome] -= 1
            tally[value] = tally.get(value, 0) + 1
        self.outcome = value

    @property
    def existing(self) -> int:
        """Instances this slot accounts for: what is in place, a surge instance, strays."""
        return (self.live is not None) + (self.extra is not None) + len(self.strays)

    @property
    def serving(self) -> bool:
        """Whether what stands here is in traffic and ready."""
        return self.live is not None and self.attached and self.ready


def fleet_slots(
    instances: list[Any], healthy: list[bool], tally: dict[InstanceOutcome, int]
) -> list[Slot]:
    """A slot for each instance of the starting fleet, in order; ``healthy`` from the survey."""
    with collector_paused():
        return [
            Slot(
                key=instance.id,
                position=position,
                old_version=instance.version,
                live=instance,
                serving_at_start=ok,
                ready=ok,
                tally=tally,
            )
            for position, (instance, ok) in enumerate(zip(instances, healthy, strict=True))
        ]


def end_slots(slots: list[Slot]) -> None:
    """The run has ended: nothing is in progress, and what stands beside a slot is a stray."""
    for slot in slots:
        if slot.extra is not None:
            # A paired strategy halted or cancelled with both instances standing.
            slot.strays += (slot.extra,)
            slot.reason = slot.reason or f"left beside its new instance {slot.extra.id}"
            slot.extra = None
        if slot.outcome is InstanceOutcome.IN_PROGRESS:
            slot.set_outcome(InstanceOutcome.INTERRUPTED)
            slot.reason = slot.reason or "interrupted"


def changed(slot: Slot) -> bool:
    """Whether what stands in its place differs from the start: gone, other version, out."""
    live = slot.live
    return live is None or live.version != slot.old_version or not slot.attached


def needs_revert(slot: Slot) -> bool:
    """Whether a rollback has to put this slot back (a lost one cannot be)."""
    untouched = slot.outcome in {InstanceOutcome.PENDING, InstanceOutcome.SKIPPED}
    return not untouched and not slot.lost and changed(slot)


_make_result = frozen_builder(
    InstanceResult,
    (
        "id",
        "outcome",
        "old_version",
        "version",
        "current_id",
        "serving",
        "attempts",
        "reason",
        "started_at",
        "finished_at",
        "strays",
    ),
)


def instance_result(slot: Slot) -> InstanceResult:
    """The public result for ``slot``."""
    live = slot.live
    return _make_result(
        slot.key,
        slot.outcome,
        slot.old_version,
        None if live is None else live.version,
        None if live is None else live.id,
        live is not None and slot.attached,
        slot.attempts,
        slot.reason,
        slot.started_at,
        slot.finished_at,
        tuple([stray.id for stray in slot.strays]) if slot.strays else (),
    )


def in_doubt(slot: Slot, *, extra: bool) -> None:
    """A router call on the slot's instance (or its ``extra``) failed: in traffic or not?

    A detach that raised or was cut may have stopped new traffic already, an attach may
    have started it: the instance counts as out of traffic, is detached again before it
    is stopped, and is attached again to settle it (router calls are idempotent).
    """
    if extra:
        slot.extra_attached, slot.extra_doubt = False, True
    else:
        slot.attached, slot.doubt = False, True

"""Resuming: the slots of an unfinished rollout, and the dead controller's work put in order.

Part of the machine (:mod:`rolling._machine`), sans-io like it; the journal is
read by :mod:`rolling._recovery`. Rules, in order:

1. Each instance of the starting fleet gets its slot back, standing as the
   journal and the live fleet agree (:func:`~rolling._recovery.reconcile`);
   present instances are surveyed with one probe each.
2. What stands in place and is healthy but out of traffic goes back in first.
   With a paired strategy and a weighted router, every instance in place then
   gets :data:`~rolling.typing.FULL_WEIGHT`: the dead controller may have left
   every request on new instances that are about to go.
3. Then the *doomed* instances (launched but never put in place, or strangers
   the journal names) go: one the journal says may be in traffic (its last
   router call was not a completed detach, :mod:`rolling._recovery` rule 5)
   is first detached, which drains it, with any strategy; with a paired
   strategy each is first set to weight 0 and detached, since it may still be
   in the router; then terminated. A call that fails stops the resume before
   anything else changes.
4. An instance already on the target and in traffic counts as updated (or
   skipped, if it started there); a rollback that was running goes on.
5. A key with nothing in its place (:mod:`rolling._recovery`, rule 3: gone
   from the fleet, or terminated before its replacement came) is launched
   again by the passes; but a driver that cannot launch (``replace`` only)
   can put nothing there. Such a slot is *lost*: it ends ``FAILED`` with a
   reason that says so, no pass (forward or rollback) works on it, and the
   rollout goes on with the fleet that stands, whose size is the window's
   (so the gone instance does not hold the availability budget forever). It
   is not counted against the failure budget (the new version did not fail
   there), but a rollout going forward ends ``DEGRADED`` at best, as with any
   failed instance. Nothing is raised: the rest of the fleet still gets its
   update (or its rollback).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING, Any

from ._effects import Failed, Survey
from ._errors import RollingError
from ._recovery import Recovered, reconcile
from ._result import InstanceOutcome
from ._slot import Slot, changed
from .events import Phase
from .typing import FULL_WEIGHT

if TYPE_CHECKING:
    from ._machine import Machine
    from ._unit import UnitPrograms

__all__ = ["Resumption"]

Program = Generator[Any, Any, Any]


class Resumption:
    """One resumed rollout: its journal's account, and the strays to clear."""

    def __init__(
        self,
        machine: Machine,
        units: UnitPrograms,
        recovered: Recovered,
        tally: dict[InstanceOutcome, int],
    ) -> None:
        self._m = machine
        self._units = units
        self._recovered = recovered
        self._tally = tally
        self._doomed: tuple[Any, ...] = ()
        self._in_traffic: frozenset[str] = frozenset()

    def plan(self, instances: Sequence[Any]) -> Program:
        """Rule 1: rebuild the machine's slots from the journal and the live fleet."""
        recovered = self._recovered
        settings = self._m.settings
        matched = reconcile(recovered, instances)
        present = [i for i in (matched.live[key] for key, _ in recovered.fleet) if i is not None]
        answers = (yield Survey(present)) if settings.has_check else [True] * len(present)
        healthy = dict(zip((i.id for i in present), answers, strict=True))
        for position, (key, old_version) in enumerate(recovered.fleet):
            instance = matched.live[key]
            attached = matched.attached[key]
            ok = instance is not None and healthy[instance.id]
            self._m.slots.append(
                Slot(
                    key=key,
                    position=position,
                    old_version=old_version,
                    live=instance,
                    serving_at_start=ok and attached,
                    ready=ok,
                    attached=attached,
                    tally=self._tally,
                    # Rule 5: nothing stands there, and the driver cannot launch.
                    lost=instance is None and not settings.can_launch,
                )
            )
        self._doomed = matched.doomed
        self._in_traffic = matched.in_traffic

    def finish_dead_work(self) -> Program:
        """Rules 2 to 5: traffic back to what stands, strays gone, outcomes restored."""
        yield from self._traffic_back()
        yield from self._clear_strays()
        machine = self._m
        target = machine.settings.target
        for slot in machine.slots:
            if slot.lost:
                slot.set_outcome(InstanceOutcome.FAILED)
                slot.reason = (
                    f"gone: {slot.key} was not in the fleet when the rollout resumed, and the"
                    " driver has no launch() to put an instance in its place"
                )
                machine.phase(slot, Phase.FAILED, slot.old_version, slot.reason)
                continue
            live = slot.live
            if live is not None and slot.attached and live.version == target:
                slot.set_outcome(
                    InstanceOutcome.SKIPPED
                    if slot.old_version == target
                    else InstanceOutcome.UPDATED
                )
                machine.mark_changed(slot)
        recovered = self._recovered
        if recovered.rolling_back:
            machine.resume_rollback(recovered.reason)
            for slot in machine.slots:
                if slot.outcome is InstanceOutcome.PENDING and changed(slot):
                    slot.set_outcome(InstanceOutcome.INTERRUPTED)

    def _traffic_back(self) -> Program:
        """Rule 2."""
        machine = self._m
        settings = machine.settings
        for slot in machine.slots:
            live = slot.live
            if live is not None and not slot.attached and slot.ready:
                # Left out of traffic by the dead controller, and healthy: put it back.
                yield from self._units.attach(slot, live, live.version)
                slot.serving_at_start = True
        if settings.paired and settings.weighted:
            for slot in machine.slots:
                live = slot.live
                if live is not None and slot.attached:
                    yield from self._call(slot, "set_weight", live, FULL_WEIGHT)

    def _clear_strays(self) -> Program:
        """Rule 3."""
        settings = self._m.settings
        for stray in self._doomed:
            holder = Slot(
                key=stray.id, position=-1, old_version="", live=stray, serving_at_start=False
            )
            if settings.paired and settings.weighted:
                yield from self._call(holder, "set_weight", stray, 0)
            in_traffic = stray.id in self._in_traffic
            if settings.has_router and (settings.paired or in_traffic):
                # Never terminate what may serve requests: detach drains it first.
                yield from self._call(holder, "detach", stray)
            yield from self._call(holder, "terminate", stray)

    def _call(self, slot: Slot, op: str, instance: Any, *args: Any) -> Program:
        """A call that puts the dead controller's work in order; failing, it stops the resume."""
        what = f"{'driver' if op == 'terminate' else 'router'}.{op}"
        version = getattr(instance, "version", "")
        try:
            yield from self._units.call(slot, op, instance, version, what, instance, *args)
        except Failed as exc:
            msg = f"could not clean up {instance.id} before resuming: {exc.reason}"
            raise RollingError(msg) from None

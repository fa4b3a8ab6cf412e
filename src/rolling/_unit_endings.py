"""How a unit ends when it does not simply succeed: failed, not reverted, interrupted.

Part of the machine (:mod:`rolling._machine`), sans-io like the unit programs
(:mod:`rolling._unit`) whose endings these are. Rules:

1. **Failed** (out of attempts): ``FAILED``, counted against the budget, then put back
   on its old version and in traffic (``restore_failed``); a router call left in doubt
   that changed nothing else is only settled. With ``FlagRules`` and a revert pending, the
   flag goes off first (:mod:`rolling._flagging`, rule 7); if it cannot, nothing is
   restored. ``FAILED`` again is the final phase, its reason saying where it was left.
2. **Not reverted** (a rollback unit that failed): ``REVERT_FAILED`` after a put-back; an
   instance that had failed before the rollback stays ``FAILED``.
3. **Interrupted** (a trigger or a cancellation cut a wait): *settled*: a surge instance
   not in traffic is terminated, and an instance out of traffic goes back in when it
   answers its check, unless a coming revert will handle it (it is then *left out*, and
   :meth:`UnitEndings.put_back_left_out` settles it should that revert become a halt).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._effects import Failed, Interrupted, Probe, Record, Together
from ._ledger import Mode
from ._result import InstanceOutcome
from ._settings import Settings
from ._slot import Slot
from .events import Phase

if TYPE_CHECKING:
    from ._machine import Machine, Program
    from ._unit import UnitPrograms

__all__ = ["UnitEndings"]


class UnitEndings:
    """The endings of one machine's units (rules at the top of the module)."""

    def __init__(self, units: UnitPrograms, machine: Machine, settings: Settings) -> None:
        self._units = units
        self._m = machine
        self._s = settings
        self._journaled = settings.journaled
        self._left_out: list[Slot] = []  # interrupted out of traffic, for a pending revert

    def fail(self, slot: Slot, mode: Mode, reason: str) -> Program:
        machine = self._m
        slot.set_outcome(InstanceOutcome.FAILED)
        slot.reason = reason
        machine.phase(slot, Phase.FAILED, self._s.target, reason)
        machine.record_failure(slot)
        live = slot.live
        in_traffic_on_old = slot.serving and live.version == slot.old_version
        untouched = live is not None and live.version == slot.old_version
        if slot.doubt and untouched and not slot.replace_tried:
            # A detach that raised or was cut changed nothing but, maybe, the traffic: the
            # old instance goes back in (attach is idempotent), restore_failed or not.
            yield from self._settle(slot, attach_if_healthy=True)
        elif not self._s.failure.restore_failed or in_traffic_on_old:
            if not slot.doubt and slot.extra is None:
                return  # nothing to settle: FAILED stays the last phase
            if slot.doubt and live is not None:
                # Left out of traffic for inspection, as documented: surely out, then.
                try:
                    yield from self._units.detach(slot, live, live.version)
                except Failed as exc:
                    self._cleanup_failed(slot, exc)
            # A surge instance to drop: its phases come after FAILED, announced again below.
            yield from self._settle(slot, attach_if_healthy=False)
        elif not (yield from machine.flags.before_restore()):
            # The flag may be on: the old version must not come back (a halt, rule 7).
            slot.reason = f"{reason}; not restored to {slot.old_version}: {machine.flags.stays_on}"
            yield from self._settle(slot, attach_if_healthy=False)
        elif (Mode.TAKE_OUT if live is None else mode) is Mode.SURGE:
            yield from self._settle(slot, attach_if_healthy=True)
        else:
            yield from self._restore(slot, Mode.TAKE_OUT if live is None else mode, reason)
        # The restore's (or the settle's) own phases end on ATTACHED, DETACHED or TERMINATED:
        # FAILED again is the unit's final phase, with a reason that says where it is left.
        live = slot.live
        machine.phase(
            slot, Phase.FAILED, slot.old_version if live is None else live.version, slot.reason
        )

    def not_reverted(
        self, slot: Slot, version: str, reason: str, failure: str | None, *, restored: bool
    ) -> Program:
        """A rollback unit that did not end REVERTED: its revert failed, or it had failed.

        ``failure`` is the reason an instance failed before the rollback put it back (or
        tried to): it stays FAILED, since it was never updated.
        """
        if not restored:
            slot.reason = reason
            yield from self._settle(slot, attach_if_healthy=True)
        if failure is None:
            slot.set_outcome(InstanceOutcome.REVERT_FAILED)
            # The final phase comes last, after the put-back's own phases.
            self._m.phase(slot, Phase.REVERT_FAILED, version, slot.reason)
            return
        if restored:
            slot.reason = f"{failure}; restored to {version} by the rollback"
        else:
            slot.reason = f"{failure}; restoring {version} in the rollback failed: {slot.reason}"
        slot.set_outcome(InstanceOutcome.FAILED)
        self._m.phase(slot, Phase.FAILED, version, slot.reason)

    def _restore(self, slot: Slot, restore_mode: Mode, reason: str) -> Program:
        machine = self._m
        try:
            machine.phase(slot, Phase.REVERTING, slot.old_version)
            yield from self._units.apply(slot, restore_mode, slot.old_version, restoring=True)
        except Failed as exc:
            slot.reason = f"{reason}; restoring {slot.old_version} failed too: {exc.reason}"
            yield from self._settle(slot, attach_if_healthy=False)
        except Interrupted:
            # A cancellation cut the restore's readiness wait: the settle's one probe decides.
            # The reason says where that left it, as after a restore that ran to its end.
            yield from self._settle(slot, attach_if_healthy=True)
            live = slot.live
            if slot.serving and live is not None and live.version == slot.old_version:
                slot.reason = f"{reason}; restored to {slot.old_version}"
            elif not slot.serving:
                slot.reason = f"{slot.reason}; restoring {slot.old_version} was cut short"
        else:
            slot.reason = f"{reason}; restored to {slot.old_version}"

    def interrupted(self, slot: Slot, version: str, *, rolling_back: bool) -> Program:
        # A coming revert handles what is out of traffic; otherwise put it back now.
        attach = not self._m.revert_pending or rolling_back
        yield from self._settle(slot, attach_if_healthy=attach)
        if not attach and not slot.attached and slot.live is not None:
            self._left_out.append(slot)
        if slot.outcome is not InstanceOutcome.IN_PROGRESS:
            return
        live = slot.live
        if live is not None and slot.attached and live.version == version:
            slot.set_outcome(InstanceOutcome.REVERTED if rolling_back else InstanceOutcome.UPDATED)
            slot.reason = ""
            self._m.phase(slot, Phase(slot.outcome), version)
        else:
            slot.set_outcome(InstanceOutcome.INTERRUPTED)
            slot.reason = "interrupted"
            self._m.phase(slot, Phase.INTERRUPTED, version, slot.reason)

    def put_back_left_out(self) -> Program:
        """A revert asked for became a halt before it began: settle what it was to handle.

        As a halt settles an interrupted unit: each instance still out of traffic goes
        back in if it passes one health check; one on the target is then ``UPDATED``.
        """
        slots = [s for s in self._left_out if s.live is not None and not s.attached]
        self._left_out.clear()
        if slots:
            yield Together([self._put_back(s) for s in slots], slots)

    def _put_back(self, slot: Slot) -> Program:
        yield from self._settle(slot, attach_if_healthy=True)
        live = slot.live
        if slot.attached and live is not None and live.version == self._s.target:
            slot.set_outcome(InstanceOutcome.UPDATED)
            slot.reason = ""
            self._m.phase(slot, Phase.UPDATED, live.version)
            if self._journaled:
                yield Record({"t": "unit", "k": slot.key, "o": str(slot.outcome)})

    def _settle(self, slot: Slot, *, attach_if_healthy: bool) -> Program:
        """Leave ``slot`` consistent: no surge instance out of traffic, nothing out unchecked."""
        live = slot.live
        # The instance in place goes back first, so dropping a surge instance in traffic
        # does not leave the place empty meanwhile; each is tried whatever the other did.
        if attach_if_healthy and live is not None and not slot.attached:
            healthy = (yield Probe(live)) if self._s.has_check else True
            try:
                if healthy:
                    slot.ready = True
                    yield from self._units.attach(slot, live, live.version)
                elif slot.doubt:
                    # Left out, as reported: a router call that failed may have left it in.
                    yield from self._units.detach(slot, live, live.version)
            except Failed as exc:
                self._cleanup_failed(slot, exc)
        if slot.extra is not None:
            try:
                yield from self._units.drop_extra(slot, slot.old_version)
            except Failed as exc:
                self._cleanup_failed(slot, exc)

    @staticmethod
    def _cleanup_failed(slot: Slot, exc: Failed) -> None:
        slot.reason = f"{slot.reason}; cleanup: {exc.reason}" if slot.reason else exc.reason

"""The programs of one pair, for the paired strategies (``Canary``, ``BlueGreen``).

Part of the machine (:mod:`rolling._machine`), sans-io like it. A *pair* is one
slot of the starting fleet (the old, *stable* or *blue* instance, in ``live``)
and the new instance launched beside it (``extra``). The sequences:

* stage: ``launch -> ready``, then with a weighted router ``set_weight 0 ->
  attach``; a new instance takes no request before a weight is given to it;
* shift: ``set_weight`` on both, the side that gains first;
* switch: weighted ``set_weight new FULL -> set_weight old 0``, else
  ``attach new -> detach old``; switch back is the same the other way;
* retire: ``detach old -> terminate old``; the new instance takes the slot;
* discard: weighted ``set_weight new 0``, then ``detach new -> terminate new``.

A stage that fails is retried with back-off like any unit; out of attempts,
the pair counts against the failure budget and its old instance stays as it
was. An instance that cannot be terminated is kept as a stray of its slot.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from typing import Any

from ._effects import Failed, Interrupted, Sleep
from ._result import InstanceOutcome
from ._slot import Slot
from ._unit import Gone, UnitPrograms
from .events import Phase
from .typing import FULL_WEIGHT

__all__ = ["PairedUnits"]

Program = Generator[Any, Any, Any]


class PairedUnits(UnitPrograms):
    """Unit programs, plus the steps of a pair."""

    @property
    def weighted(self) -> bool:
        """Whether traffic moves by weight (the router has ``set_weight``)."""
        return self._s.weighted

    def weigh(self, slot: Slot, instance: Any, weight: int) -> Program:
        """Give ``instance`` this weight."""
        version = instance.version
        yield from self.call(
            slot, "set_weight", instance, version, "router.set_weight", instance, weight
        )
        self._m.analyses.weighed(instance.id, weight)

    def stage(self, slot: Slot) -> Program:
        """Launch the new instance of ``slot`` beside the old one; return whether it is ready."""
        machine = self._m
        target = self._s.target
        policy = self._s.failure
        machine.unit_began(slot)
        reason = ""
        strays = len(slot.strays)
        try:
            for attempt in range(1, policy.retries + 2):
                if len(slot.strays) > strays:
                    # The pair's one instance of room is held by what it could not terminate.
                    reason = f"{reason}; no room to launch again: {slot.strays[-1].id} is left"
                    break
                slot.attempts += 1
                try:
                    yield from self._stage_once(slot, target)
                except Failed as exc:
                    reason = exc.reason
                    yield from self._drop_quietly(slot, target)
                else:
                    return True
                if attempt <= policy.retries:
                    machine.phase(slot, Phase.BACKING_OFF, target, reason)
                    yield from self._wait(Sleep(policy.backoff.delay(attempt, self._rng)))
        except Interrupted:
            yield from self._drop_quietly(slot, target)
            slot.set_outcome(InstanceOutcome.INTERRUPTED)
            slot.reason = "interrupted"
            machine.phase(slot, Phase.INTERRUPTED, target, slot.reason)
            return False
        finally:
            machine.unit_rested(slot)
        slot.set_outcome(InstanceOutcome.FAILED)
        slot.reason = reason
        machine.phase(slot, Phase.FAILED, target, reason)
        machine.record_failure(slot)
        return False

    def _stage_once(self, slot: Slot, target: str) -> Program:
        yield from self._launch_extra(slot, target)
        yield from self._ready(slot, slot.extra, target)
        if self.weighted:
            yield from self.weigh(slot, slot.extra, 0)
            yield from self.attach(slot, slot.extra, target, extra=True)

    def _drop_quietly(self, slot: Slot, version: str) -> Program:
        """Take the new instance away; one that cannot be terminated stays a stray."""
        if slot.extra is None:
            return
        reasons: list[str] = []
        if self.weighted and slot.extra_attached:
            try:
                yield from self.weigh(slot, slot.extra, 0)
            except Failed as exc:
                reasons.append(exc.reason)  # the detach below takes it out all the same
        try:
            yield from self.drop_extra(slot, version)
        except Failed as exc:
            reasons.append(exc.reason)
        if reasons:
            why = "; ".join(reasons)
            slot.reason = f"{slot.reason}; cleanup: {why}" if slot.reason else why

    def unstage(self, slot: Slot) -> Program:
        """A canary the scale no longer wants: out of traffic and gone; its pair is pending."""
        self._m.unit_began(slot)
        try:
            yield from self._drop_quietly(slot, slot.old_version)
        finally:
            self._m.unit_rested(slot)
        if slot.extra is None:
            slot.set_outcome(InstanceOutcome.PENDING)
            self._m.phase(slot, Phase.PENDING, slot.old_version)

    def shift(self, slot: Slot, new: int, old: int, *, gaining_new: bool) -> Program:
        """Set the pair's weights, the side that gains traffic first."""
        calls = [(slot.extra, new), (slot.live, old)]
        if not gaining_new:
            calls.reverse()
        for instance, weight in calls:
            if instance is not None:
                yield from self.weigh(slot, instance, weight)

    def switch(self, slot: Slot) -> Program:
        """Send the pair's traffic to the new instance."""
        target = self._s.target
        if self.weighted:
            yield from self.shift(slot, FULL_WEIGHT, 0, gaining_new=True)
            return
        yield from self.attach(slot, slot.extra, target, extra=True)
        if slot.attached or slot.doubt:
            try:
                yield from self.detach(slot, slot.live, target)
            except Failed:
                # Maybe still in traffic, maybe not: in again, as it was (attach is
                # idempotent), so that a halt that leaves both sets reports them truly.
                with contextlib.suppress(Failed):
                    yield from self.attach(slot, slot.live, slot.old_version)
                raise

    def switch_back(self, slot: Slot) -> Program:
        """Send the pair's traffic to the old instance again."""
        old = slot.old_version
        if self.weighted:
            yield from self.shift(slot, 0, FULL_WEIGHT, gaining_new=False)
            return
        if not slot.attached:
            yield from self.attach(slot, slot.live, old)
        if slot.extra_attached or slot.extra_doubt:
            yield from self.detach(slot, slot.extra, old, extra=True)

    def retire(self, slot: Slot) -> Program:
        """The old instance goes; the new one takes the slot. The pair is updated."""
        target = self._s.target
        machine = self._m
        old = slot.live
        kept = ""
        if slot.attached or slot.doubt:
            try:
                if self.weighted:
                    # Out of new traffic first: a detach that fails then leaves it sent nothing.
                    yield from self.weigh(slot, old, 0)
                yield from self.detach(slot, old, target)
            except Failed as exc:
                # Still in the router: never terminated so.
                kept = f"old instance {old.id} left in the router at weight 0: {exc.reason}"
        # Swap first, so a terminate that fails leaves a stray, not an instance to roll back.
        new, slot.extra = slot.extra, None
        slot.attached, slot.extra_attached = True, False
        slot.doubt = slot.extra_doubt = False
        slot.ready = True
        yield from self._set_live(slot, new)
        if kept:
            slot.strays += (old,)
            slot.reason = kept
        else:
            try:
                yield from self._terminate(slot, old, target)
            except Gone as exc:
                slot.reason = f"old instance {old.id} terminated, but {exc.reason}"
            except Failed as exc:
                slot.strays += (old,)
                slot.reason = f"old instance {old.id} left running out of traffic: {exc.reason}"
            except BaseException:
                # Cut short (a journal that refuses the terminate's record, the clean-up
                # deadline closing the program): the old instance may still run, out of traffic.
                slot.strays += (old,)
                raise
        slot.set_outcome(InstanceOutcome.UPDATED)
        machine.phase(slot, Phase.UPDATED, target)
        machine.record_success()

    def discard(self, slot: Slot) -> Program:
        """Roll the pair back: its old instance at full weight, the new one gone."""
        machine = self._m
        old = slot.old_version
        machine.phase(slot, Phase.REVERTING, old)
        if self.weighted and slot.live is not None and slot.attached:
            try:
                yield from self.weigh(slot, slot.live, FULL_WEIGHT)
            except Failed as exc:
                slot.reason = exc.reason
        if not self.weighted and not slot.attached and slot.live is not None:
            try:
                yield from self.attach(slot, slot.live, old)
            except Failed as exc:
                slot.reason = exc.reason
        strays = len(slot.strays)
        yield from self._drop_quietly(slot, old)
        failed = len(slot.strays) > strays or not slot.attached
        if failed:
            slot.set_outcome(InstanceOutcome.REVERT_FAILED)
            machine.phase(slot, Phase.REVERT_FAILED, old, slot.reason)
        elif slot.outcome is not InstanceOutcome.FAILED:
            slot.set_outcome(InstanceOutcome.REVERTED)
            slot.reason = ""
            machine.phase(slot, Phase.REVERTED, old)

"""Paired passes: a new set beside the old one (``Canary``, ``BlueGreen``).

Part of the machine (:mod:`rolling._machine`), sans-io like it; the programs of
one pair are in :mod:`rolling._paired_units`. Rules, in the order a rollout
meets them:

1. **Pairs.** The instances to update go in ``order`` (already-unhealthy
   ones first); each one's new instance is launched beside it (its *pair*),
   so the old set keeps its size and keeps serving until traffic moves. New
   instances are ready, and with a weighted router in it at weight 0, before
   any traffic reaches them. Pairs are staged side by side (``Together``). A
   pair that fails its attempts counts against the failure budget; its old
   instance stays as it was.
2. **Canary steps** run in order. ``SetWeight(p)`` first grows (or shrinks)
   the canary set to its scale, the weight's share of the fleet rounded up,
   at least one while ``p > 0``, unless ``SetCanaryScale`` fixed it; then
   every instance's weight is set (:mod:`rolling._weights`), the side that
   gains traffic first. The availability floor holds on what gets traffic: a
   canary set smaller than the floor never takes every request (at 100 % the
   stable set keeps weight 1). ``Pause``, ``Gate``, ``Analyze`` and ``SetFlag`` are
   held as in any strategy (:mod:`rolling._holds`); a pause holds before the
   next step. ``promote(full=True)`` skips to the promotion.
3. **Promotion.** All at once (``Canary(promotion=None)``, and
   ``BlueGreen``): the rest of the new set is staged, then every pair is
   switched (new instance up, then old one down), and the old set is kept
   ``scale_down_delay`` seconds (``BlueGreen`` measures ``post_promotion``
   meanwhile) before it is retired. Through a window
   (``Canary(promotion=RollingUpdate(...))``): every instance goes to full
   weight, the canaries take their pairs' places, and the rest of the fleet
   is replaced by the forward pass of :mod:`rolling._passes` in that window.
4. **Blue-green** stages ``preview_replicas`` pairs first, measures
   ``pre_promotion``, waits for a promote unless ``auto_promote``, stages the
   rest, then switches as in rule 3.
5. **Rollback** (a trigger's ``revert``): every old instance goes back to full
   weight (or is attached again, then the new one detached), then the new
   instances are drained and terminated; what a window promotion already
   replaced is reverted by the rollback pass of :mod:`rolling._passes`. After
   the old set is retired there is nothing to switch back to. A ``halt``
   leaves both sets as they are; new instances left are reported as strays.
6. **Failed traffic calls.** A ``set_weight``, attach or detach that fails while
   traffic moves is a trigger, handled by the rollback policy.
7. **Resume.** With a journal, each canary step that ends is recorded, and
   so is each of blue-green's holds (0: ``pre_promotion``, 1: the wait for a
   promote, 2: ``post_promotion``). A resumed canary (whose new instances
   the resume removed) goes on after the last recorded step: the steps
   before it that move traffic or set a flag run again, in order, to rebuild
   the canary set and its share; the pauses, gates and analyses before it
   are not held again. A resumed blue-green stages its new set again and
   holds only where it had not got past: an approval given is not asked
   again. After a full promote (:mod:`rolling._holds`, rule 4) either goes
   straight to its promotion.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING, Any

from ._effects import IDLE, Failed, Together, WaitStep
from ._holds import Holds
from ._passes import Pass, Passes, Start
from ._plan import pair_order
from ._policies import RollbackMode
from ._result import InstanceOutcome, RolloutStatus
from ._settings import Settings
from ._slot import Slot
from ._steps import Analyze, Pause, SetCanaryScale, SetWeight
from ._strategy import BlueGreen, Canary
from ._validate import percent_of
from ._weights import canary_weights, share
from .events import (
    Phase,
    RollbackStarted,
    StepFinished,
    StepStarted,
    TrafficShifted,
)
from .typing import FULL_WEIGHT

if TYPE_CHECKING:
    from ._machine import Machine
    from ._paired_units import PairedUnits

__all__ = ["Paired"]

Program = Generator[Any, Any, Any]


def _guarded(program: Program) -> Generator[Any, Any, str]:
    """Run ``program``; answer "" or the reason a call in it failed."""
    try:
        yield from program
    except Failed as exc:
        return exc.reason
    return ""


class Paired:
    """The passes of a machine whose strategy pairs new instances with old ones."""

    def __init__(
        self, machine: Machine, settings: Settings, units: PairedUnits, holds: Holds
    ) -> None:
        self._m = machine
        self._s = settings
        self._units = units
        self._holds = holds
        self._inner = Passes(machine, settings, units, holds)
        self._switched: set[Slot] = set()
        self._new_side: list[tuple[Slot, Any]] = []
        self._percent = 0.0
        self._percent_before = 0.0
        self._scale_step: SetCanaryScale | None = None

    # ---------------------------------------- the machine's view of a pass

    def pause(self, *, paused: bool) -> None:
        """Hold (or release) starts; the paired program checks between steps."""
        self._inner.pause(paused=paused)

    def stop(self) -> None:
        """Start nothing more."""
        self._inner.stop()

    def count_failure(self, batch: int | None) -> tuple[int, int]:
        """Count a failure in ``batch`` (of a window promotion's pass)."""
        return self._inner.count_failure(batch)

    def unstart(self, start: Start) -> None:
        """A unit of a window promotion will not run after all."""
        self._inner.unstart(start)

    def go_on(self, start: Start) -> bool:
        """Whether a unit of a window promotion may still start."""
        return self._inner.go_on(start)

    def successors(self, run: Pass) -> list[Start]:
        """The units of a window promotion that may start now."""
        return self._inner.successors(run)

    # ------------------------------------------------------------ forward

    def forward(self, desired: int) -> Program:
        """Stage, shift, switch and retire (rules 1 to 4)."""
        machine = self._m
        settings = self._s
        todo, skipped = pair_order(settings, machine.slots)
        started = yield from self._inner.begin(todo, skipped, settings.bounds(desired))
        if not started:
            return
        # Instances already on the target serve on the new side from the first weight on.
        self._new_side = [(s, s.live) for s in skipped if s.live is not None and s.attached]
        if not todo or self._stopping():
            return
        strategy = settings.strategy
        if isinstance(strategy, Canary):
            yield from self._canary(strategy, todo, desired)
        elif isinstance(strategy, BlueGreen):
            yield from self._blue_green(strategy, todo)

    def _canary(self, strategy: Canary, todo: list[Slot], desired: int) -> Program:
        canaries: list[Slot] = []
        fresh = list(todo)  # pairs not staged yet, in order
        if not (yield from self._canary_steps(canaries, fresh, todo, desired)):
            return
        yield from self._unpaused()
        if self._stopping():
            return
        if strategy.promotion is None:
            yield from self._all_at_once(canaries, fresh, todo, strategy.scale_down_delay, None)
            return
        # Through a window: everyone at full weight, the canaries take their pairs' places.
        yield from self._weigh(canaries, todo, None, "promote")
        if self._stopping():
            return
        yield from self._together([(s, self._units.retire(s)) for s in canaries])
        if not self._stopping():
            yield from self._inner.forward(desired, promotion=True)
            # Everyone serves at full weight now: the new set's share is its head count's.
            serving = [s.live for s in self._m.slots if s.serving]
            new = sum(1 for live in serving if live.version == self._s.target)
            self._m.traffic = share(new, 1, len(serving) - new, 1)

    def _canary_steps(
        self, canaries: list[Slot], fresh: list[Slot], todo: list[Slot], desired: int
    ) -> Generator[Any, Any, bool]:
        """Rules 2 and 7: the steps in order; False once the rollout stops."""
        holds = self._holds
        for index, step in enumerate(self._s.steps):
            if holds.passed_before(index, step):
                continue  # held by the controller before this one
            yield from self._unpaused()
            if self._stopping():
                return False
            if self._holds.promoted_fully:
                yield from self._holds.record_full_promote()
                break
            if isinstance(step, SetWeight | SetCanaryScale):
                yield from self._canary_step(
                    index, step, canaries=canaries, fresh=fresh, todo=todo, desired=desired
                )
            else:
                yield from holds.run(index, step)
            yield from holds.record_step(index)
        return True

    def _canary_step(
        self,
        index: int,
        step: SetWeight | SetCanaryScale,
        *,
        canaries: list[Slot],
        fresh: list[Slot],
        todo: list[Slot],
        desired: int,
    ) -> Program:
        """Rule 2: scale the canary set, then set the weights."""
        machine = self._m
        machine.emit(StepStarted, index=index, step=step)
        if isinstance(step, SetWeight):
            self._percent = float(step.percent)
        else:
            self._scale_step = None if step.match_traffic_weight else step
        wanted = _canary_count(self._percent, self._scale_step, desired, len(canaries) + len(fresh))
        if wanted < len(canaries):
            # Shrinking: the share moves to those that stay before the others leave, so the
            # stable side is back in traffic before a canary goes to 0.
            yield from self._weigh(canaries[:wanted], todo, self._percent, "step")
            if self._stopping():
                return
            yield from self._scale(canaries, fresh, wanted)
        else:
            yield from self._scale(canaries, fresh, wanted)
            if self._stopping():
                return
            yield from self._weigh(canaries, todo, self._percent, "step")
        machine.progressed()
        machine.emit(StepFinished, index=index, step=step, promoted=False)

    def _blue_green(self, strategy: BlueGreen, todo: list[Slot]) -> Program:
        preview = strategy.preview(len(todo))
        pairs = yield from self._stage(todo[:preview])
        if self._stopping():
            return
        if strategy.pre_promotion is not None:
            yield from self._held(0, Analyze(strategy.pre_promotion))
        if not strategy.auto_promote and not self._stopping():
            yield from self._held(1, Pause(strategy.auto_promote_after))
        yield from self._unpaused()
        if self._stopping():
            return
        yield from self._all_at_once(
            pairs, todo[preview:], todo, strategy.scale_down_delay, strategy.post_promotion
        )

    def _held(self, index: int, step: Pause | Analyze) -> Program:
        """Rule 7 for blue-green: hold at its ``index``-th hold unless a resume says it ended."""
        holds = self._holds
        if holds.passed_before(index, step):
            return
        yield from holds.run(index, step)
        yield from holds.record_full_promote()
        yield from holds.record_step(index)

    def _all_at_once(
        self,
        pairs: list[Slot],
        fresh: list[Slot],
        todo: list[Slot],
        delay: float,
        post: Any,
    ) -> Program:
        """Rule 3: stage the rest, switch every pair, keep the old set, retire it."""
        machine = self._m
        pairs = pairs + (yield from self._stage(fresh))
        if self._stopping() or not pairs:
            return
        reasons = yield Together([_guarded(self._units.switch(s)) for s in pairs], pairs)
        self._switched.update(pairs)
        if self._units.weighted:
            # Old instances with no pair of their own (failed ones) keep serving at full weight.
            others = [s for s in todo if s not in self._switched and s.live is not None]
            full = [(s, s.live) for s in others] + self._new_side
            reasons += yield Together(
                [_guarded(self._units.weigh(s, i, FULL_WEIGHT)) for s, i in full],
                [s for s, _ in full],
            )
        if self._failed_traffic(reasons, "switching to the new set"):
            return
        self._shifted(100.0, 100.0, (len(pairs), FULL_WEIGHT, 0), "switch")
        started = machine.now
        if post is not None:
            yield from self._held(2, Analyze(post))
            if self._stopping():
                return
        # The old set is kept the whole delay: only a stop ends it early. A promote is no
        # reason to (promote(full=True) skips pauses and gates, and this is neither), so a
        # wait it cut short goes on for what is left.
        left = delay - (machine.now - started)
        while left > 0 and not self._stopping():
            if not (yield WaitStep(left)):
                break  # its time passed
            left = delay - (machine.now - started)
        if self._stopping():
            return
        yield from self._together([(s, self._units.retire(s)) for s in pairs])
        self._switched.clear()

    # ------------------------------------------------------------- pieces

    def _stopping(self) -> bool:
        """Whether a trigger fired (a call, so a type checker does not narrow across a yield)."""
        return self._m.stopping

    def _unpaused(self) -> Program:
        """A pause holds the paired program between steps."""
        machine = self._m
        while machine.paused and not self._stopping():
            machine.set_status(RolloutStatus.PAUSED)  # a pause asked before the run began
            yield IDLE

    def _stage(self, slots: Sequence[Slot]) -> Generator[Any, Any, list[Slot]]:
        """Stage ``slots`` side by side; the ones whose new instance is ready.

        At most twice the fleet exists at once: a pair with no room fails.
        """
        machine = self._m
        room = 2 * len(machine.slots) - sum(s.existing for s in machine.slots)
        for slot in slots[max(room, 0) :]:
            # Strays (instances that could not be terminated) hold the room a pair needs.
            slot.set_outcome(InstanceOutcome.FAILED)
            slot.reason = "no room to launch: instances that could not be terminated hold it"
            machine.phase(slot, Phase.FAILED, self._s.target, slot.reason)
            machine.record_failure(slot)
        slots = slots[: max(room, 0)]
        if not slots:
            return []
        answers = yield Together([self._units.stage(s) for s in slots], slots)
        return [s for s, ok in zip(slots, answers, strict=True) if ok]

    def _scale(self, canaries: list[Slot], fresh: list[Slot], wanted: int) -> Program:
        """Grow or shrink the canary set to ``wanted`` pairs."""
        while len(canaries) < wanted and fresh and not self._stopping():
            batch = fresh[: wanted - len(canaries)]
            del fresh[: len(batch)]
            canaries += yield from self._stage(batch)
        if len(canaries) > wanted:
            extra = canaries[wanted:]
            del canaries[wanted:]
            yield from self._together([(s, self._units.unstage(s)) for s in extra])
            # Back in line, even one whose canary was left as a stray: the room check of
            # the next stage counts strays, and the pair must still reach the target.
            fresh[:0] = [s for s in extra if s.extra is None]

    def _weigh(
        self, canaries: list[Slot], todo: list[Slot], percent: float | None, why: str
    ) -> Program:
        """Set every weight for ``percent`` (None: everyone at full weight)."""
        units = self._units
        new = [(s, s.extra) for s in canaries] + self._new_side
        old = [(s, s.live) for s in todo if s.live is not None and s.attached]
        if percent is None:
            new_weight = old_weight = FULL_WEIGHT
            gaining_new = True
        else:
            # The availability floor holds on what gets traffic: a canary set smaller than
            # the floor never takes every request from the stable set.
            floor = self._s.bounds(len(self._m.slots)).floor
            new_weight, old_weight = canary_weights(
                percent, len(new), len(old), keep_stable=len(new) < floor
            )
            gaining_new = percent >= self._percent_before
        self._percent_before = percent if percent is not None else 100.0
        first, second = (new, old) if gaining_new else (old, new)
        weight_first, weight_second = (
            (new_weight, old_weight) if gaining_new else (old_weight, new_weight)
        )
        reasons = yield Together(
            [_guarded(units.weigh(s, i, weight_first)) for s, i in first], [s for s, _ in first]
        )
        if self._failed_traffic(reasons, "setting weights"):
            return
        reasons = yield Together(
            [_guarded(units.weigh(s, i, weight_second)) for s, i in second],
            [s for s, _ in second],
        )
        if self._failed_traffic(reasons, "setting weights"):
            return
        if percent is None:
            achieved = share(len(new), 1, len(old), 1)
            self._shifted(achieved, achieved, (len(new), new_weight, old_weight), why)
        else:
            achieved = share(len(new), new_weight, len(old), old_weight)
            self._shifted(percent, achieved, (len(new), new_weight, old_weight), why)

    def _shifted(
        self, percent: float, achieved: float, weights: tuple[int, int, int], why: str
    ) -> None:
        new_instances, new_weight, old_weight = weights
        self._m.traffic = achieved
        if achieved > 0 and self._s.analysis is not None:
            self._m.analyses.start_background()  # the new set is in traffic
        self._m.emit(
            TrafficShifted,
            percent=percent,
            achieved=achieved,
            new_instances=new_instances,
            new_weight=new_weight,
            old_weight=old_weight,
            reason=why,
        )

    def _failed_traffic(self, reasons: list[str], doing: str) -> bool:
        """Rule 6: a failed traffic call is a trigger."""
        failed = [r for r in reasons if r]
        if failed:
            self._m.policy_trigger(f"{doing} failed: {failed[0]}")
        return bool(failed)

    def _together(self, work: list[tuple[Slot, Program]]) -> Program:
        """Run each slot's program side by side."""
        if work:
            yield Together([p for _, p in work], [s for s, _ in work])

    # ------------------------------------------------------------ rollback

    def revert(self, desired: int) -> Program:
        """Rule 5: old set back to full traffic, new instances gone, the rest reverted."""
        machine = self._m
        units = self._units
        pairs = [s for s in machine.slots if s.extra is not None]
        replaced = [s for s in machine.slots if s.outcome is InstanceOutcome.UPDATED]
        machine.emit(
            RollbackStarted,
            reason=machine.stop_reason,
            mode=str(RollbackMode.REVERT),
            instance_ids=tuple(s.key for s in pairs + replaced),
        )
        if units.weighted:
            serving = [s for s in machine.slots if s.live is not None and s.attached]
            old = [(s, s.live) for s in serving if s.live.version != self._s.target]
            new = self._new_side + [(s, s.live) for s in replaced if s.attached]
            yield from self._together(
                [(s, _guarded(units.weigh(s, i, FULL_WEIGHT))) for s, i in old + new]
            )
        else:
            yield from self._together(
                [(s, _guarded(units.switch_back(s))) for s in pairs if s in self._switched]
            )
        self._switched.clear()
        yield from self._together([(s, units.discard(s)) for s in pairs])
        if machine.traffic is not None:
            machine.traffic = 0.0  # the new instances are gone: the old set has it all
        if replaced:
            yield from self._inner.revert(desired, announce=False)


def _canary_count(
    percent: float, scale: SetCanaryScale | None, desired: int, available: int
) -> int:
    """How many canaries a weight (or an explicit scale) asks for, at most ``available``."""
    if scale is not None and scale.replicas is not None:
        replicas = scale.replicas
        wanted = (
            replicas
            if isinstance(replicas, int)
            else math.ceil(percent_of(replicas) * desired / 100)
        )
    else:
        wanted = math.ceil(percent * desired / 100)
        if percent > 0:
            wanted = max(wanted, 1)
    return min(wanted, available)

"""Passes: the forward pass and the rollback, driven through the ledger.

Part of the machine (:mod:`rolling._machine`), sans-io like it:

1. A pass plans its units (:mod:`rolling._plan`) and opens a ledger
   (:mod:`rolling._ledger`) on the fleet as it stands: the forward pass on
   what served at the start, the rollback on what serves now.
2. The main program starts what the ledger allows (``Spawn``), runs the steps
   at each barrier (:mod:`rolling._holds`), and waits (``IDLE``) otherwise; a
   unit that ends hands the next units to its own task.
3. A lockstep batch opens with its first unit, after its ``before_batch``
   hook; its barrier runs ``after_batch``. A hook that raises is a trigger.
   A batch that started has a ``BatchFinished`` once its units settle, also
   when a trigger stopped the pass before its barrier.
4. A ledger that can start nothing while nothing runs is *stuck*: a trigger in
   the forward pass; in the rollback, what is left is reported REVERT_FAILED.
5. The rollback goes newest first, but what is out of traffic goes before all
   of it: it costs no availability, and a full window could never reach it.
6. A step held at a barrier is announced with its position in the rollout's
   steps; a pause between batches with the number of the batch before it.
   An ``Advance`` is a target the pass reaches, not a step that runs: it has
   no events of its own.
7. A journaled run records each of its steps (not the pauses between
   batches) that ends as a ``step`` record, as a canary does. A resumed run
   does not hold again at a ``Pause``, ``Gate`` or ``Analyze`` the dead
   controller got past, and makes no events for it: an operator who promoted
   a pause is not asked again. ``Advance`` targets are counted afresh
   (:mod:`rolling._plan`, rule 4), and a pause between batches is held after
   each batch of the resumed run's own plan.
"""

from __future__ import annotations

import collections
from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from ._effects import IDLE, Failed, Spawn
from ._holds import Holds
from ._ledger import Barrier, Ledger
from ._ledger import Start as LedgerStart
from ._plan import Plan, plan_forward, plan_rollback
from ._policies import RollbackMode
from ._result import InstanceOutcome, RolloutStatus
from ._settings import Settings
from ._slot import Slot, needs_revert
from ._strategy import ResolvedWindow
from ._unit import UnitPrograms
from .events import (
    BatchFinished,
    BatchStarted,
    Phase,
    RollbackStarted,
    RolloutStarted,
    WaveStarted,
)

if TYPE_CHECKING:
    from ._machine import Machine

_WAKE = 1
"""The machine's WAKE signal (the machine imports this module, so it is repeated here)."""

__all__ = ["Pass", "Passes", "Start"]

Program = Generator[Any, Any, Any]


@attrs.define(eq=False)
class Pass:
    """One pass over the fleet (forward or rollback) and its ledger."""

    plan: Plan
    ledger: Ledger
    version: str | None
    """The version units go to; None means each unit's own old version (a rollback)."""
    rolling_back: bool


@attrs.define(eq=False)
class Start:
    """A unit the ledger let start: which slot, how, in which pass."""

    slot: Slot
    reserved: LedgerStart
    run: Pass


class Passes:
    """The passes of one machine."""

    def __init__(
        self, machine: Machine, settings: Settings, units: UnitPrograms, holds: Holds
    ) -> None:
        self._m = machine
        self._s = settings
        self._units = units
        self._holds = holds
        self._pass: Pass | None = None
        self._batch_failed: collections.Counter[int] = collections.Counter()
        self._batch_size: dict[int, int] = {}
        self._batch_open: int | None = None

    def pause(self, *, paused: bool) -> None:
        """Hold (or release) the running pass's starts."""
        if self._pass is not None:
            self._pass.ledger.paused = paused

    def stop(self) -> None:
        """Start nothing more in the running pass."""
        if self._pass is not None:
            self._pass.ledger.stop()

    def count_failure(self, batch: int | None) -> tuple[int, int]:
        """Count a failure in ``batch``; return the batch's failures and size (0, 0 for none)."""
        if batch is None:
            return 0, 0
        self._batch_failed[batch] += 1
        return self._batch_failed[batch], self._batch_size[batch]

    def _ledger(self, units: list[Slot], plan: Plan, desired: int, *, serving: int) -> Ledger:
        settings = self._s
        window = settings.window(desired)
        return Ledger(
            serving_at_start=[s.serving_at_start for s in units],
            absent=[s.live is None for s in units],
            lockstep=settings.lockstep,
            floor=window.floor,
            ceiling=window.ceiling,
            serving=serving,
            existing=sum(s.existing for s in self._m.slots),
            cap=window.max_unavailable + window.max_surge,
            surge=settings.surge_enabled,
            in_place=settings.can_replace,
            barriers=plan.barriers,
        )

    def forward(self, desired: int, *, promotion: bool = False) -> Program:
        """The forward pass over a fleet of ``desired`` instances.

        With ``promotion``, it is the rest of a canary's fleet replaced through a
        window (:mod:`rolling._paired`): already announced, and with no steps.
        """
        machine = self._m
        settings = self._s
        plan = plan_forward(settings, machine.slots, desired, steps=not promotion)
        if promotion:
            yield from self._run_forward(plan, desired)
            return
        for first, end in plan.groups.batches:
            self._batch_size[len(self._batch_size)] = end - first
        started = yield from self.begin(plan.units, plan.skipped, settings.window(desired))
        if started:
            yield from self._run_forward(plan, desired)

    def begin(
        self, units: Sequence[Slot], skipped: Sequence[Slot], window: ResolvedWindow
    ) -> Generator[Any, Any, bool]:
        """Announce the start, mark the skipped, run ``before_rollout``; False if it failed."""
        machine = self._m
        settings = self._s
        machine.emit(
            RolloutStarted,
            target=settings.target,
            desired=window.desired,
            to_update=tuple(s.key for s in units),
            skipped=tuple(s.key for s in skipped),
            unhealthy=tuple(s.key for s in machine.slots if not s.serving_at_start and not s.lost),
            max_unavailable=window.max_unavailable,
            max_surge=window.max_surge,
        )
        # After RolloutStarted, which names them: it is the rollout's first event.
        for slot in skipped:
            slot.set_outcome(InstanceOutcome.SKIPPED)
            machine.phase(slot, Phase.SKIPPED, settings.target)
        if "before_rollout" in settings.hooks:
            try:
                yield from self._units.hook(
                    "before_rollout", settings.target, [s.live for s in machine.slots]
                )
            except Failed as exc:
                machine.trigger(exc.reason, RollbackMode.HALT, RolloutStatus.HALTED)
                return False
        return True

    def _run_forward(self, plan: Plan, desired: int) -> Program:
        machine = self._m
        settings = self._s
        if not plan.units and not plan.barriers:
            return
        ledger = self._ledger(
            plan.units, plan, desired, serving=sum(1 for s in machine.slots if s.serving_at_start)
        )
        ledger.paused = machine.paused
        if machine.stopping:
            # A trigger (abort, a failed hook) came before there was a ledger.
            ledger.stop()
        yield from self._drive(Pass(plan, ledger, settings.target, rolling_back=False))
        if self._batch_open is not None:
            # Stopped before its barrier: the batch still ended, once its units settled.
            self._batch_finished(self._batch_open)

    def revert(self, desired: int, *, announce: bool = True) -> Program:
        """The rollback pass: every changed instance back, newest first."""
        machine = self._m
        todo = [s for s in machine.slots if needs_revert(s)]
        todo.sort(key=lambda s: s.changed_seq, reverse=True)
        # Newest first, but what is already out of traffic goes before all of it: it costs
        # no availability, and a window that is full could otherwise never reach it.
        todo.sort(key=lambda s: s.serving)
        if announce:
            machine.emit(
                RollbackStarted,
                reason=machine.stop_reason,
                mode=str(RollbackMode.REVERT),
                instance_ids=tuple(s.key for s in todo),
            )
        if not todo:
            return
        for slot in todo:
            slot.serving_at_start = slot.serving
        plan = plan_rollback(self._s, todo, desired)
        ledger = self._ledger(
            todo, plan, desired, serving=sum(1 for s in machine.slots if s.serving)
        )
        yield from self._drive(Pass(plan, ledger, None, rolling_back=True))

    # ------------------------------------------------------------ driving

    def _drive(self, run: Pass) -> Program:
        """Run the ledger's decisions until the pass is done."""
        self._pass = run
        ledger = run.ledger
        while True:
            poll = ledger.poll()
            if poll.starts:
                starts = self._open(run, poll.starts)
                # A lockstep batch opens with its first unit, and its hook runs first.
                batch = run.plan.groups.opens_batch(poll.starts[0].index)
                if batch is not None and starts:
                    yield from self._batch_start(run, batch)
                    if ledger.stopping:
                        for start in starts:
                            self.unstart(start)
                        continue
                if starts:
                    yield Spawn(starts)
                continue
            if poll.barrier is not None:
                yield from self._barrier(run, poll.barrier)
                ledger.pass_barrier()
                continue
            if poll.done:
                return
            if poll.stuck:
                self._stuck(run)
                continue
            yield IDLE

    def _open(self, run: Pass, starts: Sequence[LedgerStart]) -> list[Start]:
        """Turn the ledger's starts into units, announcing the waves they open."""
        plan = run.plan
        units = plan.units
        groups = plan.groups
        result: list[Start] = []
        for start in starts:
            slot = units[start.index]
            wave = groups.opens_wave(start.index) if start.index == groups.next_wave_at else None
            if wave is not None:
                first, end = groups.waves[wave]
                key = plan.wave_keys[wave] if plan.wave_keys else None
                ids = tuple(u.key for u in units[first:end])
                self._m.emit(WaveStarted, index=wave, key=key, instance_ids=ids)
            result.append(Start(slot, start, run))
        return result

    def unstart(self, start: Start) -> None:
        """A unit that was allowed to start will not run after all (stopped, cancelled)."""
        start.run.ledger.unstart(start.reserved, serving_at_start=start.slot.serving_at_start)
        self._m.signal(_WAKE)

    def go_on(self, start: Start) -> bool:
        """Whether a unit handed to a finishing task may still start; if not, undo it."""
        if start.run.ledger.stopping:
            self.unstart(start)
            return False
        return True

    def successors(self, run: Pass) -> list[Start]:
        """After a unit ends: the units that may start now (the finishing task runs the first).

        What only the main program may do (reach a barrier, finish, handle a stuck
        ledger, open a lockstep batch, whose hook runs first) wakes it instead.
        """
        starts = run.ledger.window_starts()
        if not starts:
            self._m.signal(_WAKE)
            return []
        return self._open(run, starts)

    def _stuck(self, run: Pass) -> None:
        machine = self._m
        ledger = run.ledger
        reason = (
            f"stuck: {ledger.serving} instances serve and the floor is {ledger.floor}, so no more"
            " can be taken out (instances failed out of traffic or were unhealthy from the start)"
        )
        if run.rolling_back:
            for slot in run.plan.units[ledger.cursor :]:
                slot.set_outcome(InstanceOutcome.REVERT_FAILED)
                slot.reason = reason
                machine.phase(slot, Phase.REVERT_FAILED, slot.old_version, reason)
            ledger.stop()
        else:
            machine.policy_trigger(reason)

    def _batch_start(self, run: Pass, index: int) -> Program:
        machine = self._m
        first, end = run.plan.groups.batches[index]
        members = run.plan.units[first:end]
        self._m.emit(BatchStarted, index=index, instance_ids=tuple(s.key for s in members))
        self._batch_open = index
        if "before_batch" in self._s.hooks:
            try:
                yield from self._units.hook("before_batch", index, [s.live for s in members])
            except Failed as exc:
                machine.policy_trigger(exc.reason)

    def _barrier(self, run: Pass, barrier: Barrier) -> Program:
        machine = self._m
        if barrier.batch is not None:
            first, end = run.plan.groups.batches[barrier.batch]
            self._batch_finished(barrier.batch)
            if "after_batch" in self._s.hooks:
                lives = [s.live for s in run.plan.units[first:end]]
                try:
                    yield from self._units.hook("after_batch", barrier.batch, lives)
                except Failed as exc:
                    machine.policy_trigger(exc.reason)
                    return
        if barrier.between is not None and barrier.batch is not None and not machine.stopping:
            yield from self._holds.run(barrier.batch, barrier.between)
            yield from self._holds.record_full_promote()
        holds = self._holds
        for index, step in zip(barrier.indexes, barrier.steps, strict=True):
            if machine.stopping:
                return
            if holds.passed_before(index, step):
                continue  # rule 7: held by the controller before this one
            yield from holds.run(index, step)
            yield from holds.record_full_promote()
            yield from holds.record_step(index)

    def _batch_finished(self, index: int) -> None:
        self._batch_open = None
        self._m.emit(BatchFinished, index=index, failed=self._batch_failed[index])

"""The rollout machine: every decision of a rollout, and no I/O.

The machine is sans-io in the manner of h11: it never awaits, never reads a
clock and never calls a driver. Its programs are plain generators that yield
effects (:mod:`rolling._effects`) and receive what came of them; the runner
(:mod:`rolling._runner`) carries the effects out and tells the machine the time
with :meth:`Machine.clock`. Every count, outcome and status is set here.

Rules, in the order a rollout meets them:

1. **Start.** With a journal, an unfinished rollout to the same target is
   resumed (:mod:`rolling._recovery`). The fleet is listed; duplicate ids are
   an error and every check that needs the fleet's size
   (:func:`rolling._settings.check_fleet`) runs before any probe or change.
   Instances are surveyed with one probe each; those that fail serve nothing.
2. **Plan** (:mod:`rolling._plan`): skipped instances, waves, batches,
   barriers and the steps held at them.
3. **Ledger** (:mod:`rolling._ledger`): a unit starts only when the ledger
   reserves availability (or, with surge, capacity) for it; when it ends the
   machine settles the reservation from what the unit left serving and
   existing. Nobody else changes a count.
4. **Unit** (:mod:`rolling._unit`): in place ``detach, replace, ready,
   attach``; elastic ``launch, ready, attach new, detach old, terminate old``
   (or take out first without surge). A driver's answer is checked: ``replace``
   must keep the id, and ``replace``/``launch`` must return the asked version,
   else the attempt fails. Failed attempts are retried with back-off; a unit
   that runs out of attempts fails, is counted against the budget and is put
   back on its old version and in traffic (``restore_failed``).
5. **Budget.** A failure past ``max_failed``, past ``max_failed_per_batch``
   in its batch, or the ``circuit_breaker``-th in a row is a *trigger*.
   So are a gate that fails, a batch hook that raises, a stuck ledger, the
   progress deadline (per its action) and ``abort()``.
6. **Trigger.** The first one wins: nothing new starts, waits are
   interrupted, in-flight units settle (a surge instance not in traffic is
   terminated; an instance out of traffic is put back when healthy, unless the
   rollback will handle it). Then ``revert`` rolls every changed instance back,
   newest first, out-of-traffic ones before all, under the same window; ``halt``
   stops. During a rollback only a halt (``abort(rollback=False)``) stops it.
7. **Steps** run at their barrier: a ``Pause`` until its time or a promote;
   a ``Gate`` until it answers, a promote, or a stop. ``promote(full=True)``
   skips every step left.
8. **End.** A trigger's status, else DEGRADED when an instance failed, else
   SUCCEEDED. A cancelled run ends CANCELLED, an error HALTED; both after
   in-flight units settled.
"""

from __future__ import annotations

import collections
import random
from collections.abc import Generator, Sequence
from typing import Any

import attrs

from ._effects import (
    IDLE,
    Failed,
    ListInstances,
    LoadJournal,
    Record,
    Spawn,
    Survey,
)
from ._errors import RollingError
from ._holds import Holds
from ._journal import begin_record
from ._ledger import Barrier, Ledger, Mode
from ._ledger import Start as LedgerStart
from ._plan import Plan, plan_forward, plan_rollback
from ._policies import DeadlineAction, RollbackMode
from ._recovery import Recovered, reconcile, recover
from ._result import InstanceOutcome, RolloutResult, RolloutStatus
from ._settings import Settings, check_fleet
from ._slot import Slot, changed, instance_result, needs_revert
from ._steps import Step
from ._unit import UnitPrograms
from .events import (
    BatchFinished,
    BatchStarted,
    ControlRequested,
    Event,
    InstancePhaseChanged,
    Phase,
    ProgressDeadlineExceeded,
    RollbackStarted,
    RolloutFinished,
    RolloutStarted,
    StatusChanged,
    WaveStarted,
)

__all__ = ["INTERRUPT", "STEP", "WAKE", "Machine", "Program", "Start"]

Program = Generator[Any, Any, Any]
"""A machine program: yields effects, receives their results."""

WAKE = 1
"""Signal: the main program may have something to do."""
INTERRUPT = 2
"""Signal: interrupt every interruptible wait."""
STEP = 4
"""Signal: the running step should end (promote or stop)."""


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

    @property
    def mode(self) -> Mode:
        """How the unit replaces its instance."""
        return self.reserved.mode


class Machine:
    """Every decision of one rollout; see the module docstring for the rules."""

    def __init__(self, settings: Settings, *, listening: bool) -> None:
        self._s = settings
        self._listening = listening
        self._now = 0.0
        self._wall_offset = 0.0
        self._events: list[Event] = []
        self._signals = 0
        self.status = RolloutStatus.PENDING
        self.result: RolloutResult | None = None
        self.slots: list[Slot] = []
        self._tally: dict[InstanceOutcome, int] = {}
        self._busy: set[Slot] = set()
        self._paused = False
        self._holds = Holds(self)
        self.stop_reason = ""
        self._stop_mode: RollbackMode | None = None
        self._stop_status: RolloutStatus | None = None
        self._pass: Pass | None = None
        self._rolling_back = False
        self._started_at = 0.0
        self._progress_at = 0.0
        self._seq = 0
        self._failed = 0
        self._consecutive = 0
        self._batch_failed: collections.Counter[int] = collections.Counter()
        self._batch_size: dict[int, int] = {}
        self._desired = 0
        self._budget = 0
        self._recovered: Recovered | None = None
        self._doomed: tuple[Any, ...] = ()
        self._units = UnitPrograms(self, settings, random.Random(settings.seed))

    # ---------------------------------------------------------- runner side

    def clock(self, now: float) -> None:
        """Tell the machine the event loop's time; call before resuming any program."""
        self._now = now

    def start(self, now: float, wall: float) -> None:
        """The run starts at loop time ``now``, wall time ``wall``."""
        self._now = self._started_at = self._progress_at = now
        self._wall_offset = wall - now
        self.set_status(RolloutStatus.RUNNING)

    def drain_events(self) -> list[Event]:
        """Events made since the last call, oldest first."""
        events, self._events = self._events, []
        return events

    def take_signals(self) -> int:
        """Signals raised since the last call (``WAKE | INTERRUPT | STEP``)."""
        signals, self._signals = self._signals, 0
        return signals

    @property
    def pending(self) -> bool:
        """Whether events or signals wait to be taken."""
        return bool(self._events) or self._signals != 0

    @property
    def listening(self) -> bool:
        """Whether events are made at all."""
        return self._listening

    def listen(self) -> None:
        """Someone subscribed: make events from now on."""
        self._listening = True

    @property
    def stopping(self) -> bool:
        """Whether a trigger fired and nothing more starts in the forward pass."""
        return self._stop_mode is not None

    @property
    def interruptible(self) -> bool:
        """Whether waits started now can be interrupted by a trigger."""
        return not (self._stop_mode is not None and not self._rolling_back)

    @property
    def rolling_back(self) -> bool:
        """Whether the rollback pass runs."""
        return self._rolling_back

    # ------------------------------------------------------------ events

    def emit(self, event_type: type[Event], **fields: Any) -> None:
        """Make an event, stamped with the machine's time."""
        if self._listening:
            now = self._now
            self._events.append(event_type(at=now, wall=now + self._wall_offset, **fields))

    def phase(
        self, slot: Slot, phase: Phase, version: str, reason: str = "", instance: Any = None
    ) -> None:
        """Announce that ``slot`` reached ``phase``."""
        if not self._listening:
            return
        live = instance
        if live is None:
            live = slot.extra if slot.extra is not None else slot.live
        self.emit(
            InstancePhaseChanged,
            instance_id=slot.key,
            phase=phase,
            version=version,
            attempt=max(1, slot.attempts),
            current_id=None if live is None else live.id,
            reason=reason,
            rollback=self._rolling_back,
        )

    def set_status(self, status: RolloutStatus) -> None:
        """Change the status, announcing it."""
        if status is not self.status:
            self.status = status
            self.emit(StatusChanged, status=status)

    # ----------------------------------------------------------- control

    def pause(self) -> None:
        """Start no new unit until :meth:`resume`."""
        self.emit(ControlRequested, action="pause")
        self._paused = True
        if self._pass is not None:
            self._pass.ledger.paused = True
        if self.status is RolloutStatus.RUNNING:
            self.set_status(RolloutStatus.PAUSED)

    def resume(self) -> None:
        """Undo :meth:`pause`."""
        self.emit(ControlRequested, action="resume")
        self._paused = False
        if self._pass is not None:
            self._pass.ledger.paused = False
        self._progress_at = self._now
        if self.status is RolloutStatus.PAUSED and self._holds.current is None:
            self.set_status(RolloutStatus.RUNNING)
        self._signals |= WAKE

    def promote(self, *, full: bool) -> bool:
        """End the running pause or gate (every one left with ``full``); False if none runs."""
        self.emit(ControlRequested, action="promote", detail=f"full={full}")
        if not self._holds.promote(full=full):
            return False
        self._signals |= STEP | WAKE
        return True

    def abort(self, *, rollback: bool) -> None:
        """Stop, and revert what changed unless ``rollback`` is false."""
        self.emit(ControlRequested, action="abort", detail=f"rollback={rollback}")
        if self._rolling_back:
            if not rollback:
                self.trigger("aborted during rollback", RollbackMode.HALT, RolloutStatus.ABORTED)
            return
        mode = RollbackMode.REVERT if rollback else RollbackMode.HALT
        self.trigger("aborted", mode, RolloutStatus.ABORTED)

    def fail(self, reason: str) -> None:
        """An error the rollout cannot go on after (an observer raised): halt at once."""
        self.trigger(reason, RollbackMode.HALT, RolloutStatus.HALTED)
        if self._rolling_back:
            self._stop_pass()

    def trigger(self, reason: str, mode: RollbackMode, status: RolloutStatus) -> None:
        """Stop starting work, interrupt waits, and remember what to do next."""
        if self._rolling_back:
            # Only a halt can stop a rollback; it is the last resort of abort(rollback=False).
            if mode is RollbackMode.HALT:
                self.stop_reason += f"; {reason}"
                self._stop_status = status
                self._stop_pass()
            return
        if self._stop_mode is not None:
            return
        self.stop_reason = reason
        self._stop_mode = mode
        self._stop_status = status
        self._stop_pass()

    def policy_trigger(self, reason: str) -> None:
        """A trigger handled by the rollback policy (revert or halt)."""
        mode = self._s.rollback
        status = RolloutStatus.ROLLED_BACK if mode is RollbackMode.REVERT else RolloutStatus.HALTED
        self.trigger(reason, mode, status)

    def _stop_pass(self) -> None:
        if self._pass is not None:
            self._pass.ledger.stop()
        self._signals |= INTERRUPT | STEP | WAKE

    def progress_due(self) -> float | None:
        """When the progress deadline passes, or None once it no longer applies."""
        deadline = self._s.progress_deadline
        if deadline is None or self._stop_mode is not None or self.result is not None:
            return None
        return self._progress_at + deadline.seconds

    def deadline_passed(self) -> None:
        """The watchdog woke at :meth:`progress_due`: act on the deadline."""
        deadline = self._s.progress_deadline
        if deadline is None or self._stop_mode is not None:
            return
        now = self._now
        if self._paused or self._holds.current is not None:
            # Waiting for an operator is not a lack of progress.
            self._progress_at = now
            return
        if now < self._progress_at + deadline.seconds:
            return
        self.emit(ProgressDeadlineExceeded, seconds=deadline.seconds, action=str(deadline.action))
        reason = f"no instance completed within the {deadline.seconds}s progress deadline"
        if deadline.action is DeadlineAction.REPORT:
            self._progress_at = now
        elif deadline.action is DeadlineAction.HALT:
            self.trigger(reason, RollbackMode.HALT, RolloutStatus.HALTED)
        else:
            self.policy_trigger(reason)

    def progressed(self) -> None:
        """An instance completed: the progress deadline starts again."""
        self._progress_at = self._now

    # --------------------------------------------------------- main program

    def main(self) -> Program:
        """The rollout from listing the fleet to the result."""
        settings = self._s
        recovered = None
        if settings.journaled:
            recovered = recover((yield LoadJournal()), target=settings.target)
        instances = list((yield ListInstances()))
        ids = collections.Counter(i.id for i in instances)
        if len(ids) != len(instances):
            duplicates = sorted(i for i, count in ids.items() if count > 1)
            msg = f"the driver listed duplicate instance ids {duplicates}; ids must be unique"
            raise RollingError(msg)
        check_fleet(settings.steps, len(instances) if recovered is None else len(recovered.fleet))
        if recovered is not None:
            yield from self._plan_resume(recovered, instances)
        else:
            healthy = (yield Survey(instances)) if settings.has_check else [True] * len(instances)
            for position, (instance, ok) in enumerate(zip(instances, healthy, strict=True)):
                self.slots.append(
                    Slot(
                        key=instance.id,
                        position=position,
                        old_version=instance.version,
                        live=instance,
                        serving_at_start=ok,
                        ready=ok,
                        tally=self._tally,
                    )
                )
            if settings.journaled:
                fleet = [(i.id, i.version) for i in instances]
                yield Record(begin_record(settings.target, fleet), sync=True)
        self._desired = len(self.slots)
        self._tally[InstanceOutcome.PENDING] = len(self.slots)
        self._budget = settings.failure.budget(self._desired)
        yield from self._resume()
        if self._stop_mode is None:
            yield from self._forward()
        if self._stop_mode is RollbackMode.REVERT:
            yield from self._revert()
        self.finish(self._final_status(), self.stop_reason)
        if settings.journaled:
            yield Record({"t": "end", "status": str(self.status)}, sync=True)

    def _plan_resume(self, recovered: Recovered, instances: Sequence[Any]) -> Program:
        """Rebuild the slots of an unfinished rollout from its journal and the live fleet."""
        matched = reconcile(recovered, instances)
        present = [i for i in (matched.live[key] for key, _ in recovered.fleet) if i is not None]
        answers = (yield Survey(present)) if self._s.has_check else [True] * len(present)
        healthy = dict(zip((i.id for i in present), answers, strict=True))
        for position, (key, old_version) in enumerate(recovered.fleet):
            instance = matched.live[key]
            attached = matched.attached[key]
            ok = instance is not None and healthy[instance.id]
            self.slots.append(
                Slot(
                    key=key,
                    position=position,
                    old_version=old_version,
                    live=instance,
                    serving_at_start=ok and attached,
                    ready=ok,
                    attached=attached,
                    tally=self._tally,
                )
            )
        self._recovered = recovered
        self._doomed = matched.doomed

    def _resume(self) -> Program:
        """Finish what a dead controller left half-done, before rolling on."""
        recovered = self._recovered
        if recovered is None:
            return
        units = self._units
        for stray in self._doomed:
            holder = Slot(
                key=stray.id, position=-1, old_version="", live=stray, serving_at_start=False
            )
            try:
                yield from units.call(holder, "terminate", stray, "", "driver.terminate", stray)
            except Failed as exc:
                msg = f"could not clean up {stray.id} before resuming: {exc.reason}"
                raise RollingError(msg) from None
        for slot in self.slots:
            live = slot.live
            if live is not None and not slot.attached and slot.ready:
                # Left out of traffic by the dead controller, and healthy: put it back.
                yield from units.attach(slot, live, live.version)
                slot.serving_at_start = True
            if live is not None and slot.attached and live.version == self._s.target:
                slot.outcome = (
                    InstanceOutcome.SKIPPED
                    if slot.old_version == self._s.target
                    else InstanceOutcome.UPDATED
                )
                self._seq += 1
                slot.changed_seq = self._seq
        if recovered.rolling_back:
            self.stop_reason = f"resumed rollback: {recovered.reason}"
            self._stop_mode = RollbackMode.REVERT
            aborted = recovered.reason.startswith("aborted")
            self._stop_status = RolloutStatus.ABORTED if aborted else RolloutStatus.ROLLED_BACK
            for slot in self.slots:
                if slot.outcome is InstanceOutcome.PENDING and changed(slot):
                    slot.outcome = InstanceOutcome.INTERRUPTED

    def _forward(self) -> Program:
        settings = self._s
        plan = plan_forward(settings, self.slots, self._desired)
        for slot in plan.skipped:
            slot.outcome = InstanceOutcome.SKIPPED
            self.phase(slot, Phase.SKIPPED, settings.target)
        for first, end in plan.groups.batches:
            self._batch_size[len(self._batch_size)] = end - first
        window = settings.window(self._desired)
        self.emit(
            RolloutStarted,
            target=settings.target,
            desired=self._desired,
            to_update=tuple(s.key for s in plan.units),
            skipped=tuple(s.key for s in plan.skipped),
            unhealthy=tuple(s.key for s in self.slots if not s.serving_at_start),
            max_unavailable=window.max_unavailable,
            max_surge=window.max_surge,
        )
        if "before_rollout" in settings.hooks:
            try:
                yield from self._units.hook(
                    "before_rollout", settings.target, [s.live for s in self.slots]
                )
            except Failed as exc:
                self.trigger(exc.reason, RollbackMode.HALT, RolloutStatus.HALTED)
                return
        if not plan.units and not plan.barriers:
            return
        ledger = Ledger(
            serving_at_start=[s.serving_at_start for s in plan.units],
            absent=[s.live is None for s in plan.units],
            lockstep=settings.lockstep,
            floor=window.floor,
            ceiling=window.ceiling,
            serving=sum(1 for s in self.slots if s.serving_at_start),
            existing=sum(s.existing for s in self.slots),
            cap=window.max_unavailable + window.max_surge,
            surge=settings.surge_enabled,
            in_place=settings.can_replace,
            barriers=plan.barriers,
        )
        ledger.paused = self._paused
        if self._stop_mode is not None:
            # A trigger (abort, a failed hook) came before there was a ledger.
            ledger.stop()
        yield from self._drive(Pass(plan, ledger, settings.target, rolling_back=False))

    def _revert(self) -> Program:
        self._rolling_back = True
        self.set_status(RolloutStatus.ROLLING_BACK)
        if self._s.journaled:
            yield Record({"t": "rollback", "reason": self.stop_reason}, sync=True)
        todo = [s for s in self.slots if needs_revert(s)]
        todo.sort(key=lambda s: s.changed_seq, reverse=True)
        # Newest first, but what is already out of traffic goes before all of it: it costs
        # no availability, and a window that is full could otherwise never reach it.
        todo.sort(key=lambda s: s.serving)
        self.emit(
            RollbackStarted,
            reason=self.stop_reason,
            mode=str(RollbackMode.REVERT),
            instance_ids=tuple(s.key for s in todo),
        )
        if not todo:
            return
        for slot in todo:
            slot.serving_at_start = slot.serving
        window = self._s.window(self._desired)
        plan = plan_rollback(self._s, todo, self._desired)
        ledger = Ledger(
            serving_at_start=[s.serving_at_start for s in todo],
            absent=[s.live is None for s in todo],
            lockstep=self._s.lockstep,
            floor=window.floor,
            ceiling=window.ceiling,
            serving=sum(1 for s in self.slots if s.serving),
            existing=sum(s.existing for s in self.slots),
            cap=window.max_unavailable + window.max_surge,
            surge=self._s.surge_enabled,
            in_place=self._s.can_replace,
            barriers=plan.barriers,
        )
        if self._stop_status is not None and self._stop_mode is RollbackMode.HALT:
            ledger.stop()  # pragma: no cover - a halt before the rollback started skips it
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
        result: list[Start] = []
        for start in starts:
            slot = units[start.index]
            wave = plan.groups.opens_wave(start.index)
            if wave is not None:
                first, end = plan.groups.waves[wave]
                key = plan.wave_keys[wave] if plan.wave_keys else None
                ids = tuple(u.key for u in units[first:end])
                self.emit(WaveStarted, index=wave, key=key, instance_ids=ids)
            result.append(Start(slot, start, run))
        return result

    def unstart(self, start: Start) -> None:
        """A unit that was allowed to start will not run after all (stopped, cancelled)."""
        start.run.ledger.unstart(start.reserved, serving_at_start=start.slot.serving_at_start)
        self._signals |= WAKE

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
        self._signals |= WAKE
        ledger = run.ledger
        if ledger.lockstep or ledger.stopping:
            return []
        poll = ledger.poll()
        if not poll.starts:
            return []
        self._signals &= ~WAKE
        return self._open(run, poll.starts)

    def _stuck(self, run: Pass) -> None:
        ledger = run.ledger
        reason = (
            f"stuck: {ledger.serving} instances serve and the floor is {ledger.floor}, so no more"
            " can be taken out (instances failed out of traffic or were unhealthy from the start)"
        )
        if run.rolling_back:
            for slot in run.plan.units[ledger.cursor :]:
                slot.outcome = InstanceOutcome.REVERT_FAILED
                slot.reason = reason
                self.phase(slot, Phase.REVERT_FAILED, slot.old_version, reason)
            ledger.stop()
        else:
            self.policy_trigger(reason)

    def _batch_start(self, run: Pass, index: int) -> Program:
        first, end = run.plan.groups.batches[index]
        members = run.plan.units[first:end]
        self.emit(BatchStarted, index=index, instance_ids=tuple(s.key for s in members))
        if "before_batch" in self._s.hooks:
            try:
                yield from self._units.hook("before_batch", index, [s.live for s in members])
            except Failed as exc:
                self.policy_trigger(exc.reason)

    def _barrier(self, run: Pass, barrier: Barrier) -> Program:
        if barrier.batch is not None:
            first, end = run.plan.groups.batches[barrier.batch]
            self.emit(BatchFinished, index=barrier.batch, failed=self._batch_failed[barrier.batch])
            if "after_batch" in self._s.hooks:
                lives = [s.live for s in run.plan.units[first:end]]
                try:
                    yield from self._units.hook("after_batch", barrier.batch, lives)
                except Failed as exc:
                    self.policy_trigger(exc.reason)
                    return
        for index, step in enumerate(barrier.steps):
            if self._stop_mode is not None:
                return
            yield from self._holds.run(index, step)

    # -------------------------------------------------------------- units

    def unit(self, start: Start) -> Program:
        """The program of one unit; it returns the units that may start after it."""
        return self._units.run(start)

    def unit_began(self, slot: Slot) -> None:
        """Bookkeeping as a unit starts."""
        self._busy.add(slot)
        slot.outcome = InstanceOutcome.IN_PROGRESS
        if slot.started_at is None:
            slot.started_at = self._now

    def unit_ended(self, start: Start, *, serving: int, existing: int) -> None:
        """Bookkeeping as a unit ends: settle its reservation with the deltas it caused."""
        slot = start.slot
        if slot.outcome is InstanceOutcome.IN_PROGRESS:
            # Cut short (the clean-up deadline passed): a result never says "in progress".
            slot.outcome = InstanceOutcome.INTERRUPTED
            slot.reason = slot.reason or "interrupted: clean-up did not finish in time"
        start.run.ledger.settle(serving=serving, existing=existing)
        self._busy.discard(slot)
        slot.finished_at = self._now
        self._seq += 1
        slot.changed_seq = self._seq

    def record_failure(self, slot: Slot) -> None:
        """Count a failed instance against the budget; a trigger when it is exceeded."""
        policy = self._s.failure
        self._failed += 1
        self._consecutive += 1
        why = ""
        batch = None if self._rolling_back else slot.batch
        if batch is not None:
            self._batch_failed[batch] += 1
        if self._failed > self._budget:
            noun = "instance" if self._failed == 1 else "instances"
            why = f"{self._failed} {noun} failed, over the budget of {self._budget} (max_failed)"
        elif batch is not None and policy.batch_exceeded(
            self._batch_failed[batch], self._batch_size[batch]
        ):
            why = (
                f"{self._batch_failed[batch]} of {self._batch_size[batch]} instances"
                f" in batch {batch} failed,"
                f" over max_failed_per_batch={policy.max_failed_per_batch}"
            )
        elif policy.circuit_breaker is not None and self._consecutive >= policy.circuit_breaker:
            why = f"circuit breaker: {self._consecutive} failures in a row"
        if why:
            self.policy_trigger(f"{why}; last: {slot.key}: {slot.reason}")

    def record_success(self) -> None:
        """An instance made it: progress, and the breaker's count starts again."""
        self._progress_at = self._now
        if not self._rolling_back:
            self._consecutive = 0

    @property
    def revert_pending(self) -> bool:
        """Whether a trigger asked for a revert, which will handle what is out of traffic."""
        return self._stop_mode is RollbackMode.REVERT

    # ------------------------------------------------------------- result

    def _final_status(self) -> RolloutStatus:
        if self._stop_status is not None:
            return self._stop_status
        if self._tally.get(InstanceOutcome.FAILED):
            return RolloutStatus.DEGRADED
        return RolloutStatus.SUCCEEDED

    def finish(self, status: RolloutStatus, reason: str) -> RolloutResult:
        """Make the result; the run has ended with ``status``."""
        self.status = status
        self.result = RolloutResult(
            status=status,
            target=self._s.target,
            reason=reason,
            instances=tuple(instance_result(s) for s in self.slots),
            started_at=self._started_at,
            finished_at=self._now,
        )
        self.emit(StatusChanged, status=status)
        self.emit(RolloutFinished, result=self.result)
        self._signals |= INTERRUPT | STEP | WAKE
        return self.result

    def counts(self) -> dict[InstanceOutcome, int]:
        """Instances by outcome so far."""
        return {outcome: count for outcome, count in self._tally.items() if count}

    def in_flight(self) -> tuple[str, ...]:
        """Ids of instances being worked on."""
        return tuple(s.key for s in sorted(self._busy, key=lambda s: s.position))

    @property
    def paused(self) -> bool:
        """Whether a pause() is in force."""
        return self._paused

    @property
    def current_step(self) -> Step | None:
        """The pause or gate being waited on, if any."""
        return self._holds.current

"""The rollout machine: every decision of a rollout, and no I/O.

The machine is sans-io in the manner of h11: it never awaits, never reads a
clock and never calls a driver. Its programs are plain generators that yield
effects (:mod:`rolling._effects`) and receive what came of them; the runner
(:mod:`rolling._runner`) carries the effects out and tells the machine the time
by setting :attr:`Machine.now`. Every count, outcome and status is set here.

Rules, in the order a rollout meets them:

1. **Start.** With a journal, an unfinished rollout to the same target is
   resumed (:mod:`rolling._recovery`). The fleet is listed; duplicate ids are
   an error and every check that needs the fleet's size
   (:func:`rolling._settings.check_fleet`) runs before any probe or change.
   Instances are surveyed with one probe each; those that fail serve nothing.
2. **Plan** (:mod:`rolling._plan`): skipped instances, waves, batches,
   barriers and the steps held at them; the passes (:mod:`rolling._passes`)
   drive it, and the steps are held by :mod:`rolling._holds`.
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
   stops (announced by ``RollbackStarted(mode="halt")``). During a rollback
   only a halt (``abort(rollback=False)``) stops it.
7. **Steps** run at their barrier: a ``Pause`` until its time or a promote;
   a ``Gate`` until it answers, a promote, or a stop. ``promote(full=True)``
   skips every step left.
8. **Analysis** (:mod:`rolling._analyses`): an ``Analyze`` step is held
   like a gate; a failed verdict is a trigger, an inconclusive one waits for
   a person. The background analysis starts with the first instance updated
   (or a traffic shift that gives a new set a share); a failed verdict is a
   trigger at any moment, an inconclusive one pauses; it ends when a rollback
   starts, or after its bake once the forward pass is done.
9. **End.** A trigger's status, else DEGRADED when an instance failed, else
   SUCCEEDED. A cancelled run ends CANCELLED, an error HALTED; both after
   in-flight units settled. A lost lock (a lease lock's ``hold()`` ended) is
   such an error: the runner calls :meth:`Machine.fail`, and since every
   journal write is refused from then on, a unit stops at its next record,
   before its next change (write-ahead).
10. **Flags** (:mod:`rolling._flagging`): with ``FlagRules``, the flag goes
    on after the forward pass (and bake) only when every instance in traffic
    runs the target, and off before a rollback starts (or a failed instance's
    restore, once a revert is asked for); a failed turn-off halts instead.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Generator
from typing import Any

from ._analyses import ANALYZE, Analyses
from ._budget import Budget
from ._collector import collector_paused
from ._effects import (
    ListInstances,
    LoadJournal,
    Record,
    Survey,
)
from ._flagging import Flags
from ._holds import Holds
from ._journal import begin_record
from ._paired import Paired
from ._paired_units import PairedUnits
from ._passes import Pass, Passes, Start
from ._phase_event import PHASE_EVENT_BUILDER, make_phase_event
from ._policies import DeadlineAction, RollbackMode
from ._recovery import recover
from ._result import InstanceOutcome, RolloutResult, RolloutStatus
from ._resuming import Resumption
from ._settings import Settings, check_fleet, check_unique
from ._slot import Slot, end_slots, fleet_slots, instance_result
from ._steps import Step
from ._unit import UnitPrograms
from .events import (
    ControlRequested,
    Event,
    InstancePhaseChanged,
    Phase,
    ProgressDeadlineExceeded,
    RollbackStarted,
    RolloutFinished,
    StatusChanged,
)

__all__ = ["ANALYZE", "INTERRUPT", "STEP", "WAKE", "Machine", "Program", "Start"]

_new = object.__new__
# Read once per unit twice: an enum member looked up on its class costs about 1k instructions.
_IN_PROGRESS = InstanceOutcome.IN_PROGRESS
_HALT = str(RollbackMode.HALT)

Program = Generator[Any, Any, Any]
"""A machine program: yields effects, receives their results."""

WAKE = 1
"""Signal: the main program may have something to do."""
INTERRUPT = 2
"""Signal: interrupt every interruptible wait."""
STEP = 4
"""Signal: the running step should end (promote or stop)."""


class Machine:
    """Every decision of one rollout; see the module docstring for the rules."""

    def __init__(self, settings: Settings, *, listening: bool) -> None:
        self._s = settings
        self.listening = listening
        """Whether events are made at all (read it; :meth:`listen` sets it)."""
        self.now = 0.0
        """The event loop's time: the runner sets it before resuming any program (a plain
        attribute, not a method: it is set before every step of every unit)."""
        self._wall_offset = 0.0
        self._events: list[Event] = []
        self._signals = 0
        self.status = RolloutStatus.PENDING
        self.traffic: float | None = None  # a paired strategy's new set's share, in percent
        self.resumed_steps = 0  # the steps a resumed run's journal says had ended
        self.result: RolloutResult | None = None
        self.slots: list[Slot] = []
        self._tally: dict[InstanceOutcome, int] = {}
        self._busy: set[Slot] = set()
        self._rested: set[Slot] = set()  # pairs whose work waits for a step (in flight still)
        self._paused = False
        self._holds = Holds(self)
        self.stop_reason = ""
        self._stop_mode: RollbackMode | None = None
        self._stop_status: RolloutStatus | None = None
        self._rolling_back = False
        self._started_at = 0.0
        self._progress_at = 0.0
        self._seq = 0
        self._desired = 0
        self._budget = Budget(settings.failure)
        self._resumption: Resumption | None = None
        rng = random.Random(settings.seed)
        self._passes: Passes | Paired
        if settings.paired:
            paired = PairedUnits(self, settings, rng)
            self._units: UnitPrograms = paired
            self._passes = Paired(self, settings, paired, self._holds)
        else:
            self._units = UnitPrograms(self, settings, rng)
            self._passes = Passes(self, settings, self._units, self._holds)
        self._analyses = Analyses(self, settings.analysis)
        self.flags = Flags(self, settings.flags)
        self.rollout_id = ""
        """This run's id, ``target@wall-time-of-start``, as metric queries see it."""
        # The runner's calls once per unit, bound to where the work is done (a call fewer each).
        self.unit: Callable[[Start], Program] = self._units.run
        """The program of one unit; it returns the units that may start after it."""
        self.go_on: Callable[[Start], bool] = self._passes.go_on
        """Whether a unit handed to a finishing task may still start; if not, undo it."""
        self.successors: Callable[[Pass], list[Start]] = self._passes.successors
        """After a unit ends: the units that may start now (the finishing task runs the first)."""

    # ---------------------------------------------------------- runner side

    def set_clock(self, now: float, wall: float) -> None:
        """Loop time ``now`` is wall time ``wall`` (set early: a control before start())."""
        self.now = now
        self._wall_offset = wall - now

    def start(self, now: float, wall: float) -> None:
        """The run starts at loop time ``now``, wall time ``wall``."""
        self.set_clock(now, wall)
        self._started_at = self._progress_at = now
        self.rollout_id = f"{self._s.target}@{wall:.3f}"
        self.set_status(RolloutStatus.PAUSED if self._paused else RolloutStatus.RUNNING)

    def drain_events(self) -> list[Event]:
        """Events made since the last call, oldest first (empty: read it, keep it not)."""
        events = self._events
        if events:  # a new list only when there were events: most calls find none
            self._events = []
        return events

    def take_signals(self) -> int:
        """Signals raised since the last call (``WAKE | INTERRUPT | STEP``)."""
        signals, self._signals = self._signals, 0
        return signals

    @property
    def pending(self) -> bool:
        """Whether events or signals wait to be taken."""
        return bool(self._events) or self._signals != 0

    def listen(self) -> None:
        """Someone subscribed: make events from now on."""
        self.listening = True

    @property
    def stopping(self) -> bool:
        """Whether a trigger fired and nothing more starts in the forward pass."""
        return self._stop_mode is not None

    @property
    def interruptible(self) -> bool:
        """Whether waits started now can be interrupted by a trigger."""
        return not (self._stop_mode is not None and not self._rolling_back)

    # ------------------------------------------------------------ events

    def emit(self, event_type: type[Event], **fields: Any) -> None:
        """Make an event, stamped with the machine's time."""
        if self.listening:
            now = self.now
            self._events.append(event_type(at=now, wall=now + self._wall_offset, **fields))

    def wall(self) -> float:
        """Wall time matching :attr:`now`."""
        return self.now + self._wall_offset

    def add_event(self, event: Event) -> None:
        """Pass on an event made elsewhere (a flag change is kept for the result too)."""
        if self.listening:
            self._events.append(event)

    def phase(
        self, slot: Slot, phase: Phase, version: str, reason: str = "", instance: Any = None
    ) -> None:
        """Announce that ``slot`` reached ``phase``."""
        if not self.listening:
            return
        live = instance
        if live is None:
            live = slot.extra if slot.extra is not None else slot.live
        now = self.now
        builder = PHASE_EVENT_BUILDER
        if builder is None:  # pragma: no cover - the fast path is off (see _phase_event)
            current = None if live is None else live.id
            fields = (slot.key, phase, version, slot.attempts or 1, current, reason)
            wall = now + self._wall_offset
            self._events.append(make_phase_event(now, wall, *fields, self._rolling_back))
            return
        # emit()'s work, and rolling._phase_event's make(), written out: most events are these.
        event = _new(builder)
        event.at = now
        event.wall = now + self._wall_offset
        event.instance_id = slot.key
        event.phase = phase
        event.version = version
        event.attempt = slot.attempts or 1
        event.current_id = None if live is None else live.id
        event.reason = reason
        event.rollback = self._rolling_back
        event.__class__ = InstancePhaseChanged
        self._events.append(event)

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
        self._passes.pause(paused=True)
        if self.status is RolloutStatus.RUNNING:
            self.set_status(RolloutStatus.PAUSED)

    def resume(self) -> None:
        """Undo :meth:`pause`."""
        self.emit(ControlRequested, action="resume")
        self._paused = False
        self._passes.pause(paused=False)
        if self._holds.resume():
            self._signals |= STEP
        self._progress_at = self.now
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
        if not rollback and self._stop_mode is RollbackMode.REVERT and not self._rolling_back:
            # A rollback asked for but not begun (an abort, a failure) never begins.
            self.halt_rollback("aborted without rollback", RolloutStatus.ABORTED)
            return
        if self._rolling_back:
            if not rollback:
                self.trigger("aborted during rollback", RollbackMode.HALT, RolloutStatus.ABORTED)
            return
        mode = RollbackMode.REVERT if rollback else RollbackMode.HALT
        self.trigger("aborted", mode, RolloutStatus.ABORTED)

    def fail(self, reason: str) -> None:
        """An error the rollout cannot go on after (an observer raised): halt at once.

        Whatever a trigger before it asked for (a rollback not begun, an abort), the run
        ends ``HALTED``: the status of a rollout that ended in an unexpected error.
        """
        if self._rolling_back or self._stop_mode is None:
            self.trigger(reason, RollbackMode.HALT, RolloutStatus.HALTED)
            return
        self.halt_rollback(reason)

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

    def halt_rollback(self, reason: str, status: RolloutStatus = RolloutStatus.HALTED) -> None:
        """A rollback that has not begun must not begin (a flag stayed on, an abort): halt."""
        self.stop_reason += f"; {reason}"
        self._stop_mode = RollbackMode.HALT
        self._stop_status = status

    def policy_trigger(self, reason: str) -> None:
        """A trigger handled by the rollback policy (revert or halt)."""
        mode = self._s.rollback
        status = RolloutStatus.ROLLED_BACK if mode is RollbackMode.REVERT else RolloutStatus.HALTED
        self.trigger(reason, mode, status)

    def _stop_pass(self) -> None:
        self._passes.stop()
        self._signals |= INTERRUPT | STEP | WAKE

    def signal(self, signals: int) -> None:
        """Raise signals for the runner (``WAKE``, ``INTERRUPT``, ``STEP``)."""
        self._signals |= signals

    def unsignal(self, signals: int) -> None:
        """Take back signals raised since the runner last took them."""
        self._signals &= ~signals

    @property
    def settings(self) -> Settings:
        """The rollout's settings."""
        return self._s

    def unstart(self, start: Start) -> None:
        """A unit that was allowed to start will not run after all (stopped, cancelled)."""
        self._passes.unstart(start)

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
        now = self.now
        if self._paused or self._holds.current is not None or self._analyses.baking:
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
        self._progress_at = self.now

    # --------------------------------------------------------- main program

    def main(self) -> Program:
        """The rollout from listing the fleet to the result."""
        settings = self._s
        recovered = None
        if settings.journaled:
            recovered = recover((yield LoadJournal()), target=settings.target)
        instances = list((yield ListInstances()))
        check_unique(instances)
        check_fleet(settings.steps, len(instances) if recovered is None else len(recovered.fleet))
        if recovered is not None:
            self._resumption = Resumption(self, self._units, recovered, self._tally)
            self.resumed_steps = recovered.steps_done
            if recovered.promoted:
                self._holds.promoted_before()
            yield from self._resumption.plan(instances)
        else:
            healthy = (yield Survey(instances)) if settings.has_check else [True] * len(instances)
            self.slots += fleet_slots(instances, healthy, self._tally)
            if settings.journaled:
                fleet = [(i.id, i.version) for i in instances]
                yield Record(begin_record(settings.target, fleet), sync=True)
        # A lost slot (rolling._resuming, rule 5) will never stand again: the window, the
        # budget and the Advance targets are of the fleet that can.
        self._desired = sum(1 for s in self.slots if not s.lost)
        self._tally[InstanceOutcome.PENDING] = len(self.slots)
        self._budget.size_to(self._desired)
        if self._resumption is not None:
            yield from self._resumption.finish_dead_work()
        if self._stop_mode is None:
            yield from self._passes.forward(self._desired)
        yield from self._analyses.after_forward()
        yield from self.flags.after_forward(settings.target)
        yield from self._apply_rollback_policy()
        self.finish(self._final_status(), self.stop_reason or self.flags.failure)
        if settings.journaled:
            yield Record({"t": "end", "status": str(self.status)}, sync=True)

    def _apply_rollback_policy(self) -> Program:
        """After the forward pass: revert what changed, or announce the halt."""
        if self._stop_mode is RollbackMode.REVERT:
            self._rolling_back = True
            self.set_status(RolloutStatus.ROLLING_BACK)
            if self._s.journaled:
                yield Record({"t": "rollback", "reason": self.stop_reason}, sync=True)
            yield from self._passes.revert(self._desired)
        elif self._stop_mode is RollbackMode.HALT:
            yield from self._units.endings.put_back_left_out()  # a revert asked for became a halt
            self.emit(RollbackStarted, reason=self.stop_reason, mode=_HALT, instance_ids=())

    def mark_changed(self, slot: Slot) -> None:
        """``slot`` changed now: the rollback takes the newest first."""
        self._seq += 1
        slot.changed_seq = self._seq

    def resume_rollback(self, reason: str) -> None:
        """The dead controller was rolling back: the resumed run rolls back too."""
        self.stop_reason = f"resumed rollback: {reason}"
        self._stop_mode = RollbackMode.REVERT
        aborted = reason.startswith("aborted")
        self._stop_status = RolloutStatus.ABORTED if aborted else RolloutStatus.ROLLED_BACK

    # -------------------------------------------------------------- units

    def unit_began(self, slot: Slot) -> None:
        """Bookkeeping as a unit starts."""
        self._busy.add(slot)
        self._rested.discard(slot)
        slot.set_outcome(_IN_PROGRESS)
        if slot.started_at is None:
            slot.started_at = self.now

    def unit_rested(self, slot: Slot) -> None:
        """A pair's program ended, its work not yet finished: no call is in flight for it."""
        self._busy.discard(slot)
        self._rested.add(slot)
        self.mark_changed(slot)

    def unit_ended(self, start: Start, *, serving: int, existing: int) -> None:
        """Bookkeeping as a unit ends: settle its reservation with the deltas it caused."""
        slot = start.slot
        if slot.outcome is _IN_PROGRESS:
            # Cut short (the clean-up deadline passed): a result never says "in progress".
            slot.set_outcome(InstanceOutcome.INTERRUPTED)
            slot.reason = slot.reason or "interrupted: clean-up did not finish in time"
        start.run.ledger.settle(serving=serving, existing=existing)
        self._busy.discard(slot)
        slot.finished_at = self.now
        self._seq += 1
        slot.changed_seq = self._seq

    def record_failure(self, slot: Slot) -> None:
        """Count a failed instance against the budget; a trigger when it is exceeded."""
        batch = None if self._rolling_back else slot.batch
        why = self._budget.failed(batch, *self._passes.count_failure(batch))
        if why:
            self.policy_trigger(f"{why}; last: {slot.key}: {slot.reason}")

    def record_success(self) -> None:
        """An instance made it: progress, and the breaker's count starts again."""
        self._progress_at = self.now
        if not self._rolling_back:
            self._budget.succeeded()
            if self._s.analysis is not None:
                self._analyses.start_background()

    # ------------------------------------------------------------ analysis

    @property
    def analyses(self) -> Analyses:
        """The rollout's analyses (steps and background)."""
        return self._analyses

    def signal_wake(self) -> None:
        """Wake the main program (it may be waiting on the background analysis)."""
        self._signals |= WAKE

    def hold(self, reason: str) -> None:
        """Pause for a person, for ``reason`` (a background analysis is inconclusive)."""
        if self._stop_mode is not None or self._paused:
            return
        self.emit(ControlRequested, action="pause", detail=reason)
        self._paused = True
        self._passes.pause(paused=True)
        self.set_status(RolloutStatus.PAUSED)

    @property
    def revert_pending(self) -> bool:
        """Whether a trigger asked for a revert, which will handle what is out of traffic."""
        return self._stop_mode is RollbackMode.REVERT

    # ------------------------------------------------------------- result

    def _final_status(self) -> RolloutStatus:
        if self._stop_status is not None:
            return self._stop_status
        if self._tally.get(InstanceOutcome.FAILED) or self.flags.failure:
            return RolloutStatus.DEGRADED
        return RolloutStatus.SUCCEEDED

    def finish(self, status: RolloutStatus, reason: str) -> RolloutResult:
        """Make the result; the run has ended with ``status``."""
        analyses = self._analyses
        analyses.end_background()
        end_slots(self.slots)
        self.status = status
        with collector_paused():
            instances = tuple(instance_result(s) for s in self.slots)
        self.result = RolloutResult(
            status=status,
            target=self._s.target,
            reason=reason,
            instances=instances,
            started_at=self._started_at,
            finished_at=self.now,
            measurements=tuple(m for j in analyses.judges for m in j.measurements),
            verdicts=tuple(j.verdict() for j in analyses.judges),
            verdict=analyses.deciding,
            flags=tuple(self.flags.changes),
        )
        self.emit(StatusChanged, status=status)
        self.emit(RolloutFinished, result=self.result)
        self._signals |= INTERRUPT | STEP | WAKE
        return self.result

    def counts(self) -> dict[InstanceOutcome, int]:
        """Instances by outcome so far."""
        return {outcome: count for outcome, count in self._tally.items() if count}

    def in_flight(self) -> tuple[str, ...]:
        """Ids of instances in flight (a call, a wait, a new instance beside them), in order."""
        working = self._busy | {s for s in self._rested if s.outcome is _IN_PROGRESS}
        return tuple(s.key for s in sorted(working, key=lambda s: s.position))

    @property
    def paused(self) -> bool:
        """Whether a pause() is in force."""
        return self._paused

    @property
    def step_ended(self) -> bool:
        """Whether the step about to be waited on was promoted or stopped (by an observer)."""
        return self._stop_mode is not None or self._holds.ended

    @property
    def current_step(self) -> Step | None:
        """The pause or gate being waited on, if any."""
        return self._holds.current

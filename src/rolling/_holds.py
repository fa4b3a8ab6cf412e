"""Holds: the pauses and gates that steps put at barriers, and promote.

Part of the machine (:mod:`rolling._machine`), sans-io like it:

1. A step runs when the pass reaches its barrier and no trigger has fired.
2. ``Pause(seconds)`` holds until its time passes or a promote; ``Pause()``
   until a promote. The status is PAUSED meanwhile.
3. ``Gate(check)`` holds until the check answers (bounded by its timeout), a
   promote (it passes) or a stop. A false answer, an exception or a time-out
   is a trigger, handled by the rollback policy.
4. ``promote()`` ends the running pause or gate; ``promote(full=True)`` also
   skips every pause, gate and analysis left, including ones not reached yet
   (a ``SetFlag`` step still sets its flag). A journaled rollout
   records a full promote once (a ``promoted`` record), before the first step
   it skips; a resumed rollout that finds one starts promoted.
5. Waiting on a hold is not a lack of progress: the progress deadline starts
   again when it ends.
6. ``Analyze(analysis)`` measures until the analysis has a verdict
   (:mod:`rolling._analyses`), a promote (it passes) or a stop. Failed is a
   trigger, handled by the rollback policy. Inconclusive holds for a person:
   promote or resume go on, abort rolls back; after ``inconclusive_timeout``
   the step's ``on_timeout`` decides (roll back, or go on).
7. ``SetFlag(flag, value)`` sets the flag (:mod:`rolling._flagging`); a
   failed set is a trigger, handled by the rollback policy.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from ._analysis import Outcome
from ._effects import CheckGate, Record, RunAnalysis, WaitStep
from ._result import RolloutStatus
from ._steps import Analyze, Gate, InconclusiveAction, Pause, SetFlag, Step
from .events import GateChecked, StepFinished, StepStarted

if TYPE_CHECKING:
    from ._machine import Machine

__all__ = ["Holds"]


class Holds:
    """The steps of one machine, and whether they are promoted."""

    def __init__(self, machine: Machine) -> None:
        self._m = machine
        self._step: Step | None = None
        self._one = False
        self._full = False
        self._full_recorded = False
        self._asking = False

    @property
    def current(self) -> Step | None:
        """The pause or gate being held at, if any."""
        return self._step

    @property
    def ended(self) -> bool:
        """Whether the running hold was promoted (or resumed) before its wait began.

        An observer may call ``promote()`` as the step's own ``StepStarted`` goes out,
        before the runner waits on it: that wait must not begin at all.
        """
        return self._step is not None and (self._one or self._full)

    @property
    def promoted_fully(self) -> bool:
        """Whether ``promote(full=True)`` came: every step left is skipped."""
        return self._full

    def promote(self, *, full: bool) -> bool:
        """End the running hold (and skip all that remain with ``full``); False if none runs."""
        if full:
            self._full = True
        elif not isinstance(self._step, Pause | Gate | Analyze):
            return False
        self._one = True
        return True

    def promoted_before(self) -> None:
        """A resumed rollout's journal holds a full promote: every step is skipped again."""
        self._full = self._one = self._full_recorded = True

    def record_full_promote(self) -> Generator[Any, Any, None]:
        """Journal a full promote once, so that a resumed rollout skips what it skipped."""
        if self._full and not self._full_recorded and self._m.settings.journaled:
            self._full_recorded = True
            yield Record({"t": "promoted"})

    def passed_before(self, index: int, step: Step) -> bool:
        """Whether a resumed run's journal says the hold at ``index`` ended: not held again."""
        return index < self._m.resumed_steps and isinstance(step, Pause | Gate | Analyze)

    def record_step(self, index: int) -> Generator[Any, Any, None]:
        """Journal that the step at ``index`` ended, once (a resumed run has it already)."""
        machine = self._m
        if machine.settings.journaled and index >= machine.resumed_steps and not machine.stopping:
            yield Record({"t": "step", "i": index})

    def resume(self) -> bool:
        """A resume ends a hold that asks a person (an inconclusive analysis); False if none."""
        if not self._asking:
            return False
        self._one = True
        return True

    def run(self, index: int, step: Step) -> Generator[Any, Any, None]:
        """Hold at ``step``, the ``index``-th of its barrier."""
        machine = self._m
        if self._full and not isinstance(step, SetFlag):
            # A full promote skips the holds; a flag step is no hold, and the pass that
            # reaches it sets its flag (the rest of the fleet may count on it).
            machine.emit(StepStarted, index=index, step=step)
            machine.emit(StepFinished, index=index, step=step, promoted=True)
            return
        self._step = step
        self._one = False
        machine.emit(StepStarted, index=index, step=step)
        promoted = False
        if isinstance(step, Pause):
            machine.set_status(RolloutStatus.PAUSED)
            yield WaitStep(step.seconds)
            promoted = self._one or self._full
        elif isinstance(step, Gate):
            promoted = yield from self._gate(step)
        elif isinstance(step, Analyze):
            promoted = yield from self._analyze(step)
        elif isinstance(step, SetFlag):
            yield from machine.flags.step(step)
        self._step = None
        machine.progressed()
        if not machine.stopping:
            paused = machine.paused
            machine.set_status(RolloutStatus.PAUSED if paused else RolloutStatus.RUNNING)
        machine.emit(StepFinished, index=index, step=step, promoted=promoted)

    def _gate(self, gate: Gate) -> Generator[Any, Any, bool]:
        machine = self._m
        outcome: tuple[bool, str] | None = yield CheckGate(gate)
        if outcome is None:
            promoted = self._one or self._full
            reason = "promoted" if promoted else "stopped"
            machine.emit(GateChecked, name=gate.name, passed=promoted, reason=reason)
            return promoted
        passed, reason = outcome
        machine.emit(GateChecked, name=gate.name, passed=passed, reason=reason)
        if not passed:
            machine.policy_trigger(f"gate {gate.name} failed" + (f": {reason}" if reason else ""))
        return False

    def _stopped(self) -> bool:
        """Whether a trigger fired (a call, so a type checker does not narrow across a yield)."""
        return self._m.stopping

    def _promoted(self) -> bool:
        """Whether a promote (or a resume, for a person's decision) came."""
        return self._one or self._full

    def _analyze(self, step: Analyze) -> Generator[Any, Any, bool]:  # noqa: PLR0911 - one return per way the hold ends
        machine = self._m
        analyses = machine.analyses
        judge = analyses.open(step.analysis)
        yield RunAnalysis(judge)
        verdict = analyses.close(judge)
        if self._promoted():
            return True
        if machine.stopping:
            return False
        name = step.analysis.name
        if verdict.outcome is Outcome.FAILED:
            machine.policy_trigger(f"analysis {name!r} failed: {verdict.reason}")
            return False
        if verdict.outcome is not Outcome.INCONCLUSIVE:
            return False
        # Inconclusive: a person decides (rule 6).
        machine.set_status(RolloutStatus.PAUSED)
        self._asking = True
        try:
            yield WaitStep(step.inconclusive_timeout)
        finally:
            self._asking = False
        if self._promoted():
            return True
        if self._stopped() or step.on_timeout is InconclusiveAction.CONTINUE:
            return False
        machine.policy_trigger(
            f"analysis {name!r} inconclusive, and nobody decided within"
            f" {step.inconclusive_timeout}s: {verdict.reason}"
        )
        return False

"""The runner's side of steps, flags and analysis: waits and measurements, no decisions.

Part of the runner (:mod:`rolling._runner`). Rules:

* A step that waits (``WaitStep``, a gate, an ``Analyze`` step) ends when its own
  reason to end comes (its time, the gate's answer, the analysis's verdict) or when
  the machine raises ``STEP`` (a promote or a stop): :meth:`StepEffects.end_step`.
  One ended before its wait began (an observer's control call, as the step's events
  went out) does not wait at all.
* A gate's check is bounded by its ``timeout``; one that raises or times out is a
  closed gate, with the cause as its reason.
* A flag is set shielded (a flag must not be left half-decided) and bounded by
  ``effect_timeout``; a failed set is an answer for the machine, not an error.
* The background analysis runs in a task of its own in the run's task group, started
  and stopped as the machine says (``ANALYZE``): :meth:`StepEffects.toggle_background`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio
import anyio.abc

from ._flagging import call_setter
from ._measuring import Measurer

if TYPE_CHECKING:
    from ._effects import CheckGate, RunAnalysis, SetFlagValue, WaitStep
    from ._judge import AnalysisJudge
    from ._machine import Machine

__all__ = ["StepEffects"]


class StepEffects:
    """Carries out one run's step, flag and analysis effects."""

    def __init__(
        self,
        machine: Machine,
        clock: Callable[[], float],
        flush: Callable[[], None],
        effect_timeout: float,
    ) -> None:
        self._m = machine
        self._clock = clock
        self._effect_timeout = effect_timeout
        self.measurer = Measurer(machine, clock, flush)
        """Takes the measurements (the runner prepares its providers before the run)."""
        self._event: anyio.Event | None = None
        self._background: anyio.CancelScope | None = None

    def end_step(self) -> None:
        """The machine raised ``STEP``: end the step being waited on, if any."""
        if self._event is not None:
            self._event.set()

    async def wait_step(self, effect: WaitStep) -> bool:
        """A pause: until its time, or until :meth:`end_step`; True when cut short so."""
        if self._m.step_ended:
            return True  # ended before it began: end_step() came with nothing to end
        event = self._event = anyio.Event()
        with anyio.move_on_after(math.inf if effect.seconds is None else effect.seconds):
            await event.wait()
        self._event = None
        return event.is_set()

    async def check_gate(self, effect: CheckGate) -> tuple[bool, str] | None:
        """A gate: its answer, or None when :meth:`end_step` came first."""
        gate = effect.gate
        outcome: tuple[bool, str] | None = None

        async def ask() -> None:
            nonlocal outcome
            try:
                with anyio.fail_after(math.inf if gate.timeout is None else gate.timeout):
                    answer = await gate.check()
            except TimeoutError:
                outcome = (False, f"timed out after {gate.timeout}s")
            except Exception as exc:  # noqa: BLE001 - a crashing gate is a closed gate, with the cause
                outcome = (False, f"raised {type(exc).__name__}: {exc}")
            else:
                if isinstance(answer, tuple):
                    outcome = (bool(answer[0]), str(answer[1]))
                else:
                    outcome = (bool(answer), "")

        await self._until_step_ends(ask)
        return outcome

    async def set_flag(self, effect: SetFlagValue) -> tuple[bool, str]:
        """Set a flag, shielded (a flag must not be left half-decided) and bounded."""
        timeout = self._effect_timeout
        with anyio.CancelScope(shield=True) as scope:
            scope.deadline = self._clock() + timeout
            try:
                await call_setter(effect.setter, effect.flag, effect.value)
            except Exception as exc:  # noqa: BLE001 - a failed set is an answer, with the cause
                return False, f"raised {type(exc).__name__}: {exc}"
            return True, ""
        return False, f"did not return within {timeout}s"

    async def run_analysis(self, effect: RunAnalysis) -> None:
        """An ``Analyze`` step: measure until a verdict, a promote or a stop."""
        await self._until_step_ends(functools.partial(self.measurer.run, effect.judge))

    async def _until_step_ends(self, work: Callable[[], Awaitable[object]]) -> None:
        """Run ``work`` until it returns or :meth:`end_step` comes, whichever is first."""
        if self._m.step_ended:
            return  # ended before it began, as in wait_step
        event = self._event = anyio.Event()

        async def run() -> None:
            await work()
            event.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await event.wait()
            tg.cancel_scope.cancel()
        self._event = None

    def toggle_background(self, tg: anyio.abc.TaskGroup | None) -> None:
        """Start the background analysis's task in ``tg``, or stop it, as the machine says."""
        judge = self._m.analyses.background
        if judge is None:
            if self._background is not None:
                self._background.cancel()
        elif self._background is None and tg is not None:
            tg.start_soon(self._run_background, judge)

    async def _run_background(self, judge: AnalysisJudge) -> None:
        with anyio.CancelScope() as scope:
            self._background = scope
            if self._m.analyses.background is judge:
                await self.measurer.run(judge)

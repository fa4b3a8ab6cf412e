"""The runner: carries out the machine's effects, and decides nothing.

Everything that awaits lives here, in one task group. Three kinds of await
exist, and they are treated differently:

* *calls* (driver, router and hook methods) are shielded from cancellation
  and bounded by ``effect_timeout``: once started they finish, so the machine
  always knows what exists and what is in traffic;
* *waits* (readiness, back-off, pauses, gates) can be interrupted by a
  trigger, and by cancellation;
* once the run is cancelled, each unit in flight has ``cleanup_timeout`` to
  finish the call it is in, then ``cleanup_timeout`` more, shielded, to put
  things back (the machine's settle step), before the cancellation goes on.

An error the run cannot go on after (an observer that raises, a driver's
``list_instances`` that fails or outlasts ``effect_timeout``, a bug) halts the
machine: nothing new starts, units in flight settle, and ``run()`` raises that
error itself, never an exception group. A lock that can be lost (it has ``hold()``, see
:class:`rolling.typing.Lock`) is held by a task of its own beside the run; a
loss is such an error.

The runner's helpers, each with its rules at its top: :func:`rolling._lock.under_lock`
(holding the lock around the run), :mod:`rolling._timers` (one timer for every call's
``effect_timeout``, and the progress watchdog), :mod:`rolling._step_effects` (pauses,
gates, flags and the measuring of analyses), :mod:`rolling._delivery` (events to the
observers and streams) and :mod:`rolling._journal_writer` (write-ahead records).
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.lowlevel

from ._cancel_check import cancel_check, raised_by_itself
from ._delivery import Delivery
from ._effects import (
    IDLE,
    Call,
    CheckGate,
    Failed,
    Interrupted,
    ListInstances,
    LoadJournal,
    Probe,
    Record,
    RunAnalysis,
    SetFlagValue,
    Sleep,
    Spawn,
    Survey,
    Together,
    WaitReady,
    WaitStep,
    checked_answer,
)
from ._errors import one_error
from ._journal_writer import JournalWriter
from ._lock import LockLostError, under_lock
from ._machine import ANALYZE, INTERRUPT, STEP, WAKE, Machine, Program, Start
from ._measuring import analyses_of
from ._probe import wait_ready
from ._result import InstanceOutcome, RolloutResult, RolloutStatus
from ._step_effects import StepEffects
from ._stream import EventStream, loop_checkpoint, loop_clock
from ._timers import SCOPE, Deadline, EffectTimer, watch_progress
from .health import probe_once

if TYPE_CHECKING:
    from ._rollout import Rollout

__all__ = ["Runner"]

_SURVEY_WORKERS = 64
_UNITS_PER_CHECKPOINT = 32
"""A worker leaves the event loop at least this often, even when its units never wait.

A unit whose driver waits on anything has already given other tasks their turn; one whose
calls return at once (an in-memory driver) must not keep the loop to itself, but a loop turn
after each of them costs more than the unit. Every 32nd bounds the delay of another task at
32 such units (about a millisecond). A cancellation does not wait for it: the worker asks
the loop whether its task was cancelled after every unit (a cheap question, no loop turn).
"""


class Runner:
    """Runs one machine against a rollout's driver, router, hooks and journal."""

    def __init__(self, rollout: Rollout[Any], machine: Machine) -> None:
        self._rollout = rollout
        self._m = machine
        self.target = rollout.target
        self._effect_timeout = rollout.effect_timeout
        self._cleanup_timeout = rollout.cleanup_timeout
        self._check = rollout.check_function
        self._readiness = rollout.readiness
        self._journal = (
            None if rollout.journal is None else JournalWriter(rollout.journal, self._error)
        )
        calls: dict[str, Callable[..., Any]] = dict(rollout.hook_methods)
        driver: Any = rollout.driver
        for name in ("replace", "launch", "terminate"):
            method = getattr(driver, name, None)
            if method is not None:
                calls[name] = method
        if rollout.router is not None:
            calls["detach"] = rollout.router.detach
            calls["attach"] = rollout.router.attach
            set_weight = getattr(rollout.router, "set_weight", None)
            if set_weight is not None:
                calls["set_weight"] = set_weight
        self._calls = calls
        self._delivery = Delivery(rollout.observers)
        self._delivering = False
        # The event loop's clock from the start (a Rollout is run or started inside the loop):
        # a control call before run() begins stamps its event on it, as every other event is.
        self._clock: Callable[[], float] = loop_clock()
        machine.set_clock(self._clock(), time.time())
        self._checkpoint: Callable[[], Awaitable[None]] = anyio.lowlevel.checkpoint
        self._scope: type[anyio.CancelScope] = anyio.CancelScope
        self._tg: anyio.abc.TaskGroup | None = None
        self._wake = anyio.Event()
        self._interruptible: set[anyio.CancelScope] = set()
        self._timer = EffectTimer(self._now, rollout.effect_timeout)
        self._cancelling = False
        self._cleanup_deadline = math.inf
        self._finished = False
        self._errors: list[Exception] = []
        self._steps = StepEffects(machine, self._now, self._flush, rollout.effect_timeout)

    def _now(self) -> float:
        # Not the clock itself: run() swaps in the event loop's own clock.
        return self._clock()

    # -------------------------------------------------------- the outside

    @property
    def machine(self) -> Machine:
        """The machine this runner carries out."""
        return self._m

    def subscribe(self) -> EventStream:
        """A stream of every event from now on."""
        ended = self._m.result is not None
        if not ended:
            self._m.listen()
        return self._delivery.subscribe(ended=ended)

    def control(self, action: Callable[[], Any]) -> Any:
        """Call a control method of the machine, then act on what it asked for."""
        self._m.now = self._clock()
        try:
            return action()
        finally:
            self._flush()

    async def run(self) -> RolloutResult:
        """Run to the end; see the module docstring for errors and cancellation."""
        machine = self._m
        self._clock = loop_clock()
        self._checkpoint = loop_checkpoint()
        # The backend's own class: anyio.CancelScope(...) asks which backend runs on every call.
        self._scope = type(anyio.CancelScope())
        self._timer.clock = self._clock
        # Before anything changes: a query the metric server rejects stops the rollout here.
        analyses = analyses_of(self._rollout.steps, self._rollout.analysis, self._rollout.strategy)
        await self._steps.measurer.prepare(analyses)
        machine.start(self._clock(), time.time())
        self._flush()
        await under_lock(self._rollout.lock, self._run_locked, self._lost)
        result = machine.result
        assert result is not None  # noqa: S101 - every path above ends the machine
        await self._after_rollout(result)
        if self._errors:
            raise one_error(self._errors)
        return result

    def _lost(self, exc: Exception) -> None:
        if self._m.result is None:
            self._m.now = self._clock()
            self._error(exc)

    async def _run_locked(self) -> None:
        machine = self._m
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._cancel_watcher)
                self._timer.on = True  # before any call can start: see EffectTimer.on
                tg.start_soon(self._timer.run)
                if self._rollout.progress_deadline is not None:
                    tg.start_soon(watch_progress, machine, self._clock, self._flush)
                try:
                    await self._main()
                except Exception as exc:  # noqa: BLE001 - kept, raised by run() once units settle
                    self._error(exc)
                self._finished = True
                tg.cancel_scope.cancel()
        except anyio.get_cancelled_exc_class():
            # No end record: a cancelled rollout is unfinished, and resumable. A cancellation
            # that comes after the machine ended (its result announced) changes nothing.
            if machine.result is None:
                self._end(RolloutStatus.CANCELLED, "cancelled")
            await self._close_journal()
            raise
        if machine.result is None:
            # An error ended the run before the machine did (fail() halts it otherwise; a
            # rollout ends once, so an error after its end leaves the result as announced).
            first = self._errors[0]
            self._end(RolloutStatus.HALTED, f"error: {type(first).__name__}: {first}")
        await self._close_journal()

    def _end(self, status: RolloutStatus, reason: str) -> None:
        self._m.now = self._clock()
        self._m.finish(status, reason)
        self._flush()

    def _journal_failed_with(self, exc: BaseException) -> bool:
        """Whether ``exc`` is the journal's first error (the one every later write gets)."""
        return self._journal is not None and exc is self._journal.error

    def _error(self, exc: Exception) -> None:
        """Keep an error to raise at the end, and halt: nothing new starts."""
        if self._journal_failed_with(exc) and exc in self._errors:
            return  # a failed journal refuses every later write with its first error
        if isinstance(exc, LockLostError) and any(
            isinstance(e, LockLostError) for e in self._errors
        ):
            return  # every refused journal write says the same: the lock is lost
        self._errors.append(exc)
        if len(self._errors) == 1:
            self._m.fail(f"error: {type(exc).__name__}: {exc}")
            self._flush()

    # ------------------------------------------------------------ events

    def _flush(self) -> None:  # noqa: C901 - one branch per signal, on the hot path
        """Deliver the machine's events and act on its signals."""
        if self._delivering:
            # Called back from an observer (a control call it made, or its own error): the
            # delivery under way hands those events on after its own, so every observer and
            # stream sees them in order, and acts on the signals once it has.
            return
        machine = self._m
        events = machine.drain_events()
        while events:
            self._delivering = True
            try:
                failed = self._delivery.deliver(events)
            finally:
                self._delivering = False
            # Once every stream has these events: the halt's own events come after them.
            for exc in failed:
                self._error(exc)
            events = machine.drain_events()
        signals = machine.take_signals()
        if signals:
            if signals & INTERRUPT:
                for scope in list(self._interruptible):
                    scope.cancel()
            if signals & STEP:
                self._steps.end_step()
            if signals & WAKE:
                self._wake.set()
            if signals & ANALYZE:
                self._steps.toggle_background(self._tg)
        if machine.result is not None and self._delivery.streams:
            self._delivery.end()

    # ---------------------------------------------------------- programs

    async def _main(self) -> None:
        """Drive the machine's main program."""
        machine = self._m
        tg = self._tg
        assert tg is not None  # noqa: S101 - set by _run_locked
        program = machine.main()
        send: Callable[[Any], Any] = program.send
        arg: Any = None
        while True:
            machine.now = self._clock()
            try:
                effect = send(arg)
            except StopIteration:
                return
            finally:
                self._flush()
            send, arg = program.send, None
            if effect is IDLE:
                await self._wake.wait()
                self._wake = anyio.Event()
            elif type(effect) is Spawn:
                for start in effect.units:
                    tg.start_soon(self._worker, start)
            else:
                try:
                    arg = await self._do(effect, math.inf)
                except (Failed, Interrupted) as exc:
                    send, arg = program.throw, exc

    async def _worker(self, start: Start) -> None:
        """Run a unit, then, in the same task, each next unit the machine allows.

        In a sliding window every finished unit frees room for exactly the next one,
        so handing it to the task that just finished saves spawning a task per unit.
        """
        machine = self._m
        unit: Start | None = start
        done = 0
        cancelled = cancel_check()
        try:
            while unit is not None:
                # The unit's program, driven here rather than in a coroutine of its own:
                # one frame fewer per unit.
                program = machine.unit(unit)
                try:
                    successors: list[Start] = await self._drive(
                        program, program.send, None, math.inf
                    )
                except BaseException as exc:
                    await self._interrupt(program, exc, unit)
                    raise
                finally:
                    # Cut short by the clean-up deadline: the program's bookkeeping still runs.
                    program.close()
                unit = None
                if not successors:
                    break
                unit = successors[0]
                if len(successors) > 1:
                    tg = self._tg
                    assert tg is not None  # noqa: S101 - set by _run_locked
                    for other in successors[1:]:
                        tg.start_soon(self._worker, other)
                done += 1
                # A cancellation that came while the unit ran lands now, before the next unit
                # starts; other tasks get their turn at least every _UNITS_PER_CHECKPOINT.
                if done == _UNITS_PER_CHECKPOINT or cancelled(self._clock()):
                    done = 0
                    try:
                        await self._checkpoint()
                    except BaseException:
                        machine.unstart(unit)
                        raise
                # The machine may have stopped since it chose unit (an observer that raised
                # as the last unit's events went out, others during the checkpoint).
                if not machine.go_on(unit):
                    unit = None
        except Exception as exc:  # noqa: BLE001 - kept, raised by run() once units settle
            self._error(exc)
            # Its program ended without asking for successors, which is what wakes the main
            # program when a unit ends: wake it here, or it waits forever for this unit once
            # an earlier error has already halted the run (a lost lock fails every unit).
            machine.signal(WAKE)
        finally:
            self._flush()

    async def _interrupt(
        self, program: Program, exc: BaseException, unit: Start | None = None
    ) -> None:
        """A unit's task is being cancelled: let its program put things back, shielded."""
        # After a lost lock every journal write is refused, so nothing may be put back (the
        # controller holding the lock now does that): the program is only closed. The same
        # goes after the journal failed: write-ahead, no effect may start unannounced.
        lost = isinstance(exc, LockLostError) or self._journal_failed_with(exc)
        if lost and unit is not None and unit.slot.outcome is InstanceOutcome.IN_PROGRESS:
            # Stopped by that error, not by the clean-up deadline: its result says so.
            unit.slot.reason = unit.slot.reason or f"interrupted: {type(exc).__name__}: {exc}"
        if inspect.getgeneratorstate(program) == inspect.GEN_SUSPENDED and not lost:
            # Cancelled in a wait: put things back under a shield before it goes on.
            with anyio.CancelScope(shield=True) as scope:
                window = self._clock() + self._cleanup_timeout
                scope.deadline = window
                await self._drive(program, program.throw, Interrupted(), window)

    async def _drive(
        self, program: Program, send: Callable[[Any], Any], arg: Any, window: float
    ) -> Any:
        """Drive a unit program to its end; ``window`` bounds calls once cancelling."""
        machine = self._m
        clock = self._clock
        while True:
            machine.now = clock()
            try:
                effect = send(arg)
            except StopIteration as stop:
                if machine.pending:
                    self._flush()
                return stop.value
            if machine.pending:
                self._flush()
            send = program.send
            try:
                if type(effect) is Call:  # most effects: skip the dispatch
                    arg = await self._call(effect, window)
                else:
                    arg = await self._do(effect, window)
            except Failed as exc:
                send, arg = program.throw, exc
                if self._cancelling and window == math.inf:
                    # Cut by the clean-up deadline: putting things back gets its own time.
                    window = clock() + self._cleanup_timeout
            except Interrupted as exc:
                send, arg = program.throw, exc

    # ----------------------------------------------------------- effects

    async def _do(self, effect: object, window: float) -> Any:  # noqa: C901, PLR0911, PLR0912 - one branch per effect kind
        if isinstance(effect, Call):
            return await self._call(effect, window)
        if isinstance(effect, Record):
            assert self._journal is not None  # noqa: S101 - the machine journals only with one
            await self._journal.write(effect)
            return None
        if isinstance(effect, WaitReady):
            check, readiness = self._check, self._readiness
            outcome = await self._wait(
                wait_ready(check, effect.instance, readiness), effect.interruptible
            )
            return outcome.ready, outcome.reason
        if isinstance(effect, Sleep):
            return await self._wait(anyio.sleep(effect.seconds), effect.interruptible)
        if isinstance(effect, Probe):
            check = self._check
            assert check is not None  # noqa: S101 - the machine probes only with a check
            with anyio.CancelScope(shield=True):
                return (await probe_once(check, effect.instance, self._readiness.timeout)).healthy
        if isinstance(effect, Survey):
            return await self._survey(effect.instances)
        if isinstance(effect, ListInstances):
            return await self._list_instances()
        if isinstance(effect, LoadJournal):
            assert self._journal is not None  # noqa: S101 - asked only with a journal
            return await self._journal.load()
        if isinstance(effect, WaitStep):
            return await self._steps.wait_step(effect)
        if isinstance(effect, CheckGate):
            return await self._steps.check_gate(effect)
        if isinstance(effect, RunAnalysis):
            return await self._steps.run_analysis(effect)
        if isinstance(effect, SetFlagValue):
            return await self._steps.set_flag(effect)
        if isinstance(effect, Together):
            return await self._together(effect.programs)
        msg = f"unknown effect {effect!r}"  # pragma: no cover - every kind is handled above
        raise AssertionError(msg)  # pragma: no cover

    async def _together(self, programs: Sequence[Program]) -> list[Any]:
        """Drive ``programs`` side by side; their return values, in order."""
        results: list[Any] = [None] * len(programs)

        async def one(index: int, program: Program) -> None:
            try:
                try:
                    results[index] = await self._drive(program, program.send, None, math.inf)
                except BaseException as exc:
                    await self._interrupt(program, exc)
                    raise
                finally:
                    program.close()
            except Exception as exc:  # noqa: BLE001 - kept, raised by run() once units settle
                self._error(exc)
            finally:
                self._flush()

        async with anyio.create_task_group() as tg:
            for index, program in enumerate(programs):
                tg.start_soon(one, index, program)
        return results

    async def _call(self, effect: Call, window: float) -> Any:
        """Run one driver, router or hook call to completion, shielded and bounded."""
        fn = self._calls[effect.op]
        timeout = self._effect_timeout
        limit = self._clock() + timeout
        entry: Deadline | None = None
        timer = self._timer
        with self._scope(shield=True) as scope:
            if self._cancelling:
                scope.deadline = min(
                    limit, self._cleanup_deadline if window == math.inf else window
                )
            elif timer.on:
                # One timer for every call of the run, not one per call: see rolling._timers.
                entry = [limit, scope]
                timer.deadlines.append(entry)
            else:
                scope.deadline = limit
            try:
                answer = await fn(*effect.args)
            except Exception as exc:
                msg = f"{effect.what} raised {type(exc).__name__}: {exc}"
                raise Failed(msg) from exc
            except BaseException as exc:
                if not raised_by_itself(exc, scope):
                    raise
                msg = f"{effect.what} raised {type(exc).__name__}: {exc}"
                raise Failed(msg) from exc
            else:
                return checked_answer(effect, answer)
            finally:
                if entry is not None:
                    entry[SCOPE] = None
                    deadlines = timer.deadlines
                    while deadlines and deadlines[0][SCOPE] is None:
                        deadlines.popleft()
        if scope.deadline < limit:
            msg = f"cancelled: {effect.what} was cut after cleanup_timeout={self._cleanup_timeout}s"
            raise Failed(msg)
        msg = f"{effect.what} did not return within {timeout}s"
        raise Failed(msg)

    async def _list_instances(self) -> Any:
        """Ask the driver for its fleet, bounded by ``effect_timeout``.

        Not shielded, unlike the other calls: it changes nothing, and a run cancelled
        before it returns never knew the fleet. Past the bound, run() raises TimeoutError
        (the driver's own errors, its own TimeoutError too, come out as themselves).
        """
        timeout = self._effect_timeout
        with self._scope(deadline=self._clock() + timeout):
            return await self._rollout.driver.list_instances()
        # Only its own deadline ends the scope without a return: a cancellation goes on.
        msg = f"driver.list_instances did not return within {timeout}s (effect_timeout)"
        raise TimeoutError(msg)

    async def _wait(self, awaitable: Any, interruptible: bool) -> Any:  # noqa: FBT001 - internal
        """Await a wait; a trigger interrupts it when ``interruptible`` (cancellation always)."""
        if not interruptible:
            return await awaitable
        if not self._m.interruptible:
            # A trigger fired after the wait was asked for, before it began (an observer's
            # abort as the unit's phase went out): it is interrupted at once, as it would be
            # a moment later.
            close = getattr(awaitable, "close", None)
            if close is not None:
                close()  # never awaited: no "coroutine was never awaited" warning
            raise Interrupted
        with anyio.CancelScope() as scope:
            self._interruptible.add(scope)
            try:
                return await awaitable
            finally:
                self._interruptible.discard(scope)
        raise Interrupted

    async def _survey(self, instances: Sequence[Any]) -> list[bool]:
        check = self._check
        assert check is not None  # noqa: S101 - the machine surveys only with a check
        healthy = [True] * len(instances)
        timeout = self._readiness.timeout
        indices = iter(range(len(instances)))

        async def worker() -> None:
            for index in indices:
                healthy[index] = (await probe_once(check, instances[index], timeout)).healthy

        async with anyio.create_task_group() as tg:
            for _ in range(min(_SURVEY_WORKERS, len(instances))):
                tg.start_soon(worker)
        return healthy

    # ------------------------------------------------------------ timers

    async def _cancel_watcher(self) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            if not self._finished:
                # The run is being cancelled: shielded calls get a short leash from now on.
                self._cancelling = True
                self._cleanup_deadline = self._clock() + self._cleanup_timeout
                self._timer.cut(self._cleanup_deadline)

    # ------------------------------------------------------------ the end

    async def _after_rollout(self, result: RolloutResult) -> None:
        if "after_rollout" not in self._calls:
            return
        try:
            effect = Call("after_rollout", (result,), "hook after_rollout")
            await self._call(effect, math.inf)
        except Failed as exc:
            self._rollout.logger.warning("after_rollout hook failed: %s", exc.reason)

    async def _close_journal(self) -> None:
        if self._journal is not None:
            await self._journal.close()

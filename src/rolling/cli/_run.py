"""``rolling run FILE --to VERSION``: one rollout from a file, with its exit status."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any, TextIO

import anyio

from rolling import (
    ConfigError,
    FileJournal,
    InstanceOutcome,
    RollingError,
    Rollout,
    RolloutHandle,
    RolloutResult,
    RolloutStatus,
)
from rolling.plugins import planning
from rolling.routers.balancer import Balancer
from rolling.testing import SimulatedFleet

from ._control import ControlUnavailableError, open_control, serve_control
from ._file import RolloutFile, checkable
from ._output import Output, events_log
from ._plan import Plan, learned_durations, make_plan

__all__ = ["EXIT", "bad_file", "plan_file", "run_file"]

EXIT: dict[str, int] = {
    "succeeded": 0,
    "rolled_back": 1,
    "degraded": 2,
    "halted": 3,
    "aborted": 4,
    "failed": 5,
    "usage": 64,
    "bad_configuration": 78,
    "interrupted": 130,
}
"""Exit statuses of ``rolling run``, by outcome (docs/cli.md has the table)."""


_BY_STATUS = {
    RolloutStatus.SUCCEEDED: "succeeded",
    RolloutStatus.DEGRADED: "degraded",
    RolloutStatus.ROLLED_BACK: "rolled_back",
    RolloutStatus.HALTED: "halted",
    RolloutStatus.ABORTED: "aborted",
    RolloutStatus.CANCELLED: "interrupted",
}


async def _enter(stack: contextlib.AsyncExitStack, built: Any) -> Any:
    """What a plugin factory built, entered for the run when it is an async context manager."""
    if hasattr(built, "__aenter__") and hasattr(built, "__aexit__"):
        return await stack.enter_async_context(built)
    return built


def _summary(
    result: RolloutResult | None, outcome: str, seconds: float
) -> tuple[str, dict[str, Any]]:
    if result is None:
        return f"rolling run: {outcome.replace('_', ' ')} after {seconds:.1f} s", {
            "outcome": outcome,
            "exit_code": EXIT[outcome],
        }
    counts: dict[str, int] = {}
    for instance in result.instances:
        counts[instance.outcome.value] = counts.get(instance.outcome.value, 0) + 1
    by_outcome = ", ".join(f"{n} {o}" for o, n in sorted(counts.items()))
    why = f": {result.reason}" if result.reason else ""
    if result.status is RolloutStatus.DEGRADED:
        why += _failures(result)
    line = (
        f"rolling run: {outcome.replace('_', ' ')} ({result.target}) in"
        f" {result.finished_at - result.started_at:.1f} s; {by_outcome or 'no instances'}{why}"
    )
    return line, {"outcome": outcome, "exit_code": EXIT[outcome], "status": result.status.value}


_NAMED = 5
"""Failures a summary names one by one; it counts the others."""


def _failures(result: RolloutResult) -> str:
    """``; failed: i-001 (why), i-003 (why)``: the failures a degraded run finished with."""
    failed = [i for i in result.instances if i.outcome is InstanceOutcome.FAILED]
    named = ", ".join(f"{i.id} ({i.reason or 'no reason given'})" for i in failed[:_NAMED])
    more = f" and {len(failed) - _NAMED} more" if len(failed) > _NAMED else ""
    return f"; failed: {named}{more}" if failed else ""


async def run_file(rollout_file: RolloutFile, target: str, *, json: bool, out: TextIO) -> int:
    """Run the rollout the file describes and return the exit status.

    SIGINT and SIGTERM interrupt it: the rollout's clean-up puts in-flight work
    back, the plugins are left (processes kept or stopped as configured) and
    the status is 130.
    """
    output = Output(out=out, json=json, live=out.isatty() and not json, redact=rollout_file.redact)
    started = anyio.current_time()
    result: RolloutResult | None = None
    outcome = "failed"
    interrupted = False
    handles: list[RolloutHandle] = []
    error: str | None = None
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with anyio.create_task_group() as outer:
            run_scope = anyio.CancelScope()

            async def watch() -> None:
                nonlocal interrupted
                async for _ in signals:
                    interrupted = True
                    run_scope.cancel()
                    return

            outer.start_soon(watch)
            try:
                with run_scope:
                    result = await _run(rollout_file, target, output, handles)
            except Exception as exc:  # noqa: BLE001 - a plugin's own error ends the run: say it, exit 5
                # The task groups around the run wrap what ended it: say the error itself.
                cause = _the_error(exc)
                if isinstance(cause, ConfigError):
                    error = f"{rollout_file.path}: {cause}"
                    outcome = "bad_configuration"
                elif isinstance(cause, ControlUnavailableError):
                    error = str(cause)
                else:
                    error = f"{type(cause).__name__}: {cause}"
            outer.cancel_scope.cancel()
    if result is None and handles:
        with contextlib.suppress(RollingError):
            result = handles[0].result
    # A run that an error ended (its result says halted) exits as the table says: 5 for an
    # error, 78 for an option the library refuses once it knows the fleet.
    outcome = _outcome(outcome, None if error else result, interrupted=interrupted)
    line, extra = _summary(result, outcome, anyio.current_time() - started)
    if error is not None:
        extra["error"] = rollout_file.redact(error)
        print(f"rolling run: {extra['error']}", file=sys.stderr)  # noqa: T201 - CLI output
    output.finish(line, extra)
    if json:  # a person watching a JSON run sees it too, with the secrets hidden as in the JSON
        print(rollout_file.redact(line), file=sys.stderr)  # noqa: T201 - CLI output
    return EXIT[outcome]


def bad_file(error: str, *, json: bool, out: TextIO) -> int:
    """``rolling run`` on a file that did not load: the error, and with ``json`` the exit object.

    ``error`` names the file (and hides the secrets) already.
    """
    print(f"rolling run: {error}", file=sys.stderr)  # noqa: T201 - CLI output
    if json:  # a pipeline reading stdout learns why, as from any other run's last line
        line, extra = _summary(None, "bad_configuration", 0.0)
        Output(out=out, json=True, live=False, redact=str).finish(line, {**extra, "error": error})
        print(line, file=sys.stderr)  # noqa: T201 - as after any other run with --json
    return EXIT["bad_configuration"]


async def plan_file(
    rollout_file: RolloutFile, target: str, *, history: Path | None, estimate: float
) -> Plan:
    """Enter the driver only to list the fleet, and plan: no other call reaches the fleet.

    Raises:
        ConfigError: An option the library refuses with this driver.
    """
    planning(set_to=True)  # for this task and what it starts: entering changes nothing
    async with contextlib.AsyncExitStack() as stack:
        driver = await _enter(stack, rollout_file.driver.built)
        # The router, never entered: a canary's Rollout asks it for weights.
        router = checkable(rollout_file.router, "attach", SimulatedFleet(1))
        rollout: Rollout[Any] = Rollout(driver, target, router=router, **rollout_file.options)
        with _bounded(rollout.effect_timeout, "the driver's list_instances()"):
            instances = await driver.list_instances()
    if history is None and rollout_file.journal is not None:
        history = events_log(rollout_file.journal)
    durations = {} if history is None else learned_durations(history)
    return make_plan(rollout, instances, durations=durations, estimate=estimate)


def _the_error(exc: BaseException) -> BaseException:
    """``exc``, or the one error an exception group (of groups) of one holds."""
    found = exc
    while issubclass(type(found), BaseExceptionGroup):
        members: tuple[BaseException, ...] = getattr(found, "exceptions", ())
        if len(members) != 1:
            break
        found = members[0]
    return found


def _outcome(outcome: str, result: RolloutResult | None, *, interrupted: bool) -> str:
    if interrupted:
        return "interrupted"
    # A ConfigError that run() raised once the fleet was listed (Advance targets that go
    # back for this fleet size) is bad configuration, exit 78, whatever status it halted in.
    if outcome == "bad_configuration":
        return outcome
    if result is not None:
        return _BY_STATUS.get(result.status, "failed")
    return outcome


async def _run(
    rollout_file: RolloutFile, target: str, output: Output, handles: list[RolloutHandle]
) -> RolloutResult:
    """Open the control socket, enter the plugins, run; the handle goes in ``handles``."""
    async with contextlib.AsyncExitStack() as stack:
        listener = await open_control(rollout_file.control)
        stack.push_async_callback(_close_control, listener, rollout_file)
        if rollout_file.journal is not None:
            path = events_log(rollout_file.journal)
            output.log = stack.enter_context(await anyio.to_thread.run_sync(_open_log, path))
            stack.callback(setattr, output, "log", None)  # runs first: nothing writes to it closed
        driver = await _enter(stack, rollout_file.driver.built)
        router = (
            None if rollout_file.router is None else await _enter(stack, rollout_file.router.built)
        )
        journal = None if rollout_file.journal is None else FileJournal(rollout_file.journal)
        rollout: Rollout[Any] = Rollout(
            driver,
            target,
            router=router,
            journal=journal,
            observers=[output],
            **rollout_file.options,
        )
        if isinstance(router, Balancer) and not router.backends:
            await _serve_the_fleet(router, driver, rollout.effect_timeout)
        # The rollout outermost: start() raises its error as itself (a ConfigError that
        # run() found once the fleet was listed is exit 78), where a task group around it
        # would wrap it in an ExceptionGroup.
        async with rollout.start() as handle, anyio.create_task_group() as control:
            handles.append(handle)
            control.start_soon(serve_control, listener, handle, rollout_file.redact)
            await handle.wait()
            control.cancel_scope.cancel()
        return handle.result


async def _serve_the_fleet(balancer: Balancer, driver: Any, bound: float) -> None:
    """Put the fleet behind the `balancer` plugin's new, empty balancer.

    The engine takes every instance it finds as in traffic (a real router already has the
    fleet); the built-in balancer starts each run empty, so without this the old set would
    get no request until it is replaced, and a canary's share would be all of them.
    Each call is bounded by ``effect_timeout``, as the engine bounds its own.
    """
    with _bounded(bound, "the driver's list_instances()"):
        instances = await driver.list_instances()
    for instance in instances:
        with _bounded(bound, f"the balancer's attach({instance.id})"):
            await balancer.attach(instance)


@contextlib.contextmanager
def _bounded(seconds: float, what: str) -> Generator[None]:
    """``seconds`` for a plugin call the command makes itself, with an error that says which."""
    with anyio.move_on_after(seconds) as scope:
        yield
    if scope.cancelled_caught:
        raise TimeoutError(f"{what} did not answer in {seconds:g} s (effect_timeout)")


def _open_log(path: Path) -> TextIO:
    """The events log, opened to append; mode 0600 like the journal beside it.

    A run killed mid-write leaves a torn last line: it is ended first, so that it stays one
    line the readers skip and does not swallow this run's first event.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        end = os.lseek(fd, 0, os.SEEK_END)
        if end and os.pread(fd, 1, end - 1) != b"\n":
            os.write(fd, b"\n")
    except OSError:
        os.close(fd)
        raise
    return os.fdopen(fd, "a", encoding="utf-8")


async def _close_control(listener: Any, rollout_file: RolloutFile) -> None:
    with anyio.CancelScope(shield=True):
        await listener.aclose()
    with contextlib.suppress(FileNotFoundError):
        rollout_file.control.unlink()

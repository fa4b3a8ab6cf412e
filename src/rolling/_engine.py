"""The public entry points: :class:`Rollout`, its control handle and status snapshots."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from typing import Any, Generic

import anyio
import attrs

from ._errors import ConfigError, ControlError, RolloutAlreadyStartedError
from ._execution import Execution
from ._journal import FileJournal
from ._lock import FileLock
from ._policies import (
    DeadlineAction,
    FailurePolicy,
    Order,
    ProgressDeadline,
    Readiness,
    RollbackMode,
    Waves,
)
from ._result import InstanceOutcome, RolloutResult, RolloutStatus
from ._steps import Advance, Gate, Pause, Step
from ._strategy import Batches, ResolvedWindow, RollingUpdate
from ._validate import percent_of
from .events import Event
from .health import CheckFunction, as_check_function
from .typing import HOOK_NAMES, Driver, ElasticDriver, InstanceT, Journal, Lock, Observer, Router

__all__ = ["Rollout", "RolloutHandle", "RolloutSnapshot"]


def _has(obj: object, name: str) -> bool:
    return callable(getattr(obj, name, None))


class Rollout(Generic[InstanceT]):
    """A rollout of ``target`` over the fleet a driver manages.

    Everything is validated here, before any driver call; an invalid setting
    raises :class:`~rolling.ConfigError` naming the field and the fix. A
    ``Rollout`` runs once: ``await rollout.run()`` for the result, or
    ``async with rollout.start() as handle:`` to control it while it runs.

    Args:
        driver: A :class:`~rolling.typing.Driver` (in place), an
            :class:`~rolling.typing.ElasticDriver` (launch and terminate), or both.
        target: The version to roll out.
        strategy: :class:`~rolling.RollingUpdate` (default: one at a time) or
            :class:`~rolling.Batches`.
        readiness: How a new instance proves ready; its ``check`` also finds
            instances that are unhealthy before the rollout (they go first).
        router: Where traffic goes; without one, detach and attach are no-ops.
        failure: Retries and failure budgets.
        rollback: ``"revert"`` (default) or ``"halt"``, when a trigger fires.
        progress_deadline: Seconds (action: roll back) or a
            :class:`~rolling.ProgressDeadline`.
        steps: :class:`~rolling.Advance`, :class:`~rolling.Pause` and
            :class:`~rolling.Gate` steps, in order.
        order: The order instances are updated in.
        waves: Failure domains, one finished before the next starts.
        hooks: An object with any of the :class:`~rolling.Hooks` methods.
        observers: Sync callables that receive every event.
        effect_timeout: Longest a driver, router or hook call may take; past
            it the attempt fails.
        cleanup_timeout: Longest the shielded clean-up may take once the run
            is cancelled.
        seed: Seed for back-off jitter.
        journal: Where to record every change, so a rollout that dies can be
            resumed by running the same rollout again on the same journal.
        lock: Keeps a second controller off the fleet; defaults to a
            :class:`~rolling.FileLock` next to a :class:`~rolling.FileJournal`.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        driver: Driver[InstanceT] | ElasticDriver[InstanceT],
        target: str,
        *,
        strategy: RollingUpdate | Batches | None = None,
        readiness: Readiness | None = None,
        router: Router[InstanceT] | None = None,
        failure: FailurePolicy | None = None,
        rollback: RollbackMode | str = RollbackMode.REVERT,
        progress_deadline: ProgressDeadline | float | None = None,
        steps: Sequence[Step] = (),
        order: Order | None = None,
        waves: Waves | None = None,
        hooks: object = None,
        observers: Iterable[Observer] = (),
        effect_timeout: float = 600.0,
        cleanup_timeout: float = 60.0,
        seed: int | None = None,
        journal: Journal | None = None,
        lock: Lock | None = None,
    ) -> None:
        if not _is_nonempty_str(target):
            raise ConfigError(
                "Rollout.target",
                f"expected a non-empty str, got {target!r}",
                'pass the version, such as "v2"',
            )
        self.can_replace, self.can_launch = _capabilities(driver)
        self.strategy: RollingUpdate | Batches = _typed(
            "Rollout.strategy",
            strategy,
            RollingUpdate | Batches,
            RollingUpdate(),
            "pass rolling.RollingUpdate(...) or rolling.Batches(...)",
        )
        if self.strategy.wants_surge and not self.can_launch:
            surge_field = (
                "RollingUpdate.max_surge"
                if isinstance(self.strategy, RollingUpdate)
                else "Batches.surge"
            )
            raise ConfigError(
                surge_field,
                f"surge adds instances, but {type(driver).__name__}"
                " cannot launch() and terminate()",
                "set it to 0 / False, or use an elastic driver",
            )
        self.readiness: Readiness = _typed(
            "Rollout.readiness", readiness, Readiness, Readiness(), "pass rolling.Readiness(...)"
        )
        if router is not None and not (_has(router, "attach") and _has(router, "detach")):
            raise ConfigError(
                "Rollout.router",
                f"{type(router).__name__} lacks attach() and detach()",
                "implement rolling.typing.Router, or pass None for no traffic control",
            )
        self.failure: FailurePolicy = _typed(
            "Rollout.failure",
            failure,
            FailurePolicy,
            FailurePolicy(),
            "pass rolling.FailurePolicy(...)",
        )
        if self.failure.max_failed_per_batch is not None and not isinstance(self.strategy, Batches):
            raise ConfigError(
                "FailurePolicy.max_failed_per_batch",
                "applies to Batches only, and the strategy is a RollingUpdate",
                "use max_failed for a sliding window, or switch to Batches",
            )
        try:
            self.rollback = RollbackMode(rollback)
        except ValueError:
            raise ConfigError(
                "Rollout.rollback", f"unknown mode {rollback!r}", 'pass "revert" or "halt"'
            ) from None
        self.progress_deadline = _deadline(progress_deadline)
        self.steps: tuple[Step, ...] = _steps(steps)
        self.order: Order = _typed(
            "Rollout.order", order, Order, Order(), "pass Order.sorted(), Order.shuffled(seed) ..."
        )
        self.waves: Waves | None = _typed(
            "Rollout.waves", waves, Waves, None, "pass rolling.Waves(key=lambda i: i.zone)"
        )
        self.hook_methods: dict[str, Callable[..., Any]] = _hook_methods(hooks)
        """The hook methods found on ``hooks``, by name."""
        self.observers: tuple[Observer, ...] = tuple(observers)
        for index, observer in enumerate(self.observers):
            if not callable(observer):
                raise ConfigError(
                    f"Rollout.observers[{index}]",
                    f"{observer!r} is not callable",
                    "pass functions that take an event",
                )
        _check_timeout("Rollout.effect_timeout", effect_timeout)
        _check_timeout("Rollout.cleanup_timeout", cleanup_timeout)
        self.driver = driver
        self.target = target
        self.router = router
        self.hooks = hooks
        self.effect_timeout = float(effect_timeout)
        self.cleanup_timeout = float(cleanup_timeout)
        self.seed = seed
        self.journal = _typed(
            "Rollout.journal", journal, Journal, None, "pass rolling.FileJournal(path) or None"
        )
        if lock is None and isinstance(self.journal, FileJournal):
            # One controller per journal: the lock sits next to it unless told otherwise.
            lock = FileLock(self.journal.path.with_name(self.journal.path.name + ".lock"))
        self.lock: Lock | None = _typed(
            "Rollout.lock", lock, Lock, None, "pass rolling.FileLock(path), a Lock, or None"
        )
        self.check_function: CheckFunction | None = as_check_function(self.readiness.check)
        self.logger = logging.getLogger("rolling")
        self._started = False

    def _claim(self) -> None:
        if self._started:
            raise RolloutAlreadyStartedError(
                "this Rollout already ran; build a new Rollout to run again"
            )
        self._started = True

    @property
    def surge_enabled(self) -> bool:
        """Whether this rollout may launch instances before taking old ones out."""
        return self.strategy.wants_surge and self.can_launch

    def window(self, desired: int) -> ResolvedWindow:
        """The availability budget for a fleet of ``desired`` instances.

        For :class:`~rolling.Batches`, ``max_unavailable`` is the largest batch
        (or, with ``surge=True``, ``max_surge`` is).
        """
        if isinstance(self.strategy, RollingUpdate):
            return self.strategy.resolve(desired)
        largest = max(self.strategy.resolve(desired), default=0)
        if self.strategy.surge:
            return ResolvedWindow(desired=desired, max_unavailable=0, max_surge=largest)
        return ResolvedWindow(desired=desired, max_unavailable=largest, max_surge=0)

    async def run(self) -> RolloutResult:
        """Run the rollout to its end and return what happened.

        Cancelling the task that awaits this leaves the fleet consistent:
        in-flight work is finished or put back under a shielded clean-up
        bounded by ``cleanup_timeout``, then the cancellation propagates.
        """
        self._claim()
        return await Execution(self).run()

    @contextlib.asynccontextmanager
    async def start(self) -> AsyncGenerator[RolloutHandle, None]:
        """Start the rollout in the background and yield a :class:`RolloutHandle`.

        Leaving the ``async with`` block waits for the rollout to end; an
        exception in the block cancels it (with the same clean-up as
        cancelling :meth:`run`).
        """
        self._claim()
        execution = Execution(self)
        handle = RolloutHandle(execution)
        async with anyio.create_task_group() as tg:
            tg.start_soon(handle._run)  # noqa: SLF001  # pyright: ignore[reportPrivateUsage] - the handle and the rollout are one unit
            yield handle


def _is_nonempty_str(value: object) -> bool:
    """Whether ``value`` is a non-empty str (annotations do not stop callers passing others)."""
    return isinstance(value, str) and bool(value)


def _check_timeout(field: str, value: object) -> None:
    """Check that ``value`` is a number of seconds above zero."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(field, f"must be a number > 0, got {value!r}", "pass seconds, such as 60")


def _capabilities(driver: object) -> tuple[bool, bool]:
    """Whether ``driver`` can replace, and whether it can launch and terminate."""
    if not _has(driver, "list_instances"):
        raise ConfigError(
            "Rollout.driver",
            f"{type(driver).__name__} has no list_instances() method",
            "implement rolling.typing.Driver or rolling.typing.ElasticDriver",
        )
    can_replace = _has(driver, "replace")
    can_launch = _has(driver, "launch") and _has(driver, "terminate")
    if not (can_replace or can_launch):
        raise ConfigError(
            "Rollout.driver",
            f"{type(driver).__name__} has neither replace() nor launch() and terminate()",
            "implement replace(instance, version), or launch(version) and terminate(instance)",
        )
    return can_replace, can_launch


def _typed(field: str, value: Any, kind: Any, default: Any, fix: str) -> Any:
    """Return ``value`` (or ``default`` for None) after checking it is a ``kind``."""
    if value is None:
        return default
    if not isinstance(value, kind):
        raise ConfigError(field, f"got {value!r}, of the wrong type", fix)
    return value


def _hook_methods(hooks: object) -> dict[str, Callable[..., Any]]:
    methods: dict[str, Callable[..., Any]] = {}
    if hooks is None:
        return methods
    for name in HOOK_NAMES:
        method = getattr(hooks, name, None)
        if method is None:
            continue
        if not callable(method):
            raise ConfigError(f"Rollout.hooks.{name}", "is not callable", "make it an async method")
        methods[name] = method
    return methods


def _deadline(value: ProgressDeadline | float | None) -> ProgressDeadline | None:
    if value is None or isinstance(value, ProgressDeadline):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(
            "Rollout.progress_deadline",
            f"expected seconds or a ProgressDeadline, got {value!r}",
            'pass 600 or ProgressDeadline(600, action="report")',
        )
    return ProgressDeadline(float(value), DeadlineAction.ROLLBACK)


def _check_advances(steps: tuple[Step, ...]) -> None:
    """Advance targets of one kind (counts, or percentages) must not go back."""
    last: dict[type, float] = {}
    for index, step in enumerate(steps):
        if not isinstance(step, Advance):
            continue
        value = step.to if isinstance(step.to, int) else float(percent_of(step.to))
        kind = type(step.to)
        if kind in last and value < last[kind]:
            raise ConfigError(
                f"Rollout.steps[{index}]",
                f"Advance({step.to!r}) goes back from an earlier Advance",
                "list Advance targets in increasing order",
            )
        last[kind] = value


def _steps(steps: Sequence[Step]) -> tuple[Step, ...]:
    if isinstance(steps, Advance | Pause | Gate):
        raise ConfigError(
            "Rollout.steps",
            "expected a sequence of steps, got a single step",
            "wrap it in a list: steps=[...]",
        )
    result = tuple(steps)
    for index, step in enumerate(result):
        if not isinstance(step, Advance | Pause | Gate):
            raise ConfigError(
                f"Rollout.steps[{index}]",
                f"expected Advance, Pause or Gate, got {step!r}",
                "build steps with rolling.Advance, rolling.Pause and rolling.Gate",
            )
    _check_advances(result)
    return result


@attrs.frozen(kw_only=True)
class RolloutSnapshot:
    """Where a rollout is, at one moment.

    Attributes:
        status: The rollout's status.
        target: The version being rolled out.
        reason: Why it is stopping or stopped, if it is.
        counts: Instances by outcome so far.
        in_flight: Ids of instances being worked on.
        paused: Whether :meth:`RolloutHandle.pause` is in force.
        step: The pause or gate being waited on, if any.
        elapsed: Seconds since the start, on the event loop's clock.

    .. versionadded:: 0.1.0
    """

    status: RolloutStatus
    target: str
    reason: str
    counts: dict[InstanceOutcome, int]
    in_flight: tuple[str, ...]
    paused: bool
    step: Step | None
    elapsed: float


class RolloutHandle:
    """Controls a running rollout; every method may be called from any task.

    .. versionadded:: 0.1.0
    """

    def __init__(self, execution: Execution) -> None:
        self._execution = execution
        self._done = anyio.Event()
        self._result: RolloutResult | None = None
        self._started_at = anyio.current_time()

    async def _run(self) -> None:
        try:
            self._result = await self._execution.run()
        finally:
            self._result = self._execution.result
            self._done.set()

    @property
    def result(self) -> RolloutResult:
        """The result, once the rollout has ended.

        Raises:
            ControlError: The rollout has not ended yet.
        """
        if self._result is None:
            raise ControlError("the rollout has not finished; await handle.wait() first")
        return self._result

    async def wait(self) -> RolloutResult:
        """Wait for the rollout to end and return its result."""
        await self._done.wait()
        return self.result

    def pause(self) -> None:
        """Start no new instance until :meth:`resume`; work in flight finishes."""
        self._check_running("pause")
        self._execution.pause()

    def resume(self) -> None:
        """Undo :meth:`pause`."""
        self._check_running("resume")
        self._execution.resume()

    def abort(self, *, rollback: bool = True) -> None:
        """Stop the rollout; revert what it changed unless ``rollback=False``.

        Waits in flight (readiness, back-off, pauses, gates) are interrupted;
        driver calls in flight finish. The result's status is ``ABORTED``.
        """
        self._check_running("abort")
        self._execution.abort(rollback=rollback)

    def promote(self, *, full: bool = False) -> None:
        """End the current :class:`~rolling.Pause` or :class:`~rolling.Gate` step.

        With ``full=True``, skip every pause and gate left as well.

        Raises:
            ControlError: ``full`` is false and no pause or gate is running.
        """
        self._check_running("promote")
        if not self._execution.promote(full=full):
            raise ControlError(
                "nothing to promote: no Pause or Gate step is running;"
                " use full=True to skip all that remain"
            )

    def status(self) -> RolloutSnapshot:
        """A snapshot of where the rollout is."""
        execution = self._execution
        return RolloutSnapshot(
            status=execution.status,
            target=execution.target,
            reason=execution.stop_reason,
            counts=execution.snapshot_counts(),
            in_flight=execution.in_flight(),
            paused=execution.paused,
            step=execution.current_step,
            elapsed=anyio.current_time() - self._started_at,
        )

    def events(self) -> anyio.abc.ObjectReceiveStream[Event]:
        """A stream of every event from now on, ending after :class:`~rolling.RolloutFinished`.

        Call it before the block's first ``await`` to see the whole rollout.
        Use as ``async with handle.events() as stream: async for event in stream``.
        """
        return self._execution.subscribe()

    def _check_running(self, action: str) -> None:
        if self._execution.result is not None:
            raise ControlError(f"cannot {action}: the rollout has already finished")

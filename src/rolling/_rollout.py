"""The public entry point: :class:`Rollout`, its configuration checked once."""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from typing import Any, Generic, cast

import anyio

from ._analysis import Analysis
from ._errors import ConfigError, RolloutAlreadyStartedError, one_error
from ._flagging import FlagRules, check_steps_have_setters
from ._handle import RolloutHandle
from ._journal import FileJournal
from ._lock import FileLock
from ._machine import Machine
from ._policies import (
    DeadlineAction,
    FailurePolicy,
    Order,
    ProgressDeadline,
    Readiness,
    RollbackMode,
    Waves,
)
from ._result import RolloutResult
from ._runner import Runner
from ._settings import Settings, check_fleet, check_steps
from ._steps import Advance, Analyze, Gate, Pause, SetCanaryScale, SetFlag, SetWeight, Step
from ._strategy import Batches, BlueGreen, Canary, ResolvedWindow, RollingUpdate, Strategy
from .health import CheckFunction, as_check_function
from .typing import HOOK_NAMES, Driver, ElasticDriver, InstanceT, Journal, Lock, Observer, Router
from .validate import check_seconds

__all__ = ["Rollout"]


def _has(obj: object, name: str) -> bool:
    return callable(getattr(obj, name, None))


def _observers(checked: tuple[Any, ...]) -> tuple[Observer, ...]:
    """The observers, each a plain callable (an async one would never run)."""
    for index, observer in enumerate(checked):
        if not callable(observer):
            raise ConfigError(
                f"Rollout.observers[{index}]",
                f"{observer!r} is not callable",
                "pass functions that take an event",
            )
        if _is_async(observer):
            # Called synchronously, it would only make a coroutine per event that is never
            # awaited: the observer would silently never run.
            raise ConfigError(
                f"Rollout.observers[{index}]",
                f"{observer!r} is an async function, and observers are called synchronously",
                "pass a plain function, or read handle.events() in a task of your own",
            )
    return checked


def _is_async(function: object) -> bool:
    """Whether calling ``function`` makes a coroutine (an async function or ``__call__``)."""
    return inspect.iscoroutinefunction(function) or inspect.iscoroutinefunction(
        getattr(function, "__call__", None)  # noqa: B004 - the method itself is what is asked
    )


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
        steps: :class:`~rolling.Advance`, :class:`~rolling.Pause`,
            :class:`~rolling.Gate`, :class:`~rolling.Analyze` and
            :class:`~rolling.SetFlag` steps, in order.
        analysis: A background :class:`~rolling.Analysis`: measured from the
            moment the first instance on the target is in traffic until the
            rollout ends (plus its ``bake``); a failed verdict triggers the
            rollback policy at once, an inconclusive one pauses the rollout.
        order: The order instances are updated in.
        waves: Failure domains, one finished before the next starts.
        hooks: An object with any of the :class:`~rolling.Hooks` methods.
        observers: Sync callables that receive every event, in order (an
            async function is a :class:`~rolling.ConfigError`); see
            :data:`~rolling.typing.Observer`.
        effect_timeout: Longest a driver, router or hook call may take; past
            it the attempt fails (``math.inf``: no limit).
        cleanup_timeout: Longest the shielded clean-up may take once the run
            is cancelled; an instance whose attempt was cut short by it gets
            as long again to be restored.
        seed: Seed for back-off jitter.
        journal: Where to record every change, so a rollout that dies can be
            resumed by running the same rollout again on the same journal.
        lock: Keeps a second controller off the fleet; defaults to a
            :class:`~rolling.FileLock` next to a :class:`~rolling.FileJournal`,
            and to the journal's own ``lock`` when it has one
            (:class:`~rolling.EtcdJournal`).
        flags: A :class:`~rolling.FlagRules`: a feature flag turned on once
            every instance in traffic runs the target, and off before a
            rollback reverts anything (a failed turn-off halts the rollback).

    .. versionadded:: 0.1.0

    .. versionchanged:: 0.4.0
       ``flags``, and :class:`~rolling.SetFlag` steps.
    """

    def __init__(
        self,
        driver: Driver[InstanceT] | ElasticDriver[InstanceT],
        target: str,
        *,
        strategy: Strategy | None = None,
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
        analysis: Analysis | None = None,
        flags: FlagRules | None = None,
    ) -> None:
        if not _is_nonempty_str(target):
            raise ConfigError(
                "Rollout.target",
                f"expected a non-empty str, got {target!r}",
                'pass the version, such as "v2"',
            )
        self.can_replace, self.can_launch = _capabilities(driver)
        self.strategy: Strategy = _typed(
            "Rollout.strategy",
            strategy,
            RollingUpdate | Batches | Canary | BlueGreen,
            RollingUpdate(),
            "pass rolling.RollingUpdate(...), rolling.Batches(...), rolling.Canary(...)"
            " or rolling.BlueGreen(...)",
        )
        if self.strategy.wants_surge and not self.can_launch:
            surge_fields: dict[type, str] = {
                RollingUpdate: "RollingUpdate.max_surge",
                Batches: "Batches.surge",
            }
            surge_field = surge_fields.get(type(self.strategy), "Rollout.strategy")
            raise ConfigError(
                surge_field,
                f"{type(self.strategy).__name__} adds instances, but {type(driver).__name__}"
                " cannot launch() and terminate()",
                "use an elastic driver"
                if surge_field == "Rollout.strategy"
                else "set it to 0 / False, or use an elastic driver",
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
        _check_weighted(self.strategy, router)
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
                f"applies to Batches only, and the strategy is a {type(self.strategy).__name__}",
                "use max_failed for the whole rollout, or switch to Batches",
            )
        try:
            self.rollback = RollbackMode(rollback)
        except ValueError:
            raise ConfigError(
                "Rollout.rollback", f"unknown mode {rollback!r}", 'pass "revert" or "halt"'
            ) from None
        self.progress_deadline = _deadline(progress_deadline)
        self.steps: tuple[Step, ...] = _steps(steps)
        _check_strategy_steps(self.strategy, self.steps)
        self.order: Order = _typed(
            "Rollout.order", order, Order, Order(), "pass Order.sorted(), Order.shuffled(seed) ..."
        )
        self.waves: Waves | None = _typed(
            "Rollout.waves", waves, Waves, None, "pass rolling.Waves(key=lambda i: i.zone)"
        )
        # The hook methods found on ``hooks``, by name: for the runner, not documented as API.
        self.hook_methods: dict[str, Callable[..., Any]] = _hook_methods(hooks)
        self.observers: tuple[Observer, ...] = _observers(
            _sequence("Rollout.observers", observers, "pass a list of functions: observers=[print]")
        )
        _check_timeout("Rollout.effect_timeout", effect_timeout)
        _check_timeout("Rollout.cleanup_timeout", cleanup_timeout)
        self.driver = driver
        self.target = target
        self.router = router
        self.hooks = hooks
        self.effect_timeout = float(effect_timeout)
        self.cleanup_timeout = float(cleanup_timeout)
        self.seed = _seed(seed)
        self.journal = _typed(
            "Rollout.journal", journal, Journal, None, "pass rolling.FileJournal(path) or None"
        )
        if lock is None and isinstance(self.journal, FileJournal):
            # One controller per journal: the lock sits next to it unless told otherwise.
            lock = FileLock(self.journal.path.with_name(self.journal.path.name + ".lock"))
        elif lock is None:
            # A journal that comes with its own lock (EtcdJournal: the lock fences its writes).
            lock = getattr(self.journal, "lock", None)
        self.lock: Lock | None = _typed(
            "Rollout.lock", lock, Lock, None, "pass rolling.FileLock(path), a Lock, or None"
        )
        self.analysis: Analysis | None = _typed(
            "Rollout.analysis", analysis, Analysis, None, "pass rolling.Analysis(metrics=[...])"
        )
        self.flags: FlagRules | None = _typed(
            "Rollout.flags", flags, FlagRules, None, 'pass rolling.FlagRules(setter, "new-format")'
        )
        check_steps_have_setters(self.steps, self.flags)
        self.check_function: CheckFunction | None = as_check_function(self.readiness.check)
        self.logger = logging.getLogger("rolling")
        self._started = False
        self._settings = Settings(
            target=target,
            strategy=self.strategy,
            readiness=self.readiness,
            failure=self.failure,
            rollback=self.rollback,
            progress_deadline=self.progress_deadline,
            steps=self.steps,
            order=self.order,
            waves=self.waves,
            hooks=frozenset(self.hook_methods),
            has_router=router is not None,
            has_check=self.check_function is not None,
            can_replace=self.can_replace,
            can_launch=self.can_launch,
            journaled=self.journal is not None,
            seed=seed,
            analysis=self.analysis,
            flags=self.flags,
            weighted=_has(router, "set_weight"),
        )

    def _claim(self) -> None:
        if self._started:
            raise RolloutAlreadyStartedError(
                "this Rollout has already been started; build a new Rollout to run again"
            )
        self._started = True

    def check_fleet(self, size: int) -> None:
        """Run the checks ``run()`` makes once it knows the fleet has ``size`` instances.

        ``Advance`` targets that mix counts and percentages can go back only for some
        fleet sizes (``Advance(5)`` then ``Advance("10%")`` on 20 instances); a tool that
        plans a rollout without running it calls this to refuse what the run would.

        Raises:
            ConfigError: A check fails; nothing was called on the driver.

        .. versionadded:: 0.4.0
        """
        check_fleet(self.steps, size)

    @property
    def surge_enabled(self) -> bool:
        """Whether this rollout may launch instances before taking old ones out."""
        return self._settings.surge_enabled

    def window(self, desired: int) -> ResolvedWindow:
        """The availability budget for a fleet of ``desired`` instances.

        For :class:`~rolling.Batches`, ``max_unavailable`` is the largest batch
        (or, with ``surge=True``, ``max_surge`` is). :class:`~rolling.Canary`
        and :class:`~rolling.BlueGreen` may stand a whole new set beside the
        old one, so their ``max_surge`` is ``desired``; a canary promoted
        through a window takes its ``max_unavailable``.
        """
        return self._settings.bounds(desired)

    def _runner(self) -> Runner:
        self._claim()
        machine = Machine(self._settings, listening=bool(self.observers))
        return Runner(self, machine)

    async def run(self) -> RolloutResult:
        """Run the rollout to its end and return what happened.

        Cancelling the task that awaits this leaves the fleet consistent:
        in-flight work is finished or put back under a shielded clean-up
        bounded by ``cleanup_timeout``, then the cancellation propagates.

        It never raises an :class:`ExceptionGroup`: an error that ends the
        rollout (from a driver, hook, observer, journal or lock of yours, or a
        :class:`~rolling.RollingError`) comes out as itself, with its
        traceback; when several end it at once, a
        :class:`~rolling.RollingError` comes out whose ``__cause__`` is the
        group of them. Cancellation propagates as cancellation.

        Raises:
            ConfigError: The steps do not fit the fleet the driver listed
                (checked before any health check or change).
            RollingError: The rollout could not run (duplicate instance ids,
                a journal or lock failure), or several errors ended it.
        """
        error: BaseException
        try:
            return await self._runner().run()
        except BaseExceptionGroup as group:  # a safety net: the runner raises errors alone
            error = _sole_error(group)
        # Raised outside the except block, so the error is not chained to the group
        # that carried it; its own traceback, cause and context are kept.
        raise error

    @contextlib.asynccontextmanager
    async def start(self) -> AsyncGenerator[RolloutHandle, None]:
        """Start the rollout in the background and yield a :class:`RolloutHandle`.

        Leaving the ``async with`` block waits for the rollout to end; an
        exception in the block cancels it (with the same clean-up as
        cancelling :meth:`run`) and comes out as itself, never in an
        ``ExceptionGroup``, as :meth:`run`'s errors do.
        """
        handle = RolloutHandle(self._runner())
        error: BaseException | None = None
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(handle._run)  # noqa: SLF001  # pyright: ignore[reportPrivateUsage] - the handle and the rollout are one unit
                yield handle
        except BaseExceptionGroup as group:  # the block's own error, wrapped by the task group
            error = _sole_error(group)
        if error is not None:
            raise error
        handle._raise()  # noqa: SLF001  # pyright: ignore[reportPrivateUsage] - as above


def _sole_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """What :meth:`Rollout.run` raises for ``group``: never a group of plain errors.

    Task groups inside the engine wrap whatever ends them; a user catching
    ``ConfigError`` or their own driver's exception must not need ``except*``.
    """
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop()
        if isinstance(exc, BaseExceptionGroup):
            members = cast("BaseExceptionGroup[BaseException]", exc).exceptions
            pending.extend(reversed(members))
        else:
            leaves.append(exc)
    errors = [leaf for leaf in leaves if isinstance(leaf, Exception)]
    if len(errors) == len(leaves):
        return one_error(errors)
    if len(leaves) == 1 and not isinstance(leaves[0], anyio.get_cancelled_exc_class()):
        # A KeyboardInterrupt or SystemExit a driver raised, alone: as itself, so that
        # `except KeyboardInterrupt` catches it.
        return leaves[0]
    # A cancellation, or an interrupt among several: it must propagate as it is.
    return group


def _seed(value: object) -> int | None:
    """A seed for the back-off jitter: an int or None."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError("Rollout.seed", f"expected an int or None, got {value!r}", "pass 42")
    return value


def _is_nonempty_str(value: object) -> bool:
    """Whether ``value`` is a non-empty str (annotations do not stop callers passing others)."""
    return isinstance(value, str) and bool(value)


def _check_timeout(field: str, value: object) -> None:
    """Check that ``value`` is a number of seconds above zero (``inf``: no limit)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(field, f"must be a number > 0, got {value!r}", "pass seconds, such as 60")
    try:
        float(value)
    except OverflowError:  # an int past the float range: float() below would raise it raw
        raise ConfigError(
            field, f"is too large, got {value!r}", "pass seconds, such as 60"
        ) from None


def _sequence(field: str, value: object, fix: str) -> tuple[Any, ...]:
    """``value`` as a tuple, or a :class:`ConfigError` when it is a lone item, not a sequence."""
    if callable(value) or isinstance(value, str | bytes) or not _iterable(value):
        raise ConfigError(field, f"expected a sequence, got {value!r}", fix)
    return tuple(cast("Iterable[Any]", value))


def _iterable(value: object) -> bool:
    return isinstance(value, Iterable)


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
    # Checked under the argument's own name (not ProgressDeadline.seconds), and before
    # float(), which raises a raw OverflowError on an int past the float range.
    check_seconds("Rollout.progress_deadline", value, allow_zero=False)
    return ProgressDeadline(float(value), DeadlineAction.ROLLBACK)


_STEPS = (Advance, Pause, Gate, Analyze, SetFlag, SetWeight, SetCanaryScale)


def _check_weighted(strategy: Strategy, router: object) -> None:
    if isinstance(strategy, Canary) and not _has(router, "set_weight"):
        raise ConfigError(
            "Rollout.router",
            "a Canary splits traffic by weight, and "
            + (
                "there is no router"
                if router is None
                else f"{type(router).__name__} has no set_weight()"
            ),
            "pass a rolling.typing.WeightedRouter such as rolling.routers.balancer.Balancer"
            " or rolling.routers.haproxy.HAProxyRouter",
        )


def _check_strategy_steps(strategy: Strategy, steps: tuple[Step, ...]) -> None:
    """Steps that only one kind of strategy understands, refused on the others."""
    for index, step in enumerate(steps):
        field = f"Rollout.steps[{index}]"
        name = type(step).__name__
        if isinstance(strategy, BlueGreen):
            raise ConfigError(
                field,
                f"BlueGreen takes no steps, got {name}",
                "measure green with BlueGreen(pre_promotion=..., post_promotion=...)",
            )
        if isinstance(strategy, Canary) and isinstance(step, Advance):
            raise ConfigError(
                field,
                "a Canary moves traffic with SetWeight, not Advance",
                "use SetWeight(percent) and SetCanaryScale(...)",
            )
        if not isinstance(strategy, Canary) and isinstance(step, SetWeight | SetCanaryScale):
            raise ConfigError(
                field,
                f"{name} applies to the Canary strategy only",
                "pass strategy=rolling.Canary(), or use Advance for a canary by count",
            )


def _steps(steps: Sequence[Step]) -> tuple[Step, ...]:
    if isinstance(steps, _STEPS):
        raise ConfigError(
            "Rollout.steps",
            "expected a sequence of steps, got a single step",
            "wrap it in a list: steps=[...]",
        )
    result: tuple[Any, ...] = _sequence(
        "Rollout.steps", steps, "pass a list of steps: steps=[rolling.Advance(1), rolling.Pause()]"
    )
    for index, step in enumerate(result):
        if not isinstance(step, _STEPS):
            raise ConfigError(
                f"Rollout.steps[{index}]",
                "expected Advance, Pause, Gate, Analyze, SetFlag, SetWeight or SetCanaryScale,"
                f" got {step!r}",
                "build steps with rolling.Advance, rolling.Pause, rolling.Gate and rolling.Analyze",
            )
    check_steps(result)
    return result

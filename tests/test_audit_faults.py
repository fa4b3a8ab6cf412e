"""Hostile and faulty drivers, routers, checks and hooks against the documented protocol.

A second contract audit, written from docs/writing-a-driver.md, docs/concepts.md,
docs/recovery.md and the docstrings of rolling.typing, rolling.events and the results,
with drivers of its own (public API only). Each driver here misbehaves in a way the docs
speak of, or a way a real driver would; each test names the promise it holds the engine to.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import attrs
import pytest

import rolling
from rolling import (
    Batches,
    FailurePolicy,
    InstanceOutcome,
    Phase,
    Readiness,
    RollingUpdate,
    Rollout,
    RolloutStatus,
)
from rolling.testing import EventRecorder

pytestmark = pytest.mark.anyio

FINAL = {
    Phase.UPDATED,
    Phase.SKIPPED,
    Phase.FAILED,
    Phase.REVERTED,
    Phase.REVERT_FAILED,
    Phase.INTERRUPTED,
}

# ------------------------------------------------------------------ a platform of our own


@attrs.frozen
class Svc:
    """An instance as the driver hands it out: a snapshot."""

    id: str
    version: str
    zone: str = "a"


Behaviour = Callable[["Cluster", tuple[Any, ...]], Awaitable[Any]]
"""Runs before an operation: raise, hang, or return ``PROCEED`` to let it happen."""

PROCEED = object()


class Cluster:
    """An in-memory platform: what runs, what is in traffic, and what is being changed.

    It checks the floor at every voluntary disruption and the ceiling at every launch
    as docs/concepts.md defines them, and scripts misbehaviour per operation.
    """

    def __init__(
        self,
        size: int = 4,
        *,
        version: str = "v1",
        max_unavailable: int = 1,
        max_surge: int = 0,
        bad: Sequence[str] = (),
    ) -> None:
        self.services: dict[str, Svc] = {}
        for index in range(size):
            svc = Svc(f"s{index}", version, "ab"[index % 2])
            self.services[svc.id] = svc
        self.traffic: set[str] = set(self.services)
        self.weights: dict[str, int] = {}
        self.bad_versions: set[str] = set(bad)
        self.unhealthy: set[str] = set()
        self.busy: dict[str, str] = {}
        self.desired = size
        self.floor = size - max_unavailable
        self.ceiling = size + max_surge
        self.violations: list[str] = []
        self.calls: list[tuple[str, str]] = []
        self.scripts: dict[str, list[Behaviour]] = {}
        self.always: dict[str, Behaviour] = {}
        self._ids = itertools.count()

    # ------------------------------------------------------------- scripting

    def script(self, op: str, *behaviours: Behaviour) -> None:
        """The next calls of ``op`` behave so, one each, then normally."""
        self.scripts.setdefault(op, []).extend(behaviours)

    def every(self, op: str, behaviour: Behaviour) -> None:
        """Every call of ``op`` behaves so."""
        self.always[op] = behaviour

    async def _misbehave(self, op: str, args: tuple[Any, ...]) -> Any:
        queue = self.scripts.get(op)
        if queue:
            return await queue.pop(0)(self, args)
        behaviour = self.always.get(op)
        if behaviour is not None:
            return await behaviour(self, args)
        return PROCEED

    # ------------------------------------------------------------- the truth

    def serving(self, instance_id: str) -> bool:
        svc = self.services.get(instance_id)
        return (
            svc is not None
            and instance_id in self.traffic
            and instance_id not in self.unhealthy
            and svc.version not in self.bad_versions
        )

    def serving_count(self, besides: set[str] = frozenset()) -> int:  # type: ignore[assignment]
        return sum(1 for i in self.services if i not in besides and self.serving(i))

    def _disrupt(self, op: str, instance_id: str) -> None:
        if self.serving(instance_id):
            aside = set(self.busy) | {instance_id}
            left = self.serving_count(aside)
            if left < self.floor:
                self.violations.append(f"floor: {op} {instance_id} leaves {left} < {self.floor}")
        if instance_id in self.busy:
            self.violations.append(f"overlap: {op} {instance_id} during {self.busy[instance_id]}")
        self.busy[instance_id] = op

    def _done(self, instance_id: str) -> None:
        self.busy.pop(instance_id, None)

    # -------------------------------------------------------------- protocol

    async def list_instances(self) -> Sequence[Svc]:
        self.calls.append(("list", ""))
        answer = await self._misbehave("list", ())
        if answer is not PROCEED:
            return answer  # type: ignore[no-any-return]
        return list(self.services.values())

    async def replace(self, instance: Svc, version: str) -> Svc:
        self.calls.append(("replace", instance.id))
        self._disrupt("replace", instance.id)
        try:
            answer = await self._misbehave("replace", (instance, version))
            if answer is not PROCEED:
                return answer  # type: ignore[no-any-return]
            return self.do_replace(instance.id, version)
        finally:
            self._done(instance.id)

    def do_replace(self, instance_id: str, version: str) -> Svc:
        if instance_id not in self.services:
            raise LookupError(f"{instance_id} no longer exists")
        svc = attrs.evolve(self.services[instance_id], version=version)
        self.services[instance_id] = svc
        return svc

    async def launch(self, version: str) -> Svc:
        self.calls.append(("launch", version))
        existing = len(self.services) + sum(1 for op in self.busy.values() if op == "launch")
        if existing + 1 > self.ceiling:
            self.violations.append(f"ceiling: launch makes {existing + 1} > {self.ceiling}")
        key = f"launch-{next(self._ids)}"
        self.busy[key] = "launch"
        try:
            answer = await self._misbehave("launch", (version,))
            if answer is not PROCEED:
                return answer  # type: ignore[no-any-return]
            return self.do_launch(version)
        finally:
            self._done(key)

    def do_launch(self, version: str) -> Svc:
        svc = Svc(f"n{next(self._ids)}", version)
        self.services[svc.id] = svc
        return svc

    async def terminate(self, instance: Svc) -> None:
        self.calls.append(("terminate", instance.id))
        if instance.id in self.traffic:
            self.violations.append(f"terminate of {instance.id} in traffic")
        self._disrupt("terminate", instance.id)
        try:
            answer = await self._misbehave("terminate", (instance,))
            if answer is not PROCEED:
                return
            self.services.pop(instance.id, None)
            self.traffic.discard(instance.id)
        finally:
            self._done(instance.id)

    async def detach(self, instance: Svc) -> None:
        self.calls.append(("detach", instance.id))
        self._disrupt("detach", instance.id)
        try:
            answer = await self._misbehave("detach", (instance,))
            if answer is not PROCEED:
                return
            self.traffic.discard(instance.id)
        finally:
            self._done(instance.id)

    async def attach(self, instance: Svc) -> None:
        self.calls.append(("attach", instance.id))
        answer = await self._misbehave("attach", (instance,))
        if answer is not PROCEED:
            return
        if instance.id not in self.services:
            raise LookupError(f"{instance.id} no longer exists")
        self.traffic.add(instance.id)

    async def check(self, instance: Svc) -> rolling.HealthResult:
        answer = await self._misbehave("check", (instance,))
        if answer is not PROCEED:
            return answer  # type: ignore[no-any-return]
        svc = self.services.get(instance.id)
        if svc is None:
            return rolling.HealthResult(healthy=False, reason="gone")
        if svc.version in self.bad_versions or svc.id in self.unhealthy:
            return rolling.HealthResult(healthy=False, reason=f"{svc.version} answers 500")
        return rolling.HealthResult(healthy=True)


class WeightedCluster(Cluster):
    """The same platform behind a weighted router (for Canary and BlueGreen)."""

    async def set_weight(self, instance: Svc, weight: int) -> None:
        self.calls.append(("set_weight", instance.id))
        answer = await self._misbehave("set_weight", (instance, weight))
        if answer is not PROCEED:
            return
        self.weights[instance.id] = weight


class InPlace:
    """A driver with replace() only, over a cluster."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    async def list_instances(self) -> Sequence[Svc]:
        return await self.cluster.list_instances()

    async def replace(self, instance: Svc, version: str) -> Svc:
        return await self.cluster.replace(instance, version)


class Elastic:
    """A driver with launch() and terminate() only, over a cluster."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    async def list_instances(self) -> Sequence[Svc]:
        return await self.cluster.list_instances()

    async def launch(self, version: str) -> Svc:
        return await self.cluster.launch(version)

    async def terminate(self, instance: Svc) -> None:
        await self.cluster.terminate(instance)


# ------------------------------------------------------------------ behaviours


def raises(exc: BaseException) -> Behaviour:
    async def behaviour(_cluster: Cluster, _args: tuple[Any, ...]) -> Any:
        raise exc

    return behaviour


async def hang(_cluster: Cluster, _args: tuple[Any, ...]) -> Any:
    await anyio.sleep_forever()


async def proceed(_cluster: Cluster, _args: tuple[Any, ...]) -> Any:
    return PROCEED


def returns(value: Callable[[Cluster, tuple[Any, ...]], Any]) -> Behaviour:
    async def behaviour(cluster: Cluster, args: tuple[Any, ...]) -> Any:
        return value(cluster, args)

    return behaviour


# ------------------------------------------------------------------ checks


def rollout(
    cluster: Cluster,
    driver: Any,
    *,
    router: bool = True,
    check: bool = True,
    **options: Any,
) -> tuple[Rollout[Any], EventRecorder]:
    recorder = EventRecorder()
    if check:
        options.setdefault("readiness", Readiness(check=cluster, period=1, timeout=1, deadline=20))
    options.setdefault("effect_timeout", 30)
    options.setdefault("cleanup_timeout", 10)
    run = Rollout(
        driver,
        "v2",
        router=cluster if router else None,
        observers=[recorder],
        **options,
    )
    return run, recorder


def truth(result: rolling.RolloutResult, cluster: Cluster, start: Sequence[str]) -> None:  # noqa: C901 - one check per promise
    """What the result says stands where is what the cluster says; nothing is unaccounted."""
    assert [item.id for item in result.instances] == list(start)
    reported: set[str] = set()
    for item in result.instances:
        if item.current_id is None:
            assert item.version is None, item
            assert not item.serving, item
        else:
            reported.add(item.current_id)
            svc = cluster.services.get(item.current_id)
            assert svc is not None, f"{item.id}: {item.current_id} is not in the cluster"
            assert svc.version == item.version, item
            assert item.serving == (item.current_id in cluster.traffic), (
                item,
                sorted(cluster.traffic),
            )
        for stray in item.strays:
            assert stray in cluster.services, (item, stray)
            reported.add(stray)
    unreported = set(cluster.services) - reported
    assert not unreported, f"instances nobody reports: {sorted(unreported)}"
    status = result.status
    if status is RolloutStatus.SUCCEEDED:
        for item in result.instances:
            assert item.outcome in {InstanceOutcome.UPDATED, InstanceOutcome.SKIPPED}, item
            assert item.version == "v2", item
            assert item.serving, item
    if status is RolloutStatus.ROLLED_BACK:
        for item in result.instances:
            assert item.outcome is not InstanceOutcome.UPDATED, item
            if item.outcome is InstanceOutcome.REVERTED:
                assert item.version == item.old_version, item
                assert item.serving, item
            if item.outcome is InstanceOutcome.REVERT_FAILED:
                assert item.reason, item
    for item in result.instances:
        assert item.outcome is not InstanceOutcome.IN_PROGRESS, item
        if item.outcome in {InstanceOutcome.FAILED, InstanceOutcome.REVERT_FAILED}:
            assert item.reason, item


def final_phases(recorder: EventRecorder, result: rolling.RolloutResult) -> None:
    """Every instance worked on ends on the final phase of its outcome (events.Phase)."""
    last = {e.instance_id: e for e in recorder.of_type(rolling.InstancePhaseChanged)}
    for item in result.instances:
        event = last.get(item.id)
        if event is None:
            assert item.outcome in {InstanceOutcome.PENDING, InstanceOutcome.SKIPPED}, item
            continue
        assert event.phase in FINAL, (item.id, event)
        assert str(event.phase) == str(item.outcome), (item.id, event, item)
    finished = recorder.of_type(rolling.RolloutFinished)
    assert len(finished) == 1
    assert finished[0].result is result
    assert recorder.events[-1] is finished[0]


def sound(
    result: rolling.RolloutResult,
    cluster: Cluster,
    recorder: EventRecorder,
    start: Sequence[str] | None = None,
) -> None:
    truth(result, cluster, start if start is not None else [f"s{i}" for i in range(4)])
    final_phases(recorder, result)
    assert not cluster.violations, cluster.violations
    assert not cluster.busy, cluster.busy


# ------------------------------------------------------------------ the matrix

STRATEGIES: dict[str, tuple[Any, Any, int, int]] = {
    # name: (driver class, strategy, max_unavailable, max_surge) as the cluster checks them
    "in-place": (InPlace, RollingUpdate(max_unavailable=1), 1, 0),
    "surge": (Elastic, RollingUpdate(max_unavailable=0, max_surge=1), 0, 1),
    "take-out": (Elastic, RollingUpdate(max_unavailable=1, max_surge=0), 1, 0),
    "batches": (InPlace, Batches(2), 2, 0),
    "batches-surge": (Elastic, Batches(2, surge=True), 0, 2),
}

OPS = {
    "in-place": ("replace", "detach", "attach", "check"),
    "surge": ("launch", "terminate", "detach", "attach", "check"),
    "take-out": ("launch", "terminate", "detach", "attach", "check"),
    "batches": ("replace", "detach", "attach", "check"),
    "batches-surge": ("launch", "terminate", "detach", "attach", "check"),
}

ERRORS: dict[str, BaseException] = {
    "runtime": RuntimeError("boom"),
    "os": OSError(5, "I/O error"),
    "timeout": TimeoutError("platform timed out"),
    "group": ExceptionGroup("several", [ValueError("a"), KeyError("b")]),
}

CASES = [
    pytest.param(name, op, fault, id=f"{name}-{op}-{fault}")
    for name, ops in OPS.items()
    for op in ops
    for fault in ("runtime", "os", "timeout", "group", "hang", "always")
]


def make(name: str, **cluster_options: Any) -> tuple[Cluster, Any, Any]:
    driver_class, strategy, unavailable, surge = STRATEGIES[name]
    cluster = Cluster(max_unavailable=unavailable, max_surge=surge, **cluster_options)
    return cluster, driver_class(cluster), strategy


@pytest.mark.parametrize(("name", "op", "fault"), CASES)
async def test_a_faulty_call_fails_its_attempt_and_the_fleet_is_accounted_for(
    name: str, op: str, fault: str
) -> None:
    # writing-a-driver.md, "Errors, time-outs and cancellation": any exception (or a call
    # past effect_timeout) fails that attempt, and the failure policy applies; concepts.md:
    # every instance of the starting fleet has one InstanceResult telling what runs in its
    # place now, the floor and ceiling hold, nothing leaks.
    cluster, driver, strategy = make(name)
    if op == "check":
        # Not in the survey before the rollout: an instance that fails it is not serving
        # as far as the rollout knows, which this cluster's floor would not see.
        cluster.script(op, *[proceed] * 4)
    if fault == "hang":
        cluster.script(op, hang)
    elif fault == "always":
        # Every call of that kind fails from the second on (the first one works, so
        # that there is something to put back).
        cluster.script(op, proceed)
        cluster.every(op, raises(OSError("always")))
    else:
        cluster.script(op, raises(ERRORS[fault]))
    run, recorder = rollout(cluster, driver, strategy=strategy)
    with anyio.fail_after(10_000):
        result = await run.run()
    sound(result, cluster, recorder)
    assert result.status in {RolloutStatus.ROLLED_BACK, RolloutStatus.SUCCEEDED}, result
    if result.status is RolloutStatus.ROLLED_BACK:
        failed = [i for i in result.instances if i.outcome is InstanceOutcome.FAILED]
        if result.reason.startswith("stuck"):
            # concepts.md: a stray keeps its share of the surge budget; with no room left
            # the rollout is stuck and fires the rollback policy.
            assert any(i.strays for i in result.instances), result
            return
        assert failed, result
        if fault in ERRORS:
            error = ERRORS[fault]
            assert f"raised {type(error).__name__}: {error}" in failed[0].reason, failed[0]
        if fault == "hang" and op != "check":
            assert "did not return within 30.0s" in failed[0].reason, failed[0]


# ------------------------------------------------------------------ half-done calls


def half_detach(then: Behaviour) -> Behaviour:
    """A router that stops new traffic, then fails or hangs draining what is in flight."""

    async def behaviour(cluster: Cluster, args: tuple[Any, ...]) -> Any:
        cluster.traffic.discard(args[0].id)
        return await then(cluster, args)

    return behaviour


def half_attach(then: Behaviour) -> Behaviour:
    """A router that puts the instance in traffic, then fails confirming it."""

    async def behaviour(cluster: Cluster, args: tuple[Any, ...]) -> Any:
        cluster.traffic.add(args[0].id)
        return await then(cluster, args)

    return behaviour


HALF = {
    "detach-raises": ("detach", half_detach(raises(TimeoutError("drain took over 20s")))),
    "detach-hangs": ("detach", half_detach(hang)),
    "attach-raises": ("attach", half_attach(raises(OSError("no confirmation")))),
    "attach-hangs": ("attach", half_attach(hang)),
}


@pytest.mark.parametrize("name", ["in-place", "surge", "take-out", "batches"])
@pytest.mark.parametrize("half", list(HALF))
@pytest.mark.parametrize("restore", [True, False])
async def test_a_router_call_cut_half_way_is_reported_as_it_left_the_instance(
    name: str, half: str, restore: bool
) -> None:
    # writing-a-driver.md: detach returns once in-flight work has drained, bounded by the
    # router itself below effect_timeout; a router that bounds its drain raises with the
    # instance already out of new traffic, and one cut at effect_timeout was cut mid-drain.
    # concepts.md: `serving` always describes what runs in the instance's place *now*.
    op, behaviour = HALF[half]
    cluster, driver, strategy = make(name)
    cluster.script(op, behaviour)
    run, recorder = rollout(
        cluster, driver, strategy=strategy, failure=FailurePolicy(restore_failed=restore)
    )
    with anyio.fail_after(10_000):
        result = await run.run()
    sound(result, cluster, recorder)


# ------------------------------------------------------------------ wrong answers


def replace_returning(make_answer: Callable[[Cluster, Svc, str], Any]) -> Behaviour:
    async def behaviour(cluster: Cluster, args: tuple[Any, ...]) -> Any:
        return make_answer(cluster, args[0], args[1])

    return behaviour


def launch_returning(make_answer: Callable[[Cluster, str], Any]) -> Behaviour:
    async def behaviour(cluster: Cluster, args: tuple[Any, ...]) -> Any:
        return make_answer(cluster, args[0])

    return behaviour


def recreated(cluster: Cluster, instance: Svc, version: str) -> Svc:
    """A platform that recreates the instance under a new id (the driver returns it)."""
    cluster.services.pop(instance.id)
    cluster.traffic.discard(instance.id)
    svc = Svc(f"{instance.id}-r{len(cluster.calls)}", version)
    cluster.services[svc.id] = svc
    return svc


def ignored_version(cluster: Cluster, instance: Svc, _version: str) -> Svc:
    """A driver that did not install anything and says what runs."""
    return cluster.services[instance.id]


def nothing(cluster: Cluster, instance: Svc, version: str) -> None:
    """A driver that forgot to return the instance (it did replace it)."""
    cluster.do_replace(instance.id, version)


WRONG_REPLACE = {
    "other-id": (recreated, "driver.replace returned a different instance: asked id s0, got id"),
    "old-version": (ignored_version, "driver.replace returned the wrong version: asked v2, got v1"),
    "none": (nothing, "driver.replace returned None, not an instance"),
}


@pytest.mark.parametrize("wrong", list(WRONG_REPLACE))
@pytest.mark.parametrize("always", [False, True])
async def test_a_wrong_answer_from_replace_fails_the_attempt(wrong: str, always: bool) -> None:
    # writing-a-driver.md: replace returns the instance with the same id and the version
    # asked for; "a returned instance with another id or version fails that attempt (its
    # reason names both values, and retries and the failure policy apply as for an
    # exception), and rolling goes on from the instance you returned".
    make_answer, reason = WRONG_REPLACE[wrong]
    cluster = Cluster()
    if always:
        cluster.every("replace", replace_returning(make_answer))
    else:
        cluster.script("replace", replace_returning(make_answer))
    run, recorder = rollout(cluster, InPlace(cluster), failure=FailurePolicy(retries=1))
    with anyio.fail_after(10_000):
        result = await run.run()
    sound(result, cluster, recorder)
    first = [e for e in recorder.of_type(rolling.InstancePhaseChanged) if e.reason]
    assert first[0].reason.startswith(reason), first[0]
    if always:
        assert result.status is RolloutStatus.ROLLED_BACK
        assert result.by_id("s0").outcome is InstanceOutcome.FAILED
        assert result.by_id("s0").attempts == 2
    else:
        # The retry works: every instance updated.
        assert result.status is RolloutStatus.SUCCEEDED, result
        assert result.by_id("s0").attempts == 2


WRONG_LAUNCH: dict[str, tuple[Callable[[Cluster, str], Any], str]] = {
    "old-version": (lambda c, _: c.do_launch("v1"), "returned the wrong version: asked v2"),
    # A launch that did nothing and said nothing (one that launched and returned None
    # leaks an instance nobody can know of: the driver's bug, which no engine can see).
    "none": (lambda _c, _v: None, "driver.launch returned None, not an instance"),
}


@pytest.mark.parametrize("wrong", list(WRONG_LAUNCH))
@pytest.mark.parametrize("name", ["surge", "take-out", "batches-surge"])
async def test_a_wrong_answer_from_launch_fails_the_attempt(wrong: str, name: str) -> None:
    # writing-a-driver.md: launch returns the new instance running the version asked for;
    # one that runs another version fails the attempt, as for replace().
    make_answer, reason = WRONG_LAUNCH[wrong]
    cluster, driver, strategy = make(name)
    cluster.script("launch", launch_returning(make_answer))
    run, recorder = rollout(cluster, driver, strategy=strategy, failure=FailurePolicy(retries=1))
    with anyio.fail_after(10_000):
        result = await run.run()
    sound(result, cluster, recorder)
    first = [e for e in recorder.of_type(rolling.InstancePhaseChanged) if e.reason]
    assert reason in first[0].reason, first[0]
    assert result.status is RolloutStatus.SUCCEEDED, result


# ------------------------------------------------------------------ listing the fleet


@pytest.mark.parametrize(
    "error", [OSError(111, "connection refused"), TimeoutError("API slow"), LookupError("x")]
)
async def test_a_list_instances_that_raises_comes_out_of_run_as_itself(
    error: Exception,
) -> None:
    # writing-a-driver.md: run() raises any error of list_instances() itself, and the
    # rollout stops before any change; concepts.md: an error that ends a rollout comes out
    # as itself (never an ExceptionGroup), and the status is HALTED.
    cluster = Cluster()
    cluster.script("list", raises(error))
    run, recorder = rollout(cluster, InPlace(cluster))
    with pytest.raises(type(error)) as caught:
        await run.run()
    assert caught.value is error
    assert [op for op, _ in cluster.calls] == ["list"]
    finished = recorder.of_type(rolling.RolloutFinished)
    assert len(finished) == 1
    result = finished[0].result
    assert result.status is RolloutStatus.HALTED
    assert result.instances == ()


async def test_a_list_instances_that_hangs_is_a_time_out_naming_effect_timeout() -> None:
    # writing-a-driver.md: past effect_timeout the rollout stops before any change and run()
    # raises TimeoutError("driver.list_instances did not return within 600.0s (effect_timeout)").
    cluster = Cluster()
    cluster.script("list", hang)
    run, _ = rollout(cluster, InPlace(cluster), effect_timeout=600)
    with anyio.fail_after(10_000), pytest.raises(TimeoutError) as caught:
        await run.run()
    assert str(caught.value) == (
        "driver.list_instances did not return within 600.0s (effect_timeout)"
    )
    assert [op for op, _ in cluster.calls] == ["list"]


async def test_duplicate_ids_stop_the_rollout_before_anything_changes() -> None:
    # writing-a-driver.md: "A driver that lists two instances with the same id stops the
    # rollout before anything changes"; run() raises a RollingError (Rollout.run).
    cluster = Cluster()
    cluster.script("list", returns(lambda c, _: [*c.services.values(), Svc("s1", "v1")]))
    run, _ = rollout(cluster, InPlace(cluster))
    with pytest.raises(rolling.RollingError, match="duplicate instance ids"):
        await run.run()
    assert [op for op, _ in cluster.calls] == ["list"]


async def test_an_empty_fleet_succeeds_with_nothing_to_do() -> None:
    cluster = Cluster(0)
    run, recorder = rollout(cluster, InPlace(cluster))
    result = await run.run()
    assert result.status is RolloutStatus.SUCCEEDED
    assert result.instances == ()
    sound(result, cluster, recorder, start=[])


async def test_the_fleet_is_listed_once_and_what_changes_later_is_not_chased() -> None:
    # writing-a-driver.md: list_instances "is called once, when the rollout starts; the
    # rollout works on that list". An instance that appears later is not touched.
    cluster = Cluster()

    async def add_one(c: Cluster, _args: tuple[Any, ...]) -> Any:
        c.services["late"] = Svc("late", "v1")
        c.traffic.add("late")
        return PROCEED

    cluster.script("replace", add_one)
    run, _ = rollout(cluster, InPlace(cluster))
    result = await run.run()
    assert result.status is RolloutStatus.SUCCEEDED
    assert [op for op, _ in cluster.calls].count("list") == 1
    assert cluster.services["late"].version == "v1"
    assert "late" not in {i.id for i in result.instances}


async def test_a_fleet_of_things_that_are_not_instances_is_refused_before_any_change() -> None:
    cluster = Cluster()
    cluster.script("list", returns(lambda c, _: [*c.services.values(), None]))
    run, _ = rollout(cluster, InPlace(cluster))
    with pytest.raises(Exception):  # noqa: B017, PT011 - whatever it is, nothing changed
        await run.run()
    assert [op for op, _ in cluster.calls] == ["list"]


# ------------------------------------------------------------------ hooks


class RecordingHooks:
    """Every hook, recording its calls; ``failing`` names hooks that raise (once each)."""

    def __init__(self, *failing: str, always: bool = False) -> None:
        self.failing = set(failing)
        self.always = always
        self.calls: list[tuple[str, str]] = []

    def _called(self, name: str, subject: object) -> None:
        label = subject if isinstance(subject, str) else getattr(subject, "id", "")
        self.calls.append((name, str(label)))
        if name in self.failing:
            if not self.always:
                self.failing.discard(name)
            raise RuntimeError(f"hook {name} says no")

    async def before_rollout(self, target: str, _instances: Sequence[Svc]) -> None:
        self._called("before_rollout", target)

    async def after_rollout(self, result: rolling.RolloutResult) -> None:
        self._called("after_rollout", str(result.status))

    async def before_batch(self, index: int, _instances: Sequence[Svc]) -> None:
        self._called("before_batch", str(index))

    async def after_batch(self, index: int, _instances: Sequence[Svc]) -> None:
        self._called("after_batch", str(index))

    async def before_detach(self, instance: Svc) -> None:
        self._called("before_detach", instance)

    async def after_detach(self, instance: Svc) -> None:
        self._called("after_detach", instance)

    async def before_replace(self, instance: Svc, _version: str) -> None:
        self._called("before_replace", instance)

    async def after_replace(self, instance: Svc) -> None:
        self._called("after_replace", instance)

    async def before_launch(self, version: str) -> None:
        self._called("before_launch", version)

    async def after_launch(self, instance: Svc) -> None:
        self._called("after_launch", instance)

    async def before_terminate(self, instance: Svc) -> None:
        self._called("before_terminate", instance)

    async def after_terminate(self, instance: Svc) -> None:
        self._called("after_terminate", instance)

    async def before_ready(self, instance: Svc) -> None:
        self._called("before_ready", instance)

    async def after_ready(self, instance: Svc) -> None:
        self._called("after_ready", instance)

    async def before_attach(self, instance: Svc) -> None:
        self._called("before_attach", instance)

    async def after_attach(self, instance: Svc) -> None:
        self._called("after_attach", instance)


PATHS = {
    "in-place": [
        "before_detach",
        "after_detach",
        "before_replace",
        "after_replace",
        "before_ready",
        "after_ready",
        "before_attach",
        "after_attach",
    ],
    "surge": [
        "before_launch",
        "after_launch",
        "before_ready",
        "after_ready",
        "before_attach",
        "after_attach",
        "before_detach",
        "after_detach",
        "before_terminate",
        "after_terminate",
    ],
    "take-out": [
        "before_detach",
        "after_detach",
        "before_terminate",
        "after_terminate",
        "before_launch",
        "after_launch",
        "before_ready",
        "after_ready",
        "before_attach",
        "after_attach",
    ],
}


@pytest.mark.parametrize("name", list(PATHS))
async def test_hooks_run_in_the_order_of_the_path(name: str) -> None:
    # writing-a-driver.md, "Hooks: acting on the way": the table of hooks per path.
    cluster, driver, strategy = make(name)
    hooks = RecordingHooks()
    run, _ = rollout(cluster, driver, strategy=strategy, hooks=hooks)
    result = await run.run()
    assert result.status is RolloutStatus.SUCCEEDED
    names = [n for n, _ in hooks.calls]
    assert names[0] == "before_rollout"
    assert names[-1] == "after_rollout"
    per_instance = names[1:-1]
    assert per_instance == PATHS[name] * 4


@pytest.mark.parametrize(
    ("name", "hook"), [(name, hook) for name, hooks in PATHS.items() for hook in hooks]
)
async def test_a_hook_that_raises_fails_the_attempt_like_a_driver_call(
    name: str, hook: str
) -> None:
    # writing-a-driver.md: "A hook that raises fails the attempt, exactly like a driver call
    # that raises"; the reason names it.
    cluster, driver, strategy = make(name)
    hooks = RecordingHooks(hook)
    run, recorder = rollout(cluster, driver, strategy=strategy, hooks=hooks)
    with anyio.fail_after(10_000):
        result = await run.run()
    sound(result, cluster, recorder)
    why = f"hook {hook} raised RuntimeError: hook {hook} says no"
    if name == "surge" and hook == "before_terminate":
        # concepts.md: an old instance that could not be terminated after its replacement
        # took over is a stray, which holds the surge budget: stuck, and rolled back.
        assert result.reason.startswith("stuck"), result
        assert result.by_id("s0").strays == ("s0",)
        return
    if name == "surge" and hook == "after_terminate":
        # Terminated all the same: no stray, and nothing stuck.
        assert result.status is RolloutStatus.SUCCEEDED, result
        assert why in result.by_id("s0").reason
        return
    failed = [i for i in result.instances if i.outcome is InstanceOutcome.FAILED]
    assert result.status is RolloutStatus.ROLLED_BACK, result
    assert len(failed) == 1, result
    assert why in failed[0].reason


async def test_a_raising_before_rollout_halts_before_the_fleet_is_touched() -> None:
    # writing-a-driver.md: "A raising before_rollout stops the rollout before it touches the
    # fleet (status HALTED)"; concepts.md's trigger table: nothing was changed.
    cluster = Cluster()
    hooks = RecordingHooks("before_rollout")
    run, recorder = rollout(cluster, InPlace(cluster), hooks=hooks)
    result = await run.run()
    assert result.status is RolloutStatus.HALTED
    assert "before_rollout" in result.reason
    assert {op for op, _ in cluster.calls} == {"list"}
    assert all(i.outcome is InstanceOutcome.PENDING for i in result.instances)
    sound(result, cluster, recorder)
    assert [n for n, _ in hooks.calls] == ["before_rollout", "after_rollout"]


@pytest.mark.parametrize("hook", ["before_batch", "after_batch"])
@pytest.mark.parametrize("mode", ["revert", "halt"])
async def test_a_raising_batch_hook_fires_the_rollback_policy(hook: str, mode: str) -> None:
    # writing-a-driver.md: "a raising before_batch or after_batch fires the rollback policy";
    # concepts.md: ROLLED_BACK or HALTED.
    cluster, driver, strategy = make("batches")
    hooks = RecordingHooks(hook)
    run, recorder = rollout(cluster, driver, strategy=strategy, hooks=hooks, rollback=mode)
    result = await run.run()
    expected = RolloutStatus.ROLLED_BACK if mode == "revert" else RolloutStatus.HALTED
    assert result.status is expected, result
    assert hook in result.reason
    sound(result, cluster, recorder)
    if mode == "revert":
        assert set(cluster.services) == {f"s{i}" for i in range(4)}
        assert {svc.version for svc in cluster.services.values()} == {"v1"}
        assert cluster.traffic == set(cluster.services)
    started = recorder.of_type(rolling.RollbackStarted)
    assert len(started) == 1
    assert started[0].mode == mode


async def test_an_after_rollout_that_raises_is_logged_and_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cluster = Cluster()
    hooks = RecordingHooks("after_rollout")
    run, recorder = rollout(cluster, InPlace(cluster), hooks=hooks)
    result = await run.run()
    assert result.status is RolloutStatus.SUCCEEDED
    sound(result, cluster, recorder)
    assert any("after_rollout" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------ not exceptions


@pytest.mark.parametrize("anyio_backend", ["trio"], indirect=True)
@pytest.mark.parametrize("op", ["replace", "detach", "attach", "check"])
async def test_a_keyboard_interrupt_from_a_driver_comes_out_as_itself(op: str) -> None:
    # concepts.md: run() never raises an ExceptionGroup; what is not an error of the rollout
    # (a KeyboardInterrupt is no Exception) is not turned into a failed attempt. It used to
    # come out of run() in a BaseExceptionGroup, which `except KeyboardInterrupt` misses.
    # On trio only: asyncio lets a KeyboardInterrupt out of the event loop, past every await.
    cluster = Cluster()
    if op == "check":
        cluster.script(op, *[proceed] * 4)
    cluster.script(op, raises(KeyboardInterrupt()))
    run, _ = rollout(cluster, InPlace(cluster))
    with pytest.raises(KeyboardInterrupt):
        await run.run()


@pytest.mark.parametrize("anyio_backend", ["asyncio"], indirect=True)
@pytest.mark.parametrize("op", ["replace", "detach", "attach"])
async def test_a_cancellation_a_driver_raises_by_itself_fails_the_attempt(op: str) -> None:
    # asyncio's CancelledError raised by a driver's own client (a library that turns its own
    # time-out into one) while nobody cancels the rollout: the engine used to crash with an
    # IndexError from inside. Nothing cancelled the rollout, so it is the call's failure
    # (writing-a-driver.md: any error fails that attempt), and the rollout goes on.
    # On asyncio only: trio's Cancelled cannot be raised by a driver on its own.
    import asyncio  # noqa: PLC0415 - asyncio only

    cluster = Cluster()
    cluster.script(op, raises(asyncio.CancelledError("client gave up")))
    run, recorder = rollout(cluster, InPlace(cluster), failure=FailurePolicy(retries=1))
    with anyio.fail_after(10_000):
        result = await run.run()
    sound(result, cluster, recorder)
    assert result.status is RolloutStatus.SUCCEEDED, result
    backing_off = [e for e in recorder.of_type(rolling.InstancePhaseChanged) if e.reason]
    assert (
        backing_off[0].reason
        == f"{'driver' if op == 'replace' else 'router'}.{op} raised CancelledError: client gave up"
    )


async def test_a_real_cancellation_during_a_call_still_cancels() -> None:
    # concepts.md: cancelling the task that runs a rollout lets the call in flight finish
    # (shielded), settles, ends CANCELLED, and the cancellation propagates.
    cluster = Cluster()

    async def slow(_c: Cluster, _a: tuple[Any, ...]) -> Any:
        await anyio.sleep(50)
        return PROCEED

    cluster.script("replace", slow)
    run, recorder = rollout(cluster, InPlace(cluster), effect_timeout=600, cleanup_timeout=100)
    with anyio.move_on_after(10):
        await run.run()
    result = recorder.of_type(rolling.RolloutFinished)[0].result
    assert result.status is RolloutStatus.CANCELLED
    sound(result, cluster, recorder)
    # The replace finished (shielded, within cleanup_timeout), and s0 was put back in.
    assert result.by_id("s0").version == "v2"
    assert result.by_id("s0").outcome is InstanceOutcome.UPDATED


@pytest.mark.parametrize("anyio_backend", ["asyncio"], indirect=True)
async def test_a_cancellation_a_health_check_raises_by_itself_is_a_failed_probe() -> None:
    # writing-a-driver.md: "Raising is fine: an exception counts as a failed probe, with the
    # exception as its reason". A CancelledError of the check's own crashed the run.
    # On asyncio only: trio's Cancelled cannot be raised by a check on its own.
    import asyncio  # noqa: PLC0415 - asyncio only

    cluster = Cluster()
    cluster.script("check", *[proceed] * 4, raises(asyncio.CancelledError("probe gave up")))
    run, recorder = rollout(cluster, InPlace(cluster))
    with anyio.fail_after(10_000):
        result = await run.run()
    sound(result, cluster, recorder)
    assert result.status is RolloutStatus.SUCCEEDED, result
    assert result.duration == 1  # one failed probe, then a pass a period later


# ------------------------------------------------------------------ budgets


def failing_replace(*ids: str) -> Behaviour:
    """replace() raises for these instances when asked for v2, every time."""

    async def behaviour(_cluster: Cluster, args: tuple[Any, ...]) -> Any:
        instance, version = args
        if instance.id in ids and version == "v2":
            raise OSError(f"{instance.id}: disk full")
        return PROCEED

    return behaviour


async def test_max_failed_must_be_exceeded_and_each_failure_is_named() -> None:
    # concepts.md, Failures: max_failed=2 tolerates two, and the third fires; inside the
    # budget the status is DEGRADED and each failure is named; a tolerated failure is put
    # back on its old version and in traffic ("restored to ...").
    cluster = Cluster(6)
    cluster.every("replace", failing_replace("s1", "s4"))
    run, recorder = rollout(cluster, InPlace(cluster), failure=FailurePolicy(max_failed=2))
    result = await run.run()
    sound(result, cluster, recorder, start=[f"s{i}" for i in range(6)])
    assert result.status is RolloutStatus.DEGRADED
    assert result.counts == {InstanceOutcome.UPDATED: 4, InstanceOutcome.FAILED: 2}
    for key in ("s1", "s4"):
        item = result.by_id(key)
        assert item.reason == f"driver.replace raised OSError: {key}: disk full; restored to v1"
        assert item.serving
        assert item.version == "v1"

    cluster = Cluster(6)
    cluster.every("replace", failing_replace("s1", "s3", "s4"))
    run, recorder = rollout(cluster, InPlace(cluster), failure=FailurePolicy(max_failed=2))
    result = await run.run()
    sound(result, cluster, recorder, start=[f"s{i}" for i in range(6)])
    assert result.status is RolloutStatus.ROLLED_BACK
    assert "s4" in result.reason
    assert {svc.version for svc in cluster.services.values()} == {"v1"}


async def test_the_circuit_breaker_counts_failures_in_a_row() -> None:
    # concepts.md: circuit_breaker failed instances in a row trip the breaker; any instance
    # that succeeds resets the count.
    cluster = Cluster(6)
    cluster.every("replace", failing_replace("s0", "s2", "s4"))
    run, recorder = rollout(
        cluster, InPlace(cluster), failure=FailurePolicy(max_failed=5, circuit_breaker=2)
    )
    result = await run.run()
    sound(result, cluster, recorder, start=[f"s{i}" for i in range(6)])
    assert result.status is RolloutStatus.DEGRADED, result

    cluster = Cluster(6)
    cluster.every("replace", failing_replace("s2", "s3"))
    run, recorder = rollout(
        cluster, InPlace(cluster), failure=FailurePolicy(max_failed=5, circuit_breaker=2)
    )
    result = await run.run()
    sound(result, cluster, recorder, start=[f"s{i}" for i in range(6)])
    assert result.status is RolloutStatus.ROLLED_BACK, result
    assert "s3" in result.reason
    assert result.by_id("s4").outcome is InstanceOutcome.PENDING


async def test_retries_start_from_where_the_last_attempt_left_the_instance() -> None:
    # concepts.md: retries extra attempts, BACKING_OFF between them for initial *
    # factor ** (n - 1); writing-a-driver.md: a hung call is cut at effect_timeout.
    cluster = Cluster(2)
    cluster.script("replace", hang, raises(OSError("again")))
    run, recorder = rollout(
        cluster,
        InPlace(cluster),
        failure=FailurePolicy(retries=2, backoff=rolling.Backoff(initial=5, factor=3)),
    )
    result = await run.run()
    sound(result, cluster, recorder, start=["s0", "s1"])
    assert result.status is RolloutStatus.SUCCEEDED
    assert result.by_id("s0").attempts == 3
    backing = [
        e for e in recorder.of_type(rolling.InstancePhaseChanged) if e.phase is Phase.BACKING_OFF
    ]
    assert [e.at for e in backing] == [30, 35]
    assert [e.attempt for e in backing] == [1, 2]
    assert backing[0].reason == "driver.replace did not return within 30.0s"
    assert result.by_id("s0").finished_at == 35 + 15


# ------------------------------------------------------------------ readiness


async def test_a_check_that_hangs_is_cut_at_its_timeout_and_fails_at_the_deadline() -> None:
    # concepts.md, Readiness: timeout is the longest one probe may take (then a failure);
    # with failure_threshold None the attempt fails at the deadline with a reason that quotes
    # the last failed probe.
    cluster = Cluster(2)

    async def hangs_on_v2(c: Cluster, args: tuple[Any, ...]) -> Any:
        if c.services[args[0].id].version == "v2":
            await anyio.sleep_forever()
        return PROCEED

    cluster.every("check", hangs_on_v2)
    run, recorder = rollout(
        cluster,
        InPlace(cluster),
        readiness=Readiness(check=cluster, period=5, timeout=2.0, deadline=60.0),
    )
    result = await run.run()
    sound(result, cluster, recorder, start=["s0", "s1"])
    assert result.status is RolloutStatus.ROLLED_BACK
    item = result.by_id("s0")
    assert item.reason.startswith(
        "not ready within the 60.0s deadline; last probe: check timed out after 2.0s"
    ), item
    failed = [e for e in recorder.of_type(rolling.InstancePhaseChanged) if e.phase is Phase.FAILED]
    assert failed[0].at == 60


async def test_a_flapping_check_with_min_ready_starts_the_count_over() -> None:
    # concepts.md: "One failed probe inside those 30 s sends it back to needing
    # success_threshold passes in a row and then min_ready more."
    cluster = Cluster(1)
    answers = iter([True, True, True, False] + [True] * 100)

    async def flaps(c: Cluster, args: tuple[Any, ...]) -> Any:
        if c.services[args[0].id].version == "v2":
            return rolling.HealthResult(healthy=next(answers), reason="flap")
        return PROCEED

    cluster.every("check", flaps)
    run, recorder = rollout(
        cluster,
        InPlace(cluster),
        readiness=Readiness(check=cluster, period=5, success_threshold=2, min_ready=30),
    )
    result = await run.run()
    sound(result, cluster, recorder, start=["s0"])
    assert result.status is RolloutStatus.SUCCEEDED
    # Passes at 0, 5 (ready), 10, a failure at 15; passes at 20, 25 (ready again), then 30 s.
    assert result.duration == 55


async def test_failure_threshold_fails_the_attempt_at_once() -> None:
    cluster = Cluster(2, bad=["v2"])
    run, recorder = rollout(
        cluster,
        InPlace(cluster),
        readiness=Readiness(check=cluster, period=1, failure_threshold=3, deadline=300),
    )
    result = await run.run()
    sound(result, cluster, recorder, start=["s0", "s1"])
    assert result.status is RolloutStatus.ROLLED_BACK
    assert result.by_id("s0").reason.startswith("3 failed probes in a row: v2 answers 500")


# ------------------------------------------------------------------ canary and blue-green


PAIRED_OPS = ("launch", "terminate", "detach", "attach", "set_weight", "check")


def paired(name: str, weighted: bool) -> tuple[WeightedCluster | Cluster, dict[str, Any]]:
    cluster: WeightedCluster | Cluster = (
        WeightedCluster(max_unavailable=0, max_surge=4)
        if weighted
        else Cluster(max_unavailable=0, max_surge=4)
    )
    if name == "canary":
        options: dict[str, Any] = {
            "strategy": rolling.Canary(scale_down_delay=5),
            "steps": [rolling.SetWeight(25), rolling.Pause(10), rolling.SetWeight(50)],
        }
    elif name == "canary-window":
        options = {
            "strategy": rolling.Canary(promotion=RollingUpdate(max_unavailable=0, max_surge=1)),
            "steps": [rolling.SetWeight(25), rolling.Pause(10)],
        }
    else:
        options = {"strategy": rolling.BlueGreen(scale_down_delay=5)}
    return cluster, options


PAIRED_CASES = [
    pytest.param(name, weighted, op, fault, id=f"{name}-{'w' if weighted else 'p'}-{op}-{fault}")
    for name, weighted in (
        ("canary", True),
        ("canary-window", True),
        ("blue-green", True),
        ("blue-green", False),
    )
    for op in PAIRED_OPS
    if weighted or op != "set_weight"
    for fault in ("raises", "hang", "half")
    if fault != "half" or op in {"detach", "attach"}
]


@pytest.mark.parametrize(("name", "weighted", "op", "fault"), PAIRED_CASES)
async def test_a_faulty_call_in_a_canary_or_blue_green_is_accounted_for(
    name: str, weighted: bool, op: str, fault: str
) -> None:
    # canary.md, Rollback: "A failed set_weight, attach or detach while traffic moves is a
    # trigger, handled by the rollout's rollback policy"; concepts.md: every instance of the
    # starting fleet is reported as it stands, and nothing leaks.
    cluster, options = paired(name, weighted)
    if op == "check":
        cluster.script(op, *[proceed] * 4)
    if fault == "hang":
        cluster.script(op, hang)
    elif fault == "half":
        cluster.script(
            op,
            half_detach(raises(OSError("drain")))
            if op == "detach"
            else half_attach(raises(OSError("confirm"))),
        )
    else:
        cluster.script(op, raises(OSError(f"{op} broke")))
    run, recorder = rollout(cluster, Elastic(cluster), **options)
    with anyio.fail_after(100_000):
        result = await run.run()
    truth(result, cluster, [f"s{i}" for i in range(4)])
    last = {e.instance_id: e for e in recorder.of_type(rolling.InstancePhaseChanged)}
    for item in result.instances:
        event = last.get(item.id)
        if event is not None and item.outcome is not InstanceOutcome.PENDING:
            assert str(event.phase) == str(item.outcome), (item, event)
    assert not cluster.busy, cluster.busy
    assert not cluster.violations, cluster.violations
    assert result.status in {
        RolloutStatus.SUCCEEDED,
        RolloutStatus.ROLLED_BACK,
        RolloutStatus.DEGRADED,
    }, result
    if result.status is RolloutStatus.ROLLED_BACK:
        # Every request back on the old set, which never stopped, but for what is named as
        # failing to revert (a stray of a window promotion holds its surge: stuck).
        back = [i for i in result.instances if i.outcome is not InstanceOutcome.REVERT_FAILED]
        assert {i.version for i in back} == {"v1"}, result
        if weighted:
            live_old = [i.current_id for i in result.instances if i.current_id is not None]
            assert all(cluster.weights.get(i, 100) == 100 for i in live_old), cluster.weights


# ------------------------------------------------------------------ cancellation and halts


@pytest.mark.parametrize(
    ("name", "op"),
    [
        (name, op)
        for name in ("in-place", "surge", "take-out")
        for op in ("replace", "launch", "terminate", "detach", "attach")
        if op in OPS[name]
    ],
)
async def test_a_cancellation_with_every_call_hung_ends_within_twice_cleanup_timeout(
    name: str, op: str
) -> None:
    # concepts.md, Cancellation: a cancellation takes effect within about twice
    # cleanup_timeout in the worst case (a hung call cut, then a restore that hangs too and
    # is cut), plus the timeout of one health probe; nothing is left unreported.
    cluster, driver, strategy = make(name)
    # The first call works (something changed), then every one hangs.
    cluster.script(op, proceed)
    cluster.every(op, hang)
    run, recorder = rollout(
        cluster, driver, strategy=strategy, effect_timeout=600, cleanup_timeout=10
    )
    cancelled_at = 0.0
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:

            async def cancel_soon() -> None:
                nonlocal cancelled_at
                await anyio.sleep(100)
                cancelled_at = anyio.current_time()
                scope.cancel()

            tg.start_soon(cancel_soon)
            await run.run()
    finished = recorder.of_type(rolling.RolloutFinished)
    assert len(finished) == 1
    result = finished[0].result
    assert result.status is RolloutStatus.CANCELLED
    assert result.finished_at <= cancelled_at + 2 * 10 + 1, result.finished_at - cancelled_at
    # What was cut may still be running in the platform: only its own return would say.
    cluster.busy.clear()
    sound(result, cluster, recorder)


@pytest.mark.parametrize(("name", "op", "fault"), CASES[::3])
async def test_a_faulty_call_under_halt_leaves_the_fleet_reported_exactly(
    name: str, op: str, fault: str
) -> None:
    # concepts.md, Rollback: halt stops where it is and reports the mixed fleet exactly; an
    # instance interrupted out of traffic is put back if it passes one check, else reported
    # serving=False.
    cluster, driver, strategy = make(name)
    if op == "check":
        cluster.script(op, *[proceed] * 4)
    if fault == "hang":
        cluster.script(op, hang)
    elif fault == "always":
        cluster.script(op, proceed)
        cluster.every(op, raises(OSError("always")))
    else:
        cluster.script(op, raises(ERRORS[fault]))
    run, recorder = rollout(cluster, driver, strategy=strategy, rollback="halt")
    with anyio.fail_after(10_000):
        result = await run.run()
    sound(result, cluster, recorder)
    assert result.status in {RolloutStatus.HALTED, RolloutStatus.SUCCEEDED}, result
    if result.status is RolloutStatus.HALTED:
        started = recorder.of_type(rolling.RollbackStarted)
        assert [(s.mode, s.instance_ids) for s in started] == [("halt", ())]


# ------------------------------------------------------------------ what is announced


async def test_rollout_started_names_the_plan_unhealthy_first() -> None:
    # events.RolloutStarted; concepts.md, "Unhealthy first": an instance that fails the check
    # before the rollout goes first, is listed in `unhealthy`, and costs no availability.
    cluster = Cluster()
    cluster.services["s3"] = Svc("s3", "v2", "b")
    cluster.unhealthy.add("s2")

    async def heal_on_replace(c: Cluster, args: tuple[Any, ...]) -> Any:
        c.unhealthy.discard(args[0].id)
        return PROCEED

    cluster.every("replace", heal_on_replace)
    cluster.floor = 2  # s2 was not serving: the floor of 3 is lowered to what served
    run, recorder = rollout(cluster, InPlace(cluster))
    result = await run.run()
    sound(result, cluster, recorder)
    started = recorder.of_type(rolling.RolloutStarted)
    assert len(started) == 1
    event = started[0]
    assert event.target == "v2"
    assert event.desired == 4
    assert event.to_update == ("s2", "s0", "s1")
    assert event.skipped == ("s3",)
    assert event.unhealthy == ("s2",)
    assert (event.max_unavailable, event.max_surge) == (1, 0)
    assert result.by_id("s3").outcome is InstanceOutcome.SKIPPED
    assert result.status is RolloutStatus.SUCCEEDED
    # Every phase event comes after RolloutStarted ("about to touch the fleet"), the
    # SKIPPED one too: RolloutStarted names it first.
    index = recorder.events.index(event)
    phases = recorder.of_type(rolling.InstancePhaseChanged)
    assert all(recorder.events.index(e) > index for e in phases)
    assert [e.phase for e in phases if e.instance_id == "s3"] == [Phase.SKIPPED]
    # The unhealthy one went first, and alone: nothing else out while it was.
    first = [e.instance_id for e in phases if e.phase is Phase.DETACHING]
    assert first[0] == "s2"


async def test_a_check_that_raises_in_the_survey_makes_the_instance_unhealthy_first() -> None:
    # writing-a-driver.md: the check runs once on every instance before the rollout starts,
    # "to find the ones that are already unhealthy"; raising counts as a failed probe.
    cluster = Cluster()

    async def raise_for_s1(c: Cluster, args: tuple[Any, ...]) -> Any:
        if args[0].id == "s1" and c.services["s1"].version == "v1":
            raise ConnectionResetError("peer reset")
        return PROCEED

    cluster.every("check", raise_for_s1)
    run, recorder = rollout(cluster, InPlace(cluster))
    result = await run.run()
    assert result.status is RolloutStatus.SUCCEEDED
    event = recorder.of_type(rolling.RolloutStarted)[0]
    assert event.unhealthy == ("s1",)
    assert event.to_update[0] == "s1"


@pytest.mark.parametrize("action", ["rollback", "halt"])
async def test_a_progress_deadline_during_a_hung_call_lets_the_call_finish(action: str) -> None:
    # concepts.md, Rollback: when a trigger fires, rolling starts nothing new and lets driver
    # calls in flight finish; the progress deadline is such a trigger.
    cluster = Cluster()

    async def slow(_c: Cluster, _a: tuple[Any, ...]) -> Any:
        await anyio.sleep(250)
        return PROCEED

    cluster.script("replace", slow)
    run, recorder = rollout(
        cluster,
        InPlace(cluster),
        effect_timeout=600,
        progress_deadline=rolling.ProgressDeadline(100, action=action),
    )
    result = await run.run()
    sound(result, cluster, recorder)
    exceeded = recorder.of_type(rolling.ProgressDeadlineExceeded)
    assert [e.at for e in exceeded] == [100]
    assert result.finished_at >= 250
    if action == "rollback":
        assert result.status is RolloutStatus.ROLLED_BACK
        assert {svc.version for svc in cluster.services.values()} == {"v1"}
    else:
        assert result.status is RolloutStatus.HALTED
    assert cluster.traffic == set(cluster.services)


class FailingJournal:
    """A journal whose appends start failing after ``good`` records."""

    def __init__(self, good: int, error: BaseException) -> None:
        self.records: list[dict[str, Any]] = []
        self.good = good
        self.error = error
        self.closed = False

    async def load(self) -> list[dict[str, Any]]:
        return []

    async def append(self, record: dict[str, Any], *, sync: bool = False) -> None:  # noqa: ARG002 - the protocol's
        if len(self.records) >= self.good:
            raise self.error
        self.records.append(record)

    async def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("good", [0, 1, 5, 12])
async def test_a_journal_that_fails_stops_the_rollout_before_the_change_it_announces(
    good: int,
) -> None:
    # recovery.md: durability is write-ahead (the record announcing an effect is on disk
    # before the effect starts); Rollout.run: a journal failure is an error run() raises.
    cluster = Cluster()
    error = OSError(28, "No space left on device")
    journal = FailingJournal(good, error)
    run, recorder = rollout(cluster, InPlace(cluster), journal=journal, lock=None)
    with pytest.raises(OSError, match="No space left") as caught:
        await run.run()
    assert caught.value is error
    result = recorder.of_type(rolling.RolloutFinished)[0].result
    assert result.status is RolloutStatus.HALTED
    truth(result, cluster, [f"s{i}" for i in range(4)])
    assert journal.closed
    # Write-ahead: every change the cluster saw was announced by a start record first.
    announced = [(r["op"], r["i"]) for r in journal.records if r.get("s") == "start"]
    changes = [(op, key) for op, key in cluster.calls if op in {"replace", "detach", "attach"}]
    assert changes == announced


async def test_a_surge_retry_after_a_failed_detach_goes_on_from_the_new_instance() -> None:
    # concepts.md: "A retry starts from wherever the last attempt left the instance", and
    # the floor holds. The new instance in traffic used to be dropped first, while the old
    # one was already out of new traffic (its drain gave up): the place stood empty.
    cluster, driver, strategy = make("surge")
    cluster.script("detach", half_detach(raises(TimeoutError("drain took over 20s"))))
    run, recorder = rollout(cluster, driver, strategy=strategy, failure=FailurePolicy(retries=1))
    result = await run.run()
    sound(result, cluster, recorder)
    assert result.status is RolloutStatus.SUCCEEDED
    assert result.by_id("s0").attempts == 2
    assert [op for op, _ in cluster.calls].count("launch") == 4  # one per instance


async def test_an_instance_in_doubt_that_fails_its_check_is_taken_out_as_reported() -> None:
    # concepts.md: an instance out of traffic is put back if it passes one check on the
    # spot, otherwise reported serving=False. After a failed detach it may still be in
    # traffic: it is detached, so that the report is the truth.
    cluster = Cluster()

    async def drain_fails_and_sickens(c: Cluster, args: tuple[Any, ...]) -> Any:
        if args[0].id != "s0" or "s0" in c.unhealthy:
            return PROCEED
        c.unhealthy.add("s0")
        raise OSError("drain failed")

    cluster.every("detach", drain_fails_and_sickens)
    cluster.floor = 1  # s0 fell ill by itself: not the engine's doing
    run, recorder = rollout(
        cluster,
        InPlace(cluster),
        strategy=RollingUpdate(max_unavailable=2),
        failure=FailurePolicy(max_failed=1),
    )
    result = await run.run()
    sound(result, cluster, recorder)
    assert result.status is RolloutStatus.DEGRADED
    item = result.by_id("s0")
    assert not item.serving
    assert "s0" not in cluster.traffic
    assert item.reason == "router.detach raised OSError: drain failed"


@pytest.mark.parametrize("half", [False, True])
async def test_a_blue_green_switch_whose_detach_fails_is_halted_truthfully(half: bool) -> None:
    # canary.md: a failed detach while traffic moves is a trigger; a halt leaves both sets
    # as they are, reported exactly (concepts.md: `serving` is what stands there now).
    cluster = Cluster(max_unavailable=0, max_surge=4)

    async def fails_for_s2(c: Cluster, args: tuple[Any, ...]) -> Any:
        if args[0].id != "s2":
            return PROCEED
        c.always.pop("detach")
        if half:
            c.traffic.discard("s2")
        raise OSError("drain failed")

    cluster.every("detach", fails_for_s2)
    run, _ = rollout(cluster, Elastic(cluster), strategy=rolling.BlueGreen(), rollback="halt")
    result = await run.run()
    assert result.status is RolloutStatus.HALTED
    truth(result, cluster, [f"s{i}" for i in range(4)])
    item = result.by_id("s2")
    assert item.serving
    assert "s2" in cluster.traffic

"""SimulatedFleet: inventory, operations in virtual time, faults, the call log and listeners."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, TypeVar

import anyio
import pytest

from rolling import ConfigError, HealthResult, RollingError
from rolling.testing import (
    Fault,
    FleetCall,
    FleetChange,
    Latency,
    SimInstance,
    SimulatedFault,
    SimulatedFleet,
    SimulationError,
)
from rolling.typing import Driver, ElasticDriver, HealthCheck, Router

if TYPE_CHECKING:
    from collections.abc import Awaitable

pytestmark = pytest.mark.anyio


T = TypeVar("T")


async def elapsed(awaitable: Awaitable[T]) -> tuple[T, float]:
    start = anyio.current_time()
    value = await awaitable
    return value, anyio.current_time() - start


def by_id(fleet: SimulatedFleet, instance_id: str) -> SimInstance:
    return fleet.get(instance_id)


# ---------------------------------------------------------------- inventory


def test_default_ids_zones_and_state() -> None:
    fleet = SimulatedFleet(3, zones=("a", "b"))
    assert [i.id for i in fleet.instances] == ["i-000", "i-001", "i-002"]
    assert [i.zone for i in fleet.instances] == ["a", "b", "a"]
    assert {i.version for i in fleet.instances} == {"v1"}
    assert {i.generation for i in fleet.instances} == {0}
    assert fleet.attached_ids == ("i-000", "i-001", "i-002")
    assert fleet.desired == 3
    assert fleet.serving_count() == 3
    assert fleet.existing_count() == 3
    assert fleet.version_counts() == {"v1": 3}
    assert fleet.launched_ids == ()
    assert fleet.terminated_ids == ()
    assert fleet.calls == []


def test_ids_widen_for_large_fleets_so_they_sort() -> None:
    fleet = SimulatedFleet(1001)
    ids = [i.id for i in fleet.instances]
    assert ids[0] == "i-0000"
    assert ids[-1] == "i-1000"
    assert ids == sorted(ids)


def test_explicit_ids_and_version() -> None:
    fleet = SimulatedFleet(ids=["web-1", "web-2"], version="2024.1")
    assert [(i.id, i.version) for i in fleet.instances] == [
        ("web-1", "2024.1"),
        ("web-2", "2024.1"),
    ]
    assert fleet.desired == 2


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"size": -1}, "SimulatedFleet.size"),
        ({"size": 3, "ids": ["a", "b"]}, "SimulatedFleet.ids"),
        ({"ids": ["a", "a"]}, "SimulatedFleet.ids"),
        ({"size": 1, "zones": ()}, "SimulatedFleet.zones"),
    ],
)
def test_invalid_construction_is_a_config_error(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        SimulatedFleet(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_satisfies_every_protocol() -> None:
    fleet = SimulatedFleet(1)
    assert isinstance(fleet, Driver)
    assert isinstance(fleet, ElasticDriver)
    assert isinstance(fleet, Router)
    assert isinstance(fleet, HealthCheck)


async def test_list_instances_in_inventory_order_with_launched_last() -> None:
    fleet = SimulatedFleet(3)
    await fleet.terminate(by_id(fleet, "i-001"))
    launched = await fleet.launch("v2")
    listed = await fleet.list_instances()
    assert [i.id for i in listed] == ["i-000", "i-002", launched.id]
    assert fleet.calls[-1] == FleetCall("list_instances", None, None)


# ---------------------------------------------------------------- operations


async def test_replace_takes_its_latency_and_returns_a_new_snapshot() -> None:
    fleet = SimulatedFleet(2, latency=Latency(replace=7.5))
    before = by_id(fleet, "i-000")
    after, took = await elapsed(fleet.replace(before, "v2"))
    assert took == pytest.approx(7.5)
    assert after == SimInstance(id="i-000", version="v2", zone="a", generation=1)
    assert before.version == "v1"  # snapshots never change
    assert fleet.version_counts() == {"v2": 1, "v1": 1}
    again = await fleet.replace(after, "v3")
    assert again.generation == 2


async def test_an_instance_does_not_run_while_it_is_replaced() -> None:
    fleet = SimulatedFleet(1, latency=Latency(replace=10))
    instance = by_id(fleet, "i-000")
    seen: list[tuple[bool, HealthResult]] = []

    async def probe() -> None:
        await anyio.sleep(5)
        seen.append((fleet.is_running("i-000"), await fleet.check(instance)))

    async with anyio.create_task_group() as tg:
        tg.start_soon(probe)
        await fleet.replace(instance, "v2")
    assert seen == [(False, HealthResult(healthy=False, reason="not running"))]
    assert fleet.is_running("i-000")
    assert await fleet.check(instance) == HealthResult(healthy=True)


async def test_launch_creates_a_running_detached_instance_that_exists_from_the_start() -> None:
    fleet = SimulatedFleet(3, zones=("a", "b"), latency=Latency(launch=20))
    during: list[tuple[int, list[str]]] = []
    instance, took = None, 0.0

    async def look() -> None:
        await anyio.sleep(1)
        during.append((fleet.existing_count(), [i.id for i in await fleet.list_instances()]))

    async with anyio.create_task_group() as tg:
        tg.start_soon(look)
        instance, took = await elapsed(fleet.launch("v2"))
    assert took == pytest.approx(20)
    assert during == [(4, ["i-000", "i-001", "i-002"])]
    assert instance == SimInstance(id="n-000", version="v2", zone="b", generation=0)
    assert fleet.is_running("n-000")
    assert not fleet.is_attached("n-000")
    assert not fleet.is_serving("n-000")
    assert fleet.launched_ids == ("n-000",)
    assert (await fleet.launch("v2")).id == "n-001"
    assert fleet.existing_count() == 5


async def test_terminate_removes_the_instance_after_its_latency() -> None:
    fleet = SimulatedFleet(2, latency=Latency(terminate=3))
    _, took = await elapsed(fleet.terminate(by_id(fleet, "i-000")))
    assert took == pytest.approx(3)
    assert [i.id for i in fleet.instances] == ["i-001"]
    assert fleet.terminated_ids == ("i-000",)
    assert fleet.existing_count() == 1
    assert not fleet.is_live("i-000")


@pytest.mark.parametrize("op", ["replace", "terminate", "detach", "attach", "check"])
async def test_operations_on_terminated_or_unknown_instances_raise(op: str) -> None:
    fleet = SimulatedFleet(2)
    gone = by_id(fleet, "i-000")
    await fleet.terminate(gone)
    ghost = SimInstance(id="i-999", version="v1", zone="a")

    async def call(instance: SimInstance) -> object:
        if op == "replace":
            return await fleet.replace(instance, "v2")
        method = getattr(fleet, op)
        return await method(instance)

    with pytest.raises(SimulationError, match="'i-000' was terminated") as info:
        await call(gone)
    assert isinstance(info.value, KeyError)
    assert isinstance(info.value, RollingError)
    assert str(info.value).startswith(f"{op}: instance 'i-000'")
    with pytest.raises(SimulationError, match="'i-999' is not in the fleet"):
        await call(ghost)
    assert (fleet.calls[-1].op, fleet.calls[-1].instance_id) == (op, "i-999")


async def test_detach_drains_before_traffic_stops_and_attach_restores_it() -> None:
    fleet = SimulatedFleet(2, latency=Latency(detach=30, attach=2))
    instance = by_id(fleet, "i-000")
    midway: list[bool] = []
    took = 0.0

    async def look() -> None:
        await anyio.sleep(15)
        midway.append(fleet.is_attached("i-000"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(look)
        _, took = await elapsed(fleet.detach(instance))
    assert took == pytest.approx(30)
    assert midway == [True]
    assert list(fleet.attached_ids) == ["i-001"]
    assert fleet.serving_count() == 1
    _, took = await elapsed(fleet.attach(instance))
    assert took == pytest.approx(2)
    assert list(fleet.attached_ids) == ["i-000", "i-001"]
    assert fleet.serving_count() == 2


async def test_check_takes_its_latency() -> None:
    fleet = SimulatedFleet(1, latency=Latency(check=0.25))
    result, took = await elapsed(fleet.check(by_id(fleet, "i-000")))
    assert result == HealthResult(healthy=True)
    assert took == pytest.approx(0.25)


async def test_per_instance_latency_overrides_the_fleet_default() -> None:
    fleet = SimulatedFleet(2, latency=Latency(replace=1, launch=4))
    fleet.set_latency("i-001", replace=9)
    fleet.set_latency("n-000", launch=60)
    _, fast = await elapsed(fleet.replace(by_id(fleet, "i-000"), "v2"))
    _, slow = await elapsed(fleet.replace(by_id(fleet, "i-001"), "v2"))
    _, first_launch = await elapsed(fleet.launch("v2"))
    _, second_launch = await elapsed(fleet.launch("v2"))
    assert (fast, slow, first_launch, second_launch) == pytest.approx((1, 9, 60, 4))


async def test_latency_functions_draw_from_the_seeded_generator() -> None:
    latency = Latency(replace=lambda rng: rng.uniform(5, 15))
    expected_rng = random.Random(42)
    expected = [expected_rng.uniform(5, 15) for _ in range(3)]
    fleet = SimulatedFleet(3, latency=latency, seed=42)
    took = [(await elapsed(fleet.replace(i, "v2")))[1] for i in fleet.instances]
    assert took == pytest.approx(expected)
    other = SimulatedFleet(3, latency=latency, seed=43)
    other_took = [(await elapsed(other.replace(i, "v2")))[1] for i in other.instances]
    assert other_took != pytest.approx(expected)


async def test_negative_latency_samples_count_as_zero() -> None:
    fleet = SimulatedFleet(1, latency=Latency(detach=lambda _rng: -5.0))
    _, took = await elapsed(fleet.detach(by_id(fleet, "i-000")))
    assert took == 0


def test_invalid_latencies_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"Latency\.replace"):
        Latency(replace=-1)
    fleet = SimulatedFleet(1)
    with pytest.raises(ConfigError, match=r"set_latency\.check"):
        fleet.set_latency("i-000", check=float("nan"))


# ---------------------------------------------------------------- faults


async def test_replace_raises_fails_the_first_n_calls_and_changes_nothing() -> None:
    fleet = SimulatedFleet(2, latency=Latency(replace=4))
    fleet.fault("i-000", replace_raises=2)
    instance = by_id(fleet, "i-000")
    for _ in range(2):
        start = anyio.current_time()
        with pytest.raises(SimulatedFault, match=r"replace of i-000 \(v2\) failed"):
            await fleet.replace(instance, "v2")
        assert anyio.current_time() - start == pytest.approx(4)  # it takes time to fail
        assert by_id(fleet, "i-000") == instance
        assert fleet.is_running("i-000")
        assert fleet.in_progress() == {}
    assert (await fleet.replace(instance, "v2")).version == "v2"
    assert (await fleet.replace(by_id(fleet, "i-001"), "v2")).version == "v2"


async def test_raises_true_fails_every_call() -> None:
    fleet = SimulatedFleet(1)
    fleet.inject(Fault(replace_raises=True), instance_id="i-000")
    for _ in range(5):
        with pytest.raises(SimulatedFault):
            await fleet.replace(by_id(fleet, "i-000"), "v2")
    assert fleet.version_counts() == {"v1": 1}


async def test_a_replace_fault_on_a_version_matches_the_version_installed() -> None:
    fleet = SimulatedFleet(3)
    fleet.fault(version="v2", replace_raises=True)
    for instance in fleet.instances:
        with pytest.raises(SimulatedFault):
            await fleet.replace(instance, "v2")
    assert (await fleet.replace(by_id(fleet, "i-000"), "v3")).version == "v3"
    # a version fault's counter is shared by every instance
    fleet.fault(version="v4", replace_raises=1)
    with pytest.raises(SimulatedFault):
        await fleet.replace(by_id(fleet, "i-001"), "v4")
    assert (await fleet.replace(by_id(fleet, "i-002"), "v4")).version == "v4"


async def test_launch_raises_leaves_no_instance() -> None:
    fleet = SimulatedFleet(2, latency=Latency(launch=5))
    fleet.fault(version="v2", launch_raises=1)
    with pytest.raises(SimulatedFault, match="launch of n-000"):
        await fleet.launch("v2")
    assert fleet.existing_count() == 2
    assert len(fleet.launched_ids) == 0
    assert (await fleet.launch("v2")).id == "n-001"
    assert list(fleet.launched_ids) == ["n-001"]


async def test_terminate_detach_and_attach_faults_leave_the_instance_as_it_was() -> None:
    fleet = SimulatedFleet(2)
    fleet.fault("i-000", terminate_raises=True, detach_raises=True)
    fleet.fault("i-001", attach_raises=True)
    with pytest.raises(SimulatedFault, match="terminate of i-000"):
        await fleet.terminate(by_id(fleet, "i-000"))
    assert fleet.is_live("i-000")
    assert fleet.is_running("i-000")
    with pytest.raises(SimulatedFault, match="detach of i-000"):
        await fleet.detach(by_id(fleet, "i-000"))
    assert fleet.is_attached("i-000")
    await fleet.detach(by_id(fleet, "i-001"))
    with pytest.raises(SimulatedFault, match="attach of i-001"):
        await fleet.attach(by_id(fleet, "i-001"))
    assert not fleet.is_attached("i-001")


async def test_check_raises() -> None:
    fleet = SimulatedFleet(1)
    fleet.fault("i-000", check_raises=1)
    with pytest.raises(SimulatedFault, match="check of i-000"):
        await fleet.check(by_id(fleet, "i-000"))
    assert await fleet.check(by_id(fleet, "i-000")) == HealthResult(healthy=True)
    assert fleet.is_serving("i-000")  # a probe that errors is not lost capacity


async def test_never_ready_follows_the_version_including_launched_instances() -> None:
    fleet = SimulatedFleet(2)
    fleet.fault(version="v2", never_ready=True)
    instance = by_id(fleet, "i-000")
    assert await fleet.check(instance) == HealthResult(healthy=True)
    updated = await fleet.replace(instance, "v2")
    assert await fleet.check(updated) == HealthResult(healthy=False, reason="never ready")
    assert not fleet.is_serving("i-000")
    launched = await fleet.launch("v2")
    assert (await fleet.check(launched)).reason == "never ready"
    reverted = await fleet.replace(updated, "v1")
    assert (await fleet.check(reverted)).healthy
    assert fleet.is_serving("i-000")


async def test_unhealthy_at_start_lasts_until_the_version_changes() -> None:
    fleet = SimulatedFleet(3)
    fleet.fault("i-001", unhealthy_at_start=True)
    sick = by_id(fleet, "i-001")
    assert not (await fleet.check(sick)).healthy
    assert not fleet.is_serving("i-001")
    assert fleet.serving_count() == 2
    sick = await fleet.replace(sick, "v1")  # a restart on the same version cures nothing
    assert not (await fleet.check(sick)).healthy
    cured = await fleet.replace(sick, "v2")
    assert (await fleet.check(cured)).healthy
    back = await fleet.replace(cured, "v1")  # the cure sticks
    assert (await fleet.check(back)).healthy
    assert fleet.serving_count() == 3


async def test_unhealthy_at_start_on_a_version_applies_to_its_instances() -> None:
    fleet = SimulatedFleet(2)
    await fleet.replace(by_id(fleet, "i-000"), "v0")
    fleet.fault(version="v1", unhealthy_at_start=True)
    assert fleet.is_serving("i-000")
    assert not fleet.is_serving("i-001")
    await fleet.replace(by_id(fleet, "i-001"), "v2")
    assert fleet.is_serving("i-001")


async def test_flapping_alternates_but_still_serves() -> None:
    fleet = SimulatedFleet(2)
    fleet.fault("i-000", flapping=10)
    instance = by_id(fleet, "i-000")
    answers: list[bool] = []
    for _ in range(5):
        answers.append((await fleet.check(instance)).healthy)
        assert fleet.is_serving("i-000")
        await anyio.sleep(10)
    assert answers == [True, False, True, False, True]
    assert (await fleet.check(by_id(fleet, "i-001"))).healthy


async def test_hang_never_returns_but_can_be_cancelled() -> None:
    fleet = SimulatedFleet(1)
    fleet.fault("i-000", hang="replace")
    changes: list[FleetChange] = []
    fleet.add_listener(changes.append)
    start = anyio.current_time()
    with anyio.move_on_after(30) as scope:
        await fleet.replace(by_id(fleet, "i-000"), "v2")
    assert scope.cancelled_caught
    assert anyio.current_time() - start == pytest.approx(30)
    assert by_id(fleet, "i-000").version == "v1"
    assert fleet.is_running("i-000")
    assert fleet.in_progress() == {}
    assert [(c.op, c.phase) for c in changes] == [("replace", "begin"), ("replace", "end")]
    await fleet.detach(by_id(fleet, "i-000"))  # other operations still work


async def test_hang_on_check_is_cancellable_too() -> None:
    fleet = SimulatedFleet(1)
    fleet.inject(Fault(hang={"check"}), version="v1")
    with anyio.move_on_after(2) as scope:
        await fleet.check(by_id(fleet, "i-000"))
    assert scope.cancelled_caught


async def test_an_id_fault_and_a_version_fault_together_must_both_match() -> None:
    fleet = SimulatedFleet(2)
    fleet.inject(Fault(never_ready=True), instance_id="i-000", version="v2")
    assert fleet.is_serving("i-000")
    await fleet.replace(by_id(fleet, "i-000"), "v2")
    await fleet.replace(by_id(fleet, "i-001"), "v2")
    assert not fleet.is_serving("i-000")
    assert fleet.is_serving("i-001")


async def test_clear_faults_heals_the_fleet() -> None:
    fleet = SimulatedFleet(2)
    fleet.fault("i-000", unhealthy_at_start=True, replace_raises=True)
    fleet.fault(version="v1", never_ready=True)
    assert fleet.serving_count() == 0
    fleet.clear_faults()
    assert fleet.serving_count() == 2
    await fleet.replace(by_id(fleet, "i-000"), "v2")


def test_fault_validation() -> None:
    assert Fault(hang="replace").hang == frozenset({"replace"})
    assert Fault(hang=["detach", "check"]).hang == frozenset({"detach", "check"})
    with pytest.raises(ConfigError, match=r"Fault\.hang"):
        Fault(hang={"reboot"})
    with pytest.raises(ConfigError, match=r"Fault\.replace_raises"):
        Fault(replace_raises=-1)
    with pytest.raises(ConfigError, match=r"Fault\.flapping"):
        Fault(flapping=0)
    assert Fault(replace_raises=True).raise_limit("replace") is None
    assert Fault(replace_raises=3).raise_limit("replace") == 3
    assert Fault().raise_limit("replace") == 0


# ---------------------------------------------------------------- observation


async def test_calls_log_every_call_in_order_with_versions() -> None:
    fleet = SimulatedFleet(2)
    fleet.fault("i-001", replace_raises=1)
    await fleet.list_instances()
    old = by_id(fleet, "i-001")
    await fleet.detach(old)
    with pytest.raises(SimulatedFault):
        await fleet.replace(old, "v2")
    new = await fleet.replace(old, "v2")
    await fleet.check(new)
    await fleet.attach(new)
    launched = await fleet.launch("v3")
    await fleet.terminate(launched)
    assert fleet.calls == [
        ("list_instances", None, None),
        ("detach", "i-001", "v1"),
        ("replace", "i-001", "v2"),
        ("replace", "i-001", "v2"),
        ("check", "i-001", "v2"),
        ("attach", "i-001", "v2"),
        ("launch", "n-000", "v3"),
        ("terminate", "n-000", "v3"),
    ]
    assert fleet.calls[0].op == "list_instances"


async def test_listeners_hear_begin_before_the_change_and_end_after() -> None:
    fleet = SimulatedFleet(1, latency=Latency(detach=3, attach=2))
    seen: list[tuple[str, str, bool, float]] = []

    def listener(change: FleetChange) -> None:
        seen.append(
            (change.op, change.phase, fleet.is_attached(change.instance_id), change.at - start)
        )

    fleet.add_listener(listener)
    start = anyio.current_time()
    instance = by_id(fleet, "i-000")
    await fleet.detach(instance)
    await fleet.attach(instance)
    await fleet.check(instance)  # not a change
    fleet.remove_listener(listener)
    await fleet.detach(instance)
    assert seen == [
        ("detach", "begin", True, 0),
        ("detach", "end", False, 3),
        ("attach", "begin", False, 3),
        ("attach", "end", True, 5),
    ]


async def test_a_second_operation_on_a_busy_instance_is_reported_as_an_overlap() -> None:
    fleet = SimulatedFleet(2, latency=Latency(replace=10, detach=1, check=1))
    changes: list[FleetChange] = []
    fleet.add_listener(changes.append)
    busy: list[dict[str, tuple[str, ...]]] = []

    async def interfere() -> None:
        await anyio.sleep(2)
        await fleet.check(by_id(fleet, "i-000"))  # probing a busy instance is fine
        busy.append(fleet.in_progress())
        await fleet.detach(by_id(fleet, "i-000"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(interfere)
        await fleet.replace(by_id(fleet, "i-000"), "v2")
        await fleet.detach(by_id(fleet, "i-001"))  # a different instance: no overlap
    overlaps = [c for c in changes if c.op == "overlap"]
    assert [(c.instance_id, c.phase) for c in overlaps] == [("i-000", "begin")]
    assert overlaps[0].at - changes[0].at == pytest.approx(3)
    assert busy == [{"i-000": ("replace",)}]
    ops = [(c.op, c.phase) for c in changes]
    assert ops.index(("overlap", "begin")) == ops.index(("detach", "begin")) - 1
    assert fleet.in_progress() == {}

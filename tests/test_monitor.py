"""InvariantMonitor: floor, ceiling and overlap on every change; truth and leaks at the end."""

from __future__ import annotations

import contextlib

import anyio
import attrs
import pytest

from rolling import (
    InstanceOutcome,
    InstancePhaseChanged,
    InstanceResult,
    Phase,
    RolloutResult,
    RolloutStatus,
    StatusChanged,
)
from rolling.testing import (
    EventRecorder,
    InvariantMonitor,
    InvariantViolation,
    Latency,
    SimulatedFault,
    SimulatedFleet,
)

pytestmark = pytest.mark.anyio


def result(
    status: RolloutStatus, *items: InstanceResult, target: str = "v2", reason: str = ""
) -> RolloutResult:
    return RolloutResult(
        status=status,
        target=target,
        reason=reason,
        instances=items,
        started_at=0.0,
        finished_at=1.0,
    )


def item(
    instance_id: str,
    outcome: InstanceOutcome,
    *,
    version: str | None = "v2",
    current_id: str | None = "",
    serving: bool = True,
    old_version: str = "v1",
    reason: str = "",
) -> InstanceResult:
    return InstanceResult(
        id=instance_id,
        outcome=outcome,
        old_version=old_version,
        version=version,
        current_id=instance_id if current_id == "" else current_id,
        serving=serving,
        reason=reason,
    )


async def update_in_place(fleet: SimulatedFleet, instance_id: str, version: str = "v2") -> None:
    instance = fleet.get(instance_id)
    await fleet.detach(instance)
    updated = await fleet.replace(instance, version)
    await fleet.attach(updated)


# ---------------------------------------------------------------- on every change


async def test_a_correct_one_at_a_time_rollout_raises_nothing() -> None:
    fleet = SimulatedFleet(4, latency=Latency(detach=2, replace=5, attach=1))
    monitor = InvariantMonitor(fleet, max_unavailable=1, max_surge=0)
    for instance in fleet.instances:
        await update_in_place(fleet, instance.id)
    monitor.check_result(
        result(
            RolloutStatus.SUCCEEDED,
            *(item(i.id, InstanceOutcome.UPDATED) for i in fleet.instances),
        )
    )
    assert monitor.violations == []
    assert monitor.min_serving == 3
    assert monitor.max_existing == 4


async def test_detaching_too_many_one_after_another_breaks_the_floor() -> None:
    fleet = SimulatedFleet(4)
    monitor = InvariantMonitor(fleet, max_unavailable=1, max_surge=0)
    assert monitor.floor == 3
    await fleet.detach(fleet.get("i-000"))
    with pytest.raises(InvariantViolation, match=r"detach of i-001 leaves 2 serving.*floor of 3"):
        await fleet.detach(fleet.get("i-001"))
    assert len(monitor.violations) == 1
    assert "out of service: i-000, i-001" in monitor.violations[0]


async def test_disruptions_in_progress_count_as_out_of_service() -> None:
    fleet = SimulatedFleet(3, latency=Latency(detach=10))
    monitor = InvariantMonitor(fleet, max_unavailable=1, max_surge=0, raise_immediately=False)
    async with anyio.create_task_group() as tg:
        for instance in fleet.instances[:2]:
            tg.start_soon(fleet.detach, instance)
    # the second detach began while the first still drained: both were out at once
    assert len(monitor.violations) == 1
    assert "leaves 1 serving" in monitor.violations[0]
    assert monitor.min_serving == 1
    with pytest.raises(InvariantViolation, match="1 invariant violation"):
        monitor.assert_ok()


async def test_replacing_or_terminating_an_attached_instance_is_a_voluntary_disruption() -> None:
    fleet = SimulatedFleet(2)
    monitor = InvariantMonitor(fleet, max_unavailable=0, max_surge=1, raise_immediately=False)
    await fleet.replace(fleet.get("i-000"), "v2")
    await fleet.terminate(fleet.get("i-001"))
    assert [v.split(" at ")[0] for v in monitor.violations] == [
        "availability floor broken",
        "availability floor broken",
    ]
    assert "replace of i-000" in monitor.violations[0]
    assert "terminate of i-001" in monitor.violations[1]


async def test_surge_lets_an_extra_instance_cover_for_one_taken_out() -> None:
    fleet = SimulatedFleet(2)
    monitor = InvariantMonitor(fleet, max_unavailable=0, max_surge=1)
    for old in fleet.instances:
        new = await fleet.launch("v2")
        await fleet.attach(new)
        await fleet.detach(old)
        await fleet.terminate(old)
    assert monitor.violations == []
    assert monitor.max_existing == 3
    assert monitor.min_serving == 2
    monitor.check_result(
        result(
            RolloutStatus.SUCCEEDED,
            item("i-000", InstanceOutcome.UPDATED, current_id="n-000"),
            item("i-001", InstanceOutcome.UPDATED, current_id="n-001"),
        )
    )


async def test_launching_too_many_breaks_the_ceiling() -> None:
    fleet = SimulatedFleet(3, latency=Latency(launch=5))
    monitor = InvariantMonitor(fleet, max_unavailable=1, max_surge=1)
    assert monitor.ceiling == 4
    await fleet.launch("v2")
    with pytest.raises(InvariantViolation, match=r"launching n-001 makes 5 instances.*of 4"):
        await fleet.launch("v2")
    assert monitor.max_existing == 5
    assert fleet.existing_count() == 4  # the launch was stopped by the violation


async def test_concurrent_launches_count_while_they_start() -> None:
    fleet = SimulatedFleet(2, latency=Latency(launch=5))
    monitor = InvariantMonitor(fleet, max_unavailable=1, max_surge=1, raise_immediately=False)
    async with anyio.create_task_group() as tg:
        tg.start_soon(fleet.launch, "v2")
        tg.start_soon(fleet.launch, "v2")
    assert len(monitor.violations) == 1
    assert "capacity ceiling broken" in monitor.violations[0]


async def test_overlapping_operations_are_a_violation() -> None:
    fleet = SimulatedFleet(3, latency=Latency(replace=10))
    monitor = InvariantMonitor(fleet, max_unavailable=1, max_surge=0, raise_immediately=False)
    await fleet.detach(fleet.get("i-000"))
    async with anyio.create_task_group() as tg:
        tg.start_soon(fleet.replace, fleet.get("i-000"), "v2")
        await anyio.sleep(1)
        await fleet.attach(fleet.get("i-000"))
    assert len(monitor.violations) == 1
    assert "replace and attach run on i-000 at once" in monitor.violations[0]


async def test_overlap_raises_immediately_by_default() -> None:
    fleet = SimulatedFleet(2, latency=Latency(replace=10))
    InvariantMonitor(fleet, max_unavailable=1, max_surge=0)
    await fleet.detach(fleet.get("i-000"))

    async def replace_twice() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(fleet.replace, fleet.get("i-000"), "v2")
            await anyio.sleep(1)
            tg.start_soon(fleet.replace, fleet.get("i-000"), "v3")

    with pytest.raises(ExceptionGroup) as info:
        await replace_twice()
    assert info.group_contains(InvariantViolation, match="overlap")


async def test_a_fault_that_makes_an_instance_unhealthy_is_not_a_violation() -> None:
    fleet = SimulatedFleet(4, latency=Latency(detach=1))
    monitor = InvariantMonitor(fleet, max_unavailable=1, max_surge=0)
    fleet.fault("i-003", flapping=0.5)  # health noise, not lost capacity
    async with anyio.create_task_group() as tg:
        tg.start_soon(update_in_place, fleet, "i-000")
        await anyio.sleep(0.5)
        # the engine has i-000 out; a fault now takes i-001 out too: not the engine's doing
        fleet.fault("i-001", unhealthy_at_start=True)
    assert fleet.serving_count() == 3
    assert monitor.violations == []
    assert monitor.min_serving == 2  # below the floor of 3, and still no violation
    # Without an excuse, the rollout's next disruption is held to the floor...
    with pytest.raises(InvariantViolation, match="detach of i-002 leaves 2 serving"):
        await fleet.detach(fleet.get("i-002"))
    monitor.violations.clear()
    # ...with one, capacity lost to the fault does not count against it.
    monitor.excuse_unhealthy()
    await update_in_place(fleet, "i-002")
    await update_in_place(fleet, "i-001")  # the excuse ends once it is replaced
    await update_in_place(fleet, "i-003")
    assert monitor.violations == []
    fleet.fault("i-001", never_ready=True)
    with pytest.raises(InvariantViolation, match="detach of i-002 leaves 2 serving"):
        await fleet.detach(fleet.get("i-002"))


async def test_a_fleet_that_starts_below_the_floor_must_not_get_worse() -> None:
    fleet = SimulatedFleet(4)
    fleet.fault("i-000", unhealthy_at_start=True)
    fleet.fault("i-001", unhealthy_at_start=True)
    monitor = InvariantMonitor(fleet, max_unavailable=1, max_surge=0)
    assert monitor.start_serving == 2
    assert monitor.floor == 2
    # the unhealthy ones go first and cost nothing; once cured, they serve again
    await update_in_place(fleet, "i-000")
    await update_in_place(fleet, "i-001")
    assert fleet.serving_count() == 4
    await update_in_place(fleet, "i-002")
    assert monitor.violations == []
    fleet2 = SimulatedFleet(4)
    fleet2.fault("i-000", unhealthy_at_start=True)
    fleet2.fault("i-001", unhealthy_at_start=True)
    InvariantMonitor(fleet2, max_unavailable=1, max_surge=0)
    with pytest.raises(InvariantViolation, match="leaves 1 serving"):
        await fleet2.detach(fleet2.get("i-002"))  # a healthy one first: worse than at start


async def test_work_on_a_detached_instance_costs_nothing() -> None:
    fleet = SimulatedFleet(3)
    monitor = InvariantMonitor(fleet, max_unavailable=1, max_surge=0)
    await fleet.detach(fleet.get("i-000"))
    await fleet.replace(fleet.get("i-000"), "v2")
    await fleet.replace(fleet.get("i-000"), "v3")
    await fleet.terminate(fleet.get("i-000"))
    assert monitor.violations == []


async def test_close_stops_watching() -> None:
    fleet = SimulatedFleet(2)
    monitor = InvariantMonitor(fleet, max_unavailable=1, max_surge=0)
    monitor.close()
    await fleet.detach(fleet.get("i-000"))
    await fleet.detach(fleet.get("i-001"))
    assert monitor.violations == []


# ---------------------------------------------------------------- terminal truth


async def test_a_false_success_is_caught() -> None:
    fleet = SimulatedFleet(3)
    monitor = InvariantMonitor(fleet, max_unavailable=1, max_surge=0)
    await update_in_place(fleet, "i-000")
    await update_in_place(fleet, "i-001")
    lie = result(
        RolloutStatus.SUCCEEDED,
        item("i-000", InstanceOutcome.UPDATED),
        item("i-001", InstanceOutcome.UPDATED),
        item("i-002", InstanceOutcome.UPDATED),
    )
    with pytest.raises(InvariantViolation) as info:
        monitor.check_result(lie)
    message = str(info.value)
    assert "i-002 (updated) says i-002 runs v2, but it runs v1" in message
    assert "SUCCEEDED, but i-002 runs v1, not v2" in message
    assert len(monitor.violations) == 2


async def test_a_true_success_passes() -> None:
    fleet = SimulatedFleet(3)
    await update_in_place(fleet, "i-001")
    monitor = InvariantMonitor(fleet, max_unavailable=1, max_surge=0)
    await update_in_place(fleet, "i-000")
    await update_in_place(fleet, "i-002")
    monitor.check_result(
        result(
            RolloutStatus.SUCCEEDED,
            item("i-000", InstanceOutcome.UPDATED),
            item("i-001", InstanceOutcome.SKIPPED, old_version="v2"),
            item("i-002", InstanceOutcome.UPDATED),
        ),
        fleet,
    )
    assert monitor.violations == []


async def test_success_with_a_failed_or_detached_instance_is_false() -> None:
    fleet = SimulatedFleet(2)
    monitor = InvariantMonitor(fleet, max_unavailable=1, max_surge=0, raise_immediately=False)
    await update_in_place(fleet, "i-000")
    await fleet.detach(fleet.get("i-001"))
    await fleet.replace(fleet.get("i-001"), "v2")
    monitor.check_result(
        result(
            RolloutStatus.SUCCEEDED,
            item("i-000", InstanceOutcome.UPDATED),
            item("i-001", InstanceOutcome.FAILED, serving=False, reason="not ready"),
        )
    )
    assert monitor.violations == [
        "SUCCEEDED, but i-001 ended failed",
        "SUCCEEDED, but i-001 is out of traffic",
    ]


async def test_serving_must_match_traffic_and_current_ids_must_be_live() -> None:
    fleet = SimulatedFleet(3)
    monitor = InvariantMonitor(fleet, max_unavailable=2, max_surge=0, raise_immediately=False)
    await fleet.detach(fleet.get("i-000"))
    await fleet.terminate(fleet.get("i-001"))
    monitor.check_result(
        result(
            RolloutStatus.HALTED,
            item("i-000", InstanceOutcome.INTERRUPTED, version="v1", serving=True),
            item("i-001", InstanceOutcome.FAILED, version="v1", serving=False),
            item("i-002", InstanceOutcome.PENDING, version="v1", current_id=None, serving=True),
        )
    )
    assert monitor.violations == [
        "i-000 (interrupted) says serving=True, but i-000 is out of traffic",
        "i-001 (failed) names i-001, which is not live",
        "i-002 (pending) says serving but names no current_id",
        "leak: i-000 is out of traffic but not reported with serving=False",
        "leak: 2 live instances for 3 desired, and i-002 is named by no instance result",
    ]


async def test_rolled_back_needs_reverted_instances_back_and_revert_failures_explained() -> None:
    fleet = SimulatedFleet(4)
    monitor = InvariantMonitor(fleet, max_unavailable=2, max_surge=0, raise_immediately=False)
    for instance_id in ("i-000", "i-001", "i-002"):
        await update_in_place(fleet, instance_id)
    await update_in_place(fleet, "i-000", "v1")  # truly reverted
    await fleet.detach(fleet.get("i-002"))
    monitor.check_result(
        result(
            RolloutStatus.ROLLED_BACK,
            item("i-000", InstanceOutcome.REVERTED, version="v1"),
            item("i-001", InstanceOutcome.REVERTED, version="v2"),  # still on v2
            item("i-002", InstanceOutcome.REVERT_FAILED, serving=False),  # no reason
            item("i-003", InstanceOutcome.UPDATED, version="v1"),
            reason="budget exceeded",
        )
    )
    assert monitor.violations == [
        "ROLLED_BACK: i-001 is reverted, but i-001 runs v2, not v1",
        "ROLLED_BACK: i-002 failed to revert and says no reason",
        "ROLLED_BACK, but i-003 is left updated",
    ]


async def test_a_true_rollback_passes() -> None:
    fleet = SimulatedFleet(3)
    monitor = InvariantMonitor(fleet, max_unavailable=1, max_surge=0)
    for instance_id in ("i-000", "i-001"):
        await update_in_place(fleet, instance_id)
    await update_in_place(fleet, "i-000", "v1")
    await fleet.detach(fleet.get("i-001"))
    monitor.check_result(
        result(
            RolloutStatus.ROLLED_BACK,
            item("i-000", InstanceOutcome.REVERTED, version="v1"),
            item("i-001", InstanceOutcome.REVERT_FAILED, serving=False, reason="replace failed"),
            item("i-002", InstanceOutcome.PENDING, version="v1"),
            reason="gate failed",
        )
    )
    assert monitor.violations == []


# ---------------------------------------------------------------- leaks


async def test_an_unnamed_launched_instance_is_a_leak() -> None:
    fleet = SimulatedFleet(2)
    monitor = InvariantMonitor(fleet, max_unavailable=1, max_surge=1, raise_immediately=False)
    await fleet.launch("v2")
    monitor.check_result(
        result(
            RolloutStatus.ABORTED,
            item("i-000", InstanceOutcome.PENDING, version="v1"),
            item("i-001", InstanceOutcome.PENDING, version="v1"),
        )
    )
    assert monitor.violations == [
        "leak: n-000 is live but no instance result names it",
        "leak: n-000 is out of traffic but not reported with serving=False",
        "leak: 3 live instances for 2 desired, and no instance result explains it",
    ]


async def test_extra_instances_are_allowed_when_a_failure_names_them() -> None:
    fleet = SimulatedFleet(2)
    monitor = InvariantMonitor(fleet, max_unavailable=0, max_surge=1, raise_immediately=False)
    new = await fleet.launch("v2")
    await fleet.attach(new)
    await fleet.detach(fleet.get("i-000"))
    fleet.fault("i-000", terminate_raises=True)
    with pytest.raises(SimulatedFault, match="terminate of i-000"):
        await fleet.terminate(fleet.get("i-000"))
    named = result(
        RolloutStatus.HALTED,
        item("i-000", InstanceOutcome.FAILED, current_id="n-000", reason="terminate failed"),
        item("i-001", InstanceOutcome.PENDING, version="v1"),
    )
    monitor.check_result(named)
    # i-000 is left over: live, out of traffic, and no result names it
    assert monitor.violations == [
        "leak: i-000 is out of traffic but not reported with serving=False",
        "leak: 3 live instances for 2 desired, and i-000 is named by no instance result",
    ]


async def test_reported_strays_are_not_leaks() -> None:
    fleet = SimulatedFleet(2)
    fleet.fault("i-000", terminate_raises=True)
    # a stray still takes capacity: the second launch needs a surge of 2
    monitor = InvariantMonitor(fleet, max_unavailable=0, max_surge=2, raise_immediately=False)
    for old in fleet.instances:
        new = await fleet.launch("v2")
        await fleet.attach(new)
        await fleet.detach(old)
        with contextlib.suppress(SimulatedFault):
            await fleet.terminate(old)
    updated = [
        item("i-000", InstanceOutcome.UPDATED, current_id="n-000"),
        item("i-001", InstanceOutcome.UPDATED, current_id="n-001"),
    ]
    monitor.check_result(result(RolloutStatus.SUCCEEDED, *updated))
    assert monitor.violations == [
        "SUCCEEDED, but i-000 runs v1, not v2",
        "SUCCEEDED, but i-000 is out of traffic",
        "SUCCEEDED with 3 live instances besides strays, not 2",
        "leak: i-000 is out of traffic but not reported with serving=False",
        "leak: 3 live instances for 2 desired, and no instance result explains it",
    ]
    monitor.violations.clear()
    reported = attrs.evolve(updated[0], strays=("i-000",))
    monitor.check_result(result(RolloutStatus.SUCCEEDED, reported, updated[1]))
    assert monitor.violations == []
    await fleet.attach(fleet.get("i-000"))
    wrong = attrs.evolve(updated[1], strays=("i-001",))
    monitor.check_result(result(RolloutStatus.SUCCEEDED, reported, wrong))
    assert monitor.violations == [
        "i-000 (updated) names stray i-000, which is in traffic",
        "i-001 (updated) names stray i-001, which is not live",
    ]


async def test_operations_still_running_after_the_rollout_are_reported() -> None:
    fleet = SimulatedFleet(1, latency=Latency(detach=100))
    monitor = InvariantMonitor(fleet, max_unavailable=1, max_surge=0, raise_immediately=False)
    async with anyio.create_task_group() as tg:
        tg.start_soon(fleet.detach, fleet.get("i-000"))
        await anyio.sleep(1)
        monitor.check_result(
            result(RolloutStatus.CANCELLED, item("i-000", InstanceOutcome.PENDING, version="v1"))
        )
        tg.cancel_scope.cancel()
    assert monitor.violations == ["detach still in progress on i-000 after the rollout returned"]


async def test_check_result_raises_violations_recorded_earlier() -> None:
    fleet = SimulatedFleet(2)
    monitor = InvariantMonitor(fleet, max_unavailable=1, max_surge=0)
    await fleet.detach(fleet.get("i-000"))
    # Code under test could swallow the first raise; check_result raises again.
    with pytest.raises(InvariantViolation):
        await fleet.detach(fleet.get("i-001"))
    await fleet.attach(fleet.get("i-000"))
    await fleet.attach(fleet.get("i-001"))
    with pytest.raises(InvariantViolation, match="availability floor broken"):
        monitor.check_result(
            result(
                RolloutStatus.SUCCEEDED,
                item("i-000", InstanceOutcome.SKIPPED, version="v1", old_version="v1"),
                item("i-001", InstanceOutcome.SKIPPED, version="v1", old_version="v1"),
                target="v1",
            )
        )


# ---------------------------------------------------------------- EventRecorder


def test_event_recorder_keeps_events_and_filters_them() -> None:
    recorder = EventRecorder()
    changes = [
        InstancePhaseChanged(
            at=0, wall=0, instance_id="i-000", phase=Phase.DETACHING, version="v2"
        ),
        StatusChanged(at=0, wall=0, status=RolloutStatus.RUNNING),
        InstancePhaseChanged(
            at=1, wall=1, instance_id="i-001", phase=Phase.DETACHING, version="v2"
        ),
        InstancePhaseChanged(
            at=2, wall=2, instance_id="i-000", phase=Phase.REPLACING, version="v2"
        ),
    ]
    for event in changes:
        recorder(event)
    assert recorder.events == changes
    assert len(recorder) == 4
    assert recorder.of_type(StatusChanged) == [changes[1]]
    assert recorder.of_type(InstancePhaseChanged) == [changes[0], changes[2], changes[3]]
    assert recorder.phases("i-000") == [Phase.DETACHING, Phase.REPLACING]
    assert recorder.phases("i-009") == []
    recorder.clear()
    assert recorder.events == []

"""The engine end to end on a simulated fleet, both backends, virtual time."""

from __future__ import annotations

import itertools
import math
from typing import Any

import anyio
import pytest

import rolling
from helpers import MUTATING, ElasticOnly, monitor_for
from rolling import (
    Advance,
    Batches,
    FailurePolicy,
    Gate,
    InstanceOutcome,
    Pause,
    Phase,
    ProgressDeadline,
    Readiness,
    RollingUpdate,
    Rollout,
    RolloutStatus,
)
from rolling.testing import EventRecorder, InvariantMonitor, Latency, MemoryJournal, SimulatedFleet

pytestmark = pytest.mark.anyio

FAST = Readiness(period=1, timeout=1, deadline=30)


def make(
    fleet: SimulatedFleet,
    target: str = "v2",
    *,
    monitor: bool = True,
    readiness: Readiness = FAST,
    **options: Any,
) -> tuple[Rollout[Any], EventRecorder, InvariantMonitor | None]:
    recorder = EventRecorder()
    observers = [recorder, *options.pop("observers", [])]
    rollout: Rollout[Any] = Rollout(
        fleet,
        target,
        router=fleet,
        readiness=rolling.Readiness(
            check=fleet,
            period=readiness.period,
            timeout=readiness.timeout,
            deadline=readiness.deadline,
            min_ready=readiness.min_ready,
            success_threshold=readiness.success_threshold,
            failure_threshold=readiness.failure_threshold,
        ),
        observers=observers,
        **options,
    )
    return rollout, recorder, monitor_for(rollout, fleet) if monitor else None


def versions(fleet: SimulatedFleet) -> dict[str, int]:
    return fleet.version_counts()


async def test_in_place_rolling_update_succeeds_within_the_window() -> None:
    fleet = SimulatedFleet(10, latency=Latency(replace=10))
    rollout, recorder, monitor = make(fleet, strategy=RollingUpdate(max_unavailable=2))
    result = await rollout.run()
    assert result.status is RolloutStatus.SUCCEEDED
    assert result.counts == {InstanceOutcome.UPDATED: 10}
    assert versions(fleet) == {"v2": 10}
    assert set(fleet.attached_ids) == {i.id for i in fleet.instances}
    assert monitor is not None
    monitor.check_result(result, fleet)
    assert monitor.min_serving == 8
    # 10 instances, 2 at a time, 10 s each: the sliding window takes 50 s.
    assert result.duration == pytest.approx(50, abs=1)
    phases = recorder.phases("i-000")
    assert phases[:4] == [Phase.DETACHING, Phase.DETACHED, Phase.REPLACING, Phase.WAITING_READY]
    assert phases[-1] is Phase.UPDATED


async def test_sliding_window_starts_the_next_one_as_soon_as_one_finishes() -> None:
    fleet = SimulatedFleet(4)
    fleet.set_latency("i-000", replace=100)
    rollout, _, _ = make(fleet, strategy=RollingUpdate(max_unavailable=2))
    result = await rollout.run()
    assert result.status is RolloutStatus.SUCCEEDED
    # Lockstep would take 100 + 0; the window lets i-001..i-003 pass while i-000 is slow.
    finished_at = result.by_id("i-003").finished_at
    assert finished_at is not None
    assert finished_at < 1
    assert result.duration == pytest.approx(100, abs=1)


async def test_elastic_surge_launches_before_taking_out() -> None:
    fleet = SimulatedFleet(6, latency=Latency(launch=5, terminate=1))
    rollout, recorder, monitor = make(fleet, strategy=RollingUpdate(max_unavailable=0, max_surge=2))
    result = await rollout.run()
    assert result.status is RolloutStatus.SUCCEEDED
    assert monitor is not None
    monitor.check_result(result, fleet)
    assert monitor.max_existing == 8
    assert monitor.min_serving == 6
    assert all(i.current_id != i.id for i in result.instances)
    assert {i.id for i in fleet.instances}.isdisjoint({f"i-{n:03d}" for n in range(6)})
    assert len(fleet.instances) == 6
    phases = recorder.phases("i-000")
    assert phases.index(Phase.LAUNCHING) < phases.index(Phase.DETACHING)


async def test_elastic_without_replace_or_surge_terminates_then_launches() -> None:
    fleet = SimulatedFleet(3)
    rollout = Rollout(
        ElasticOnly(fleet), "v2", router=fleet, readiness=Readiness(check=fleet, deadline=10)
    )
    monitor = InvariantMonitor(fleet, max_unavailable=1, max_surge=0)
    result = await rollout.run()
    assert result.status is RolloutStatus.SUCCEEDED
    monitor.check_result(result, fleet)
    assert monitor.max_existing == 3
    ops = [call.op for call in fleet.calls if call.op in {"terminate", "launch"}]
    assert ops == ["terminate", "launch"] * 3


async def test_batches_follow_ansible_serial_and_run_in_lockstep() -> None:
    fleet = SimulatedFleet(20, latency=Latency(replace=10))
    fleet.set_latency("i-000", replace=30)
    rollout, recorder, monitor = make(fleet, strategy=Batches("30%"))
    result = await rollout.run()
    assert result.status is RolloutStatus.SUCCEEDED
    started = recorder.of_type(rolling.BatchStarted)
    assert [len(b.instance_ids) for b in started] == [6, 6, 6, 2]
    # Lockstep: batch 2 waits for the slow i-000 of batch 1 (30 s).
    assert started[1].at == pytest.approx(30, abs=0.5)
    assert monitor is not None
    monitor.check_result(result, fleet)


async def test_batches_pause_between_batches() -> None:
    fleet = SimulatedFleet(23)
    rollout, recorder, _ = make(fleet, strategy=Batches(1, 5, "20%", pause=Pause(60)))
    result = await rollout.run()
    assert result.status is RolloutStatus.SUCCEEDED
    sizes = [len(b.instance_ids) for b in recorder.of_type(rolling.BatchStarted)]
    assert sizes == [1, 5, 4, 4, 4, 4, 1]
    assert len(recorder.of_type(rolling.StepStarted)) == 6
    # A pause between batches is numbered by the batch before it.
    assert [e.index for e in recorder.of_type(rolling.StepStarted)] == [0, 1, 2, 3, 4, 5]
    assert result.duration == pytest.approx(6 * 60, abs=1)


async def test_instances_on_the_target_are_skipped_and_rerun_is_a_no_op() -> None:
    fleet = SimulatedFleet(4)
    await fleet.replace((await fleet.list_instances())[1], "v2")
    rollout, _, _ = make(fleet)
    result = await rollout.run()
    assert result.by_id("i-001").outcome is InstanceOutcome.SKIPPED
    assert result.counts[InstanceOutcome.UPDATED] == 3
    calls_before = len(fleet.calls)
    again, _, _ = make(fleet, monitor=False)
    second = await again.run()
    assert second.status is RolloutStatus.SUCCEEDED
    assert second.counts == {InstanceOutcome.SKIPPED: 4}
    assert not [c for c in fleet.calls[calls_before:] if c.op in MUTATING]


async def test_already_unhealthy_instances_go_first_and_cost_no_availability() -> None:
    fleet = SimulatedFleet(5, latency=Latency(replace=10))
    fleet.fault("i-003", unhealthy_at_start=True)
    fleet.fault("i-004", unhealthy_at_start=True)
    rollout, recorder, monitor = make(fleet, strategy=RollingUpdate(max_unavailable=1))
    result = await rollout.run()
    assert result.status is RolloutStatus.SUCCEEDED
    started = recorder.of_type(rolling.RolloutStarted)[0]
    assert started.to_update[:2] == ("i-003", "i-004")
    assert set(started.unhealthy) == {"i-003", "i-004"}
    assert monitor is not None
    monitor.check_result(result, fleet)
    # The fleet started with 3 serving, under the floor of 4: never made worse.
    assert monitor.min_serving >= 3


async def test_waves_finish_one_zone_before_the_next() -> None:
    fleet = SimulatedFleet(6, zones=("a", "b", "c"), latency=Latency(replace=5))
    rollout, recorder, _ = make(
        fleet,
        strategy=RollingUpdate(max_unavailable=3),
        waves=rolling.Waves(lambda i: i.zone, order=("c", "a", "b")),
    )
    result = await rollout.run()
    assert result.status is RolloutStatus.SUCCEEDED
    waves = recorder.of_type(rolling.WaveStarted)
    assert [w.key for w in waves] == ["c", "a", "b"]
    zone_of = {
        i.id: i.zone for i in (await SimulatedFleet(6, zones=("a", "b", "c")).list_instances())
    }
    finish = {i.id: i.finished_at for i in result.instances}
    for earlier, later in (("c", "a"), ("a", "b")):
        done = max(t for k, t in finish.items() if zone_of[k] == earlier and t is not None)
        first_start = min(
            i.started_at
            for i in result.instances
            if zone_of[i.id] == later and i.started_at is not None
        )
        assert first_start >= done


async def test_retries_with_backoff_get_past_a_transient_fault() -> None:
    fleet = SimulatedFleet(3)
    fleet.fault("i-001", replace_raises=2)
    rollout, recorder, _ = make(
        fleet, failure=FailurePolicy(retries=2, backoff=rolling.Backoff(initial=10, factor=3))
    )
    result = await rollout.run()
    assert result.status is RolloutStatus.SUCCEEDED
    assert result.by_id("i-001").attempts == 3
    assert result.by_id("i-000").attempts == 1
    # Back-off of 10 s then 30 s.
    assert result.duration == pytest.approx(40, abs=1)
    assert recorder.phases("i-001").count(Phase.BACKING_OFF) == 2


async def test_exhausted_retries_fail_the_instance_and_revert_by_default() -> None:
    fleet = SimulatedFleet(5, latency=Latency(replace=1))
    fleet.fault(version="v2", never_ready=True)
    rollout, recorder, monitor = make(
        fleet, readiness=Readiness(deadline=20), failure=FailurePolicy(retries=1)
    )
    result = await rollout.run()
    assert result.status is RolloutStatus.ROLLED_BACK
    assert "max_failed" in result.reason
    assert versions(fleet) == {"v1": 5}
    assert set(fleet.attached_ids) == {i.id for i in fleet.instances}
    failed = result.by_id("i-000")
    assert failed.outcome is InstanceOutcome.FAILED
    assert failed.attempts == 2
    assert failed.serving
    assert "restored" in failed.reason
    assert result.counts[InstanceOutcome.PENDING] == 4
    assert monitor is not None
    monitor.check_result(result, fleet)
    assert recorder.of_type(rolling.RollbackStarted)


async def test_global_budget_tolerates_max_failed_then_degrades() -> None:
    fleet = SimulatedFleet(6)
    fleet.fault("i-001", version="v2", never_ready=True)
    fleet.fault("i-004", version="v2", never_ready=True)
    rollout, _, monitor = make(
        fleet, readiness=Readiness(deadline=5), failure=FailurePolicy(max_failed=2)
    )
    result = await rollout.run()
    assert result.status is RolloutStatus.DEGRADED
    assert result.counts == {InstanceOutcome.UPDATED: 4, InstanceOutcome.FAILED: 2}
    for key in ("i-001", "i-004"):
        item = result.by_id(key)
        assert item.serving
        assert item.version == "v1"
    assert monitor is not None
    monitor.check_result(result, fleet)


async def test_global_budget_in_percent_is_exceeded_by_one_more() -> None:
    fleet = SimulatedFleet(10)
    for key in ("i-001", "i-002", "i-003"):
        fleet.fault(key, version="v2", never_ready=True)
    rollout, _, _ = make(
        fleet, readiness=Readiness(deadline=5), failure=FailurePolicy(max_failed="20%")
    )
    result = await rollout.run()
    assert result.status is RolloutStatus.ROLLED_BACK
    assert "3 instances failed, over the budget of 2" in result.reason
    assert versions(fleet) == {"v1": 10}


async def test_per_batch_percentage_stops_like_max_fail_percentage() -> None:
    fleet = SimulatedFleet(10)
    fleet.fault("i-005", version="v2", never_ready=True)
    fleet.fault("i-006", version="v2", never_ready=True)
    rollout, _, _ = make(
        fleet,
        strategy=Batches(5),
        readiness=Readiness(deadline=5),
        failure=FailurePolicy(max_failed=10, max_failed_per_batch="30%"),
        rollback="halt",
    )
    result = await rollout.run()
    # Batch 2 (i-005..i-009) has 2 failures of 5 = 40% > 30%.
    assert result.status is RolloutStatus.HALTED
    assert "batch 1" in result.reason
    first = [result.by_id(f"i-00{n}").outcome for n in range(5)]
    assert first == [InstanceOutcome.UPDATED] * 5


async def test_circuit_breaker_trips_on_consecutive_failures_and_resets_on_success() -> None:
    fleet = SimulatedFleet(8)
    for key in ("i-000", "i-002", "i-003", "i-004"):
        fleet.fault(key, version="v2", replace_raises=True)
    rollout, _, _ = make(
        fleet, failure=FailurePolicy(max_failed=100, circuit_breaker=3), rollback="halt"
    )
    result = await rollout.run()
    assert result.status is RolloutStatus.HALTED
    assert "circuit breaker: 3 failures in a row" in result.reason
    assert result.by_id("i-001").outcome is InstanceOutcome.UPDATED
    assert result.by_id("i-004").outcome is InstanceOutcome.FAILED
    assert result.by_id("i-005").outcome is InstanceOutcome.PENDING


async def test_halt_leaves_the_mixed_fleet_and_reports_it_exactly() -> None:
    fleet = SimulatedFleet(5)
    fleet.fault("i-002", version="v2", never_ready=True)
    rollout, _, monitor = make(fleet, readiness=Readiness(deadline=5), rollback="halt")
    result = await rollout.run()
    assert result.status is RolloutStatus.HALTED
    assert versions(fleet) == {"v2": 2, "v1": 3}
    assert [result.by_id(f"i-00{n}").outcome for n in range(5)] == [
        InstanceOutcome.UPDATED,
        InstanceOutcome.UPDATED,
        InstanceOutcome.FAILED,
        InstanceOutcome.PENDING,
        InstanceOutcome.PENDING,
    ]
    assert monitor is not None
    monitor.check_result(result, fleet)


async def test_revert_goes_newest_first_under_the_same_floor() -> None:
    fleet = SimulatedFleet(6, latency=Latency(replace=3))
    fleet.fault("i-004", version="v2", replace_raises=True)
    rollout, recorder, monitor = make(fleet, strategy=RollingUpdate(max_unavailable=1))
    result = await rollout.run()
    assert result.status is RolloutStatus.ROLLED_BACK
    reverting = [
        e.instance_id
        for e in recorder.of_type(rolling.InstancePhaseChanged)
        if e.phase is Phase.REVERTING and e.rollback
    ]
    assert reverting == ["i-003", "i-002", "i-001", "i-000"]
    assert all(result.by_id(f"i-00{n}").outcome is InstanceOutcome.REVERTED for n in range(4))
    assert versions(fleet) == {"v1": 6}
    assert monitor is not None
    monitor.check_result(result, fleet)
    assert monitor.min_serving >= 5


async def test_progress_deadline_rollback_halt_and_report() -> None:
    outcomes = {}
    for action in ("rollback", "halt", "report"):
        fleet = SimulatedFleet(4, latency=Latency(replace=5))
        fleet.set_latency("i-001", replace=500)
        rollout, recorder, _ = make(
            fleet,
            progress_deadline=ProgressDeadline(60, action=action),
            effect_timeout=1000,
        )
        result = await rollout.run()
        outcomes[action] = result.status
        assert recorder.of_type(rolling.ProgressDeadlineExceeded)
    assert outcomes == {
        "rollback": RolloutStatus.ROLLED_BACK,
        "halt": RolloutStatus.HALTED,
        "report": RolloutStatus.SUCCEEDED,
    }


async def test_progress_deadline_resets_on_every_completed_instance() -> None:
    fleet = SimulatedFleet(5, latency=Latency(replace=50))
    rollout, recorder, _ = make(fleet, progress_deadline=60)
    result = await rollout.run()
    assert result.status is RolloutStatus.SUCCEEDED
    assert not recorder.of_type(rolling.ProgressDeadlineExceeded)
    assert result.duration == pytest.approx(250, abs=1)


async def test_effect_timeout_fails_a_hanging_driver_call() -> None:
    fleet = SimulatedFleet(3)
    fleet.fault("i-001", hang="replace")
    rollout, _, monitor = make(fleet, effect_timeout=30, rollback="halt")
    result = await rollout.run()
    assert result.status is RolloutStatus.HALTED
    item = result.by_id("i-001")
    assert item.outcome is InstanceOutcome.FAILED
    assert "did not return within 30.0s" in item.reason
    assert monitor is not None
    monitor.check_result(result, fleet)


async def test_effect_timeout_bounds_list_instances_too() -> None:
    fleet = SimulatedFleet(3)

    class Listing:
        def __init__(self, wait: float, error: Exception | None = None) -> None:
            self.wait, self.error = wait, error

        async def list_instances(self) -> Any:
            await anyio.sleep(self.wait)
            if self.error is not None:
                raise self.error
            return await fleet.list_instances()

        async def replace(self, instance: Any, version: str) -> Any:
            return await fleet.replace(instance, version)

    # Hanging: run() used to wait for ever; now it raises once effect_timeout has passed.
    began = anyio.current_time()
    recorder = EventRecorder()
    rollout = Rollout(Listing(math.inf), "v2", effect_timeout=30, observers=[recorder])
    with (
        anyio.fail_after(1000),  # the test's own guard
        pytest.raises(TimeoutError, match=r"driver\.list_instances did not return within 30\.0s"),
    ):
        await rollout.run()
    assert anyio.current_time() - began == pytest.approx(30)
    assert not [c for c in fleet.calls if c.op in MUTATING]
    assert recorder.of_type(rolling.RolloutFinished)[-1].result.status is RolloutStatus.HALTED
    # The driver's own time-out is its own error; a slow answer within the bound is an answer.
    with pytest.raises(TimeoutError, match=r"^the platform$"):
        await Rollout(Listing(1, TimeoutError("the platform")), "v2", effect_timeout=30).run()
    result = await Rollout(Listing(29), "v2", effect_timeout=30).run()
    assert result.status is RolloutStatus.SUCCEEDED


async def test_steps_advance_pause_and_promote() -> None:
    fleet = SimulatedFleet(10, latency=Latency(replace=1))
    rollout, recorder, _ = make(
        fleet,
        strategy=RollingUpdate(max_unavailable=2),
        steps=[Advance("20%"), Pause(), Advance("60%"), Pause(30)],
    )
    async with rollout.start() as handle:
        await anyio.sleep(100)
        snap = handle.status()
        assert snap.status is RolloutStatus.PAUSED
        assert isinstance(snap.step, Pause)
        assert snap.counts.get(InstanceOutcome.UPDATED) == 2
        handle.promote()
        result = await handle.wait()
    assert result.status is RolloutStatus.SUCCEEDED
    finished = recorder.of_type(rolling.StepFinished)
    assert [f.promoted for f in finished] == [True, False]
    # Each by its position in the steps (the Advance targets have no events).
    assert [f.index for f in finished] == [1, 3]
    assert [s.index for s in recorder.of_type(rolling.StepStarted)] == [1, 3]
    # 2 done at t=1, paused until 100, +2 s for the next 4, +30 s pause, +2 s for the rest.
    assert result.duration == pytest.approx(134, abs=1)


async def test_promote_full_skips_every_remaining_pause_and_gate() -> None:
    fleet = SimulatedFleet(6)
    gate_calls = 0

    async def gate() -> bool:
        nonlocal gate_calls
        gate_calls += 1
        return False

    rollout, _, _ = make(
        fleet, steps=[Advance(1), Pause(), Gate(gate), Pause(), Advance(3), Pause()]
    )
    async with rollout.start() as handle:
        await anyio.sleep(10)
        handle.promote(full=True)
    assert handle.result.status is RolloutStatus.SUCCEEDED
    assert gate_calls == 0


async def test_promote_without_a_pause_is_an_error() -> None:
    fleet = SimulatedFleet(2, latency=Latency(replace=10))
    rollout, _, _ = make(fleet)
    async with rollout.start() as handle:
        await anyio.sleep(1)
        with pytest.raises(rolling.ControlError, match="nothing to promote"):
            handle.promote()
    with pytest.raises(rolling.ControlError, match="already finished"):
        handle.pause()


async def test_failed_gate_rolls_back() -> None:
    fleet = SimulatedFleet(4)

    async def metrics_look_bad() -> tuple[bool, str]:
        return False, "error rate 7%"

    rollout, recorder, monitor = make(
        fleet, steps=[Advance("50%"), Gate(metrics_look_bad, name="errors")]
    )
    result = await rollout.run()
    assert result.status is RolloutStatus.ROLLED_BACK
    assert result.reason == "gate errors failed: error rate 7%"
    assert versions(fleet) == {"v1": 4}
    checked = recorder.of_type(rolling.GateChecked)
    assert [(c.name, c.passed) for c in checked] == [("errors", False)]
    assert monitor is not None
    monitor.check_result(result, fleet)


async def test_pause_and_resume_from_another_task() -> None:
    fleet = SimulatedFleet(6, latency=Latency(replace=10))
    rollout, _, _ = make(fleet)
    async with rollout.start() as handle:
        await anyio.sleep(15)
        handle.pause()
        assert handle.status().status is RolloutStatus.PAUSED
        await anyio.sleep(100)
        # The one in flight at 15 s finished; nothing new started while paused.
        assert handle.status().counts.get(InstanceOutcome.UPDATED) == 2
        assert handle.status().in_flight == ()
        handle.resume()
    assert handle.result.status is RolloutStatus.SUCCEEDED
    assert handle.result.duration == pytest.approx(60 + 95, abs=1)


async def test_abort_reverts_and_interrupts_waits() -> None:
    fleet = SimulatedFleet(6, latency=Latency(replace=2))
    rollout, _, monitor = make(
        fleet,
        strategy=RollingUpdate(max_unavailable=2),
        readiness=Readiness(deadline=1000, min_ready=500),
    )
    async with rollout.start() as handle:
        await anyio.sleep(100)
        assert len(handle.status().in_flight) == 2
        handle.abort()
    result = handle.result
    assert result.status is RolloutStatus.ABORTED
    # Interrupted at 100 s (not at 502 s, when min_ready would end), then 2 s + 500 s to revert.
    assert result.duration == pytest.approx(602, abs=2)
    assert versions(fleet) == {"v1": 6}
    assert set(fleet.attached_ids) == {i.id for i in fleet.instances}
    assert monitor is not None
    monitor.check_result(result, fleet)


async def test_abort_without_rollback_halts_and_settles() -> None:
    fleet = SimulatedFleet(4, latency=Latency(replace=2))
    rollout, _, monitor = make(fleet, readiness=Readiness(deadline=1000, min_ready=100))
    async with rollout.start() as handle:
        await anyio.sleep(50)
        handle.abort(rollback=False)
    result = handle.result
    assert result.status is RolloutStatus.ABORTED
    # The one in its min_ready wait was healthy, so settling put it in traffic.
    assert result.by_id("i-000").outcome is InstanceOutcome.UPDATED
    assert set(fleet.attached_ids) == {i.id for i in fleet.instances}
    assert monitor is not None
    monitor.check_result(result, fleet)


async def test_abort_without_rollback_stops_a_rollback_not_begun() -> None:
    # The docs: abort(rollback=False) "also stops a rollback in progress", and one asked
    # for a moment before (by an abort, here) has not begun: it must never begin.
    fleet = SimulatedFleet(4, latency=Latency(replace=2))
    rollout, _, monitor = make(fleet, readiness=Readiness(deadline=1000, min_ready=10))
    async with rollout.start() as handle:
        await anyio.sleep(30)
        handle.abort()
        handle.abort(rollback=False)
    result = handle.result
    assert result.status is RolloutStatus.ABORTED
    assert "aborted without rollback" in result.reason
    assert not [i for i in result.instances if i.outcome is InstanceOutcome.REVERTED]
    assert versions(fleet)["v2"] >= 2  # what was updated stays updated
    assert set(fleet.attached_ids) == {i.id for i in fleet.instances}
    assert monitor is not None
    monitor.check_result(result, fleet)


async def test_abort_without_rollback_puts_back_what_the_rollback_was_to_handle() -> None:
    # The abort asks for a revert: i-000, in its readiness wait, is left out of traffic for it.
    # i-001 is still in a slow hook, so the rollback has not begun when abort(rollback=False)
    # turns it into a halt, which puts i-000 back as any halt does (one passing check).
    class SlowHook:
        async def before_replace(self, instance: Any, _version: str) -> None:
            if instance.id == "i-001":
                await anyio.sleep(50)

    fleet = SimulatedFleet(4, latency=Latency(replace=2))
    rollout, _, monitor = make(
        fleet,
        strategy=RollingUpdate(max_unavailable=2),
        readiness=Readiness(deadline=1000, min_ready=100),
        hooks=SlowHook(),
    )
    async with rollout.start() as handle:
        await anyio.sleep(10)
        handle.abort()
        await anyio.sleep(10)
        assert handle.status().in_flight == ("i-001",)
        handle.abort(rollback=False)
    result = handle.result
    assert result.status is RolloutStatus.ABORTED
    assert "aborted without rollback" in result.reason
    assert result.by_id("i-000").outcome is InstanceOutcome.UPDATED
    assert result.by_id("i-000").serving
    assert set(fleet.attached_ids) == {i.id for i in fleet.instances}
    assert monitor is not None
    monitor.check_result(result, fleet)


async def test_a_pause_before_the_run_begins_says_paused() -> None:
    fleet = SimulatedFleet(3)
    rollout, recorder, _ = make(fleet)
    async with rollout.start() as handle:
        handle.pause()  # before the rollout's task has run at all
        await anyio.sleep(100)
        assert handle.status().status is RolloutStatus.PAUSED
        assert versions(fleet) == {"v1": 3}
        handle.resume()
    assert handle.result.status is RolloutStatus.SUCCEEDED
    statuses = [e.status for e in recorder.of_type(rolling.StatusChanged)]
    assert statuses[:2] == [RolloutStatus.PAUSED, RolloutStatus.RUNNING]


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.25, 0.4, 0.6, 0.75, 0.9, 0.99])
async def test_cancelling_run_leaves_nothing_detached_or_leaked(fraction: float) -> None:
    latency = Latency(launch=4, terminate=1, detach=1, attach=1)
    strategy = RollingUpdate(max_unavailable=1, max_surge=1)
    full, _, _ = make(SimulatedFleet(6, latency=latency), strategy=strategy, monitor=False)
    duration = (await full.run()).duration
    fleet = SimulatedFleet(6, latency=latency)
    rollout, recorder, monitor = make(fleet, strategy=strategy)
    with anyio.move_on_after(duration * fraction) as scope:
        await rollout.run()
    assert scope.cancelled_caught
    finished = recorder.of_type(rolling.RolloutFinished)
    assert len(finished) == 1
    result = finished[0].result
    assert result.status is RolloutStatus.CANCELLED
    assert set(fleet.attached_ids) == {i.id for i in fleet.instances}
    assert len(fleet.instances) == 6
    assert monitor is not None
    monitor.check_result(result, fleet)


class _InstantInstance:
    def __init__(self, id_: str) -> None:
        self.id = id_
        self.version = "v1"


class _InstantDriver:
    """Replaces at once, without a checkpoint; can cancel a scope while replacing."""

    def __init__(self, size: int) -> None:
        self.instances = [_InstantInstance(f"i{k}") for k in range(size)]
        self.replaced: list[str] = []
        self.cancel_on: str | None = None
        self.scope: anyio.CancelScope | None = None

    async def list_instances(self) -> list[_InstantInstance]:
        return self.instances

    async def replace(self, instance: _InstantInstance, version: str) -> _InstantInstance:
        self.replaced.append(instance.id)
        if instance.id == self.cancel_on and self.scope is not None:
            self.scope.cancel()
        instance.version = version
        return instance


async def test_a_cancelled_run_starts_no_unit_after_the_one_that_saw_it() -> None:
    # Units that end without a checkpoint hand the next one to their own task; a
    # cancellation that arrived meanwhile must stop that, as it stops the drive loop.
    driver = _InstantDriver(5)
    driver.cancel_on = "i1"
    rollout: Rollout[Any] = Rollout(driver, "v2", readiness=Readiness())
    with anyio.CancelScope() as scope:
        driver.scope = scope
        await rollout.run()
    assert scope.cancelled_caught
    assert driver.replaced == ["i0", "i1"]
    assert [i.version for i in driver.instances] == ["v2", "v2", "v1", "v1", "v1"]


@pytest.mark.parametrize("max_failed", [0, 10])
async def test_status_counts_and_in_flight_match_a_recount_at_every_event(
    max_failed: int,
) -> None:
    # status() keeps running tallies rather than scanning the fleet: check them against
    # a scan, through successes, skips, failures, restores and a rollback.
    fleet = SimulatedFleet(12, latency=Latency(replace=3, attach=1))
    fleet.fault("i-004", replace_raises=True)
    fleet.fault("i-009", never_ready=True)
    handles: list[rolling.RolloutHandle] = []
    checked = [0]

    def recount(_event: rolling.Event) -> None:
        if not handles:
            return
        slots = handles[0]._machine.slots
        snapshot = handles[0].status()
        expected: dict[InstanceOutcome, int] = {}
        for slot in slots:
            expected[slot.outcome] = expected.get(slot.outcome, 0) + 1
        assert snapshot.counts == expected
        position = {slot.key: slot.position for slot in slots}
        assert list(snapshot.in_flight) == sorted(snapshot.in_flight, key=position.__getitem__)
        working = {s.key for s in slots if s.started_at is not None and s.finished_at is None}
        assert working <= set(snapshot.in_flight)
        checked[0] += 1

    rollout, _, monitor = make(
        fleet,
        strategy=RollingUpdate(max_unavailable=3),
        failure=FailurePolicy(max_failed=max_failed),
        observers=[recount],
    )
    async with rollout.start() as handle:
        handles.append(handle)
    assert checked[0] > 50
    assert handle.result.status is (
        RolloutStatus.ROLLED_BACK if max_failed == 0 else RolloutStatus.DEGRADED
    )
    assert sum(handle.status().counts.values()) == 12
    assert monitor is not None
    monitor.check_result(handle.result, fleet)


async def test_an_exception_in_the_start_block_cancels_and_cleans_up() -> None:
    fleet = SimulatedFleet(3, latency=Latency(replace=5))
    rollout, _, monitor = make(fleet)

    async def fail_inside_the_block() -> None:
        async with rollout.start():
            await anyio.sleep(6)
            raise KeyError("boom")

    # The block's own error comes out as itself, not in an ExceptionGroup.
    with pytest.raises(KeyError, match="boom"):
        await fail_inside_the_block()
    assert set(fleet.attached_ids) == {i.id for i in fleet.instances}
    assert monitor is not None
    monitor.assert_ok()


async def test_a_rollout_runs_once() -> None:
    fleet = SimulatedFleet(1)
    rollout, _, _ = make(fleet, monitor=False)
    await rollout.run()
    with pytest.raises(rolling.RolloutAlreadyStartedError):
        await rollout.run()


async def test_events_stream_and_logging_observer(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="rolling")
    fleet = SimulatedFleet(3)
    rollout, _, _ = make(fleet, observers=[rolling.LoggingObserver()])
    seen: list[rolling.Event] = []
    async with rollout.start() as handle, handle.events() as stream:
        seen.extend([event async for event in stream])
    assert isinstance(seen[-1], rolling.RolloutFinished)
    assert isinstance(seen[0], rolling.StatusChanged | rolling.RolloutStarted)
    assert any(isinstance(e, rolling.RolloutStarted) for e in seen)
    assert all(a.at <= b.at for a, b in itertools.pairwise(seen))
    assert "rollout to v2 succeeded" in caplog.text


async def test_hooks_are_called_in_order_and_a_raising_hook_fails_the_instance() -> None:
    calls: list[str] = []

    class Hooks:
        async def before_rollout(self, target: str, instances: Any) -> None:
            calls.append(f"before_rollout {target} {len(instances)}")

        async def before_detach(self, instance: Any) -> None:
            calls.append(f"before_detach {instance.id}")

        async def after_replace(self, instance: Any) -> None:
            calls.append(f"after_replace {instance.id} {instance.version}")
            if instance.id == "i-001":
                raise RuntimeError("smoke test failed")

        async def before_ready(self, instance: Any) -> None:
            calls.append(f"before_ready {instance.id}")

        async def after_attach(self, instance: Any) -> None:
            calls.append(f"after_attach {instance.id}")

        async def after_rollout(self, result: rolling.RolloutResult) -> None:
            calls.append(f"after_rollout {result.status}")

    fleet = SimulatedFleet(2)
    rollout, _, monitor = make(fleet, hooks=Hooks(), rollback="halt")
    result = await rollout.run()
    assert result.status is RolloutStatus.HALTED
    assert (
        "hook after_replace raised RuntimeError: smoke test failed" in result.by_id("i-001").reason
    )
    assert calls[:6] == [
        "before_rollout v2 2",
        "before_detach i-000",
        "after_replace i-000 v2",
        "before_ready i-000",
        "after_attach i-000",
        "before_detach i-001",
    ]
    assert calls[-1] == "after_rollout halted"
    assert monitor is not None
    monitor.check_result(result, fleet)


async def test_duplicate_ids_from_the_driver_are_refused_before_any_change() -> None:
    class Twice:
        async def list_instances(self) -> Any:
            fleet = SimulatedFleet(1)
            instance = (await fleet.list_instances())[0]
            return [instance, instance]

        async def replace(self, instance: Any, version: str) -> Any:  # pragma: no cover
            raise AssertionError(instance.id, version)  # never called: the plan fails first

    with pytest.raises(rolling.RollingError, match="duplicate instance ids"):
        await Rollout(Twice(), "v2").run()


async def test_min_ready_must_hold_continuously() -> None:
    fleet = SimulatedFleet(1)
    fleet.fault(version="v2", flapping=20)
    rollout, _, _ = make(fleet, readiness=Readiness(min_ready=30, deadline=200), rollback="halt")
    result = await rollout.run()
    assert result.status is RolloutStatus.HALTED
    assert "min_ready" in result.by_id("i-000").reason or "deadline" in result.by_id("i-000").reason


async def test_an_advance_without_steps_still_holds_what_comes_after_it() -> None:
    fleet = SimulatedFleet(4, latency=Latency(replace=10))
    rollout, _, _ = make(
        fleet, strategy=RollingUpdate(max_unavailable=2), steps=[Advance(1), Advance("50%")]
    )
    result = await rollout.run()
    starts = [result.by_id(f"i-00{n}").started_at for n in range(4)]
    # The canary goes alone; the next one waits for it, then the window opens.
    assert starts == [0, 10, 20, 20]


async def test_min_ready_with_an_awkward_start_time_does_not_spin() -> None:
    fleet = SimulatedFleet(1, latency=Latency(replace=50.8917219869216))
    rollout, _, _ = make(fleet, readiness=Readiness(period=5, min_ready=30, deadline=120))
    with anyio.fail_after(1000):
        result = await rollout.run()
    assert result.status is RolloutStatus.SUCCEEDED
    assert result.duration == pytest.approx(50.8917219869216 + 30)


async def test_a_failed_detach_is_not_followed_by_a_needless_restore() -> None:
    fleet = SimulatedFleet(3)
    fleet.fault("i-001", detach_raises=True)
    rollout, _, monitor = make(fleet, failure=FailurePolicy(max_failed=1))
    result = await rollout.run()
    assert result.status is RolloutStatus.DEGRADED
    ops = [call.op for call in fleet.calls if call.instance_id == "i-001" and call.op != "check"]
    # No replace: only an attach, since a detach that raised may have stopped traffic already.
    assert ops == ["detach", "attach"]
    assert result.by_id("i-001").serving
    assert result.by_id("i-001").reason.startswith("router.detach raised SimulatedFault")
    assert monitor is not None
    monitor.check_result(result, fleet)


class _JournalDownAtAttach(MemoryJournal):
    """Refuses every record announcing an attach (as a journal that lost its lock does)."""

    async def append(self, record: rolling.typing.JournalRecord, *, sync: bool = False) -> None:
        if record.get("op") == "attach":
            raise RuntimeError("journal down")
        await super().append(record, sync=sync)


async def test_units_that_fail_one_after_another_after_a_halt_do_not_hang_the_run() -> None:
    # Four units in flight; each dies at its attach record, at its own time. The first
    # error halts the run; each later one must still wake the main program as its unit ends.
    fleet = SimulatedFleet(4, latency=Latency(replace=lambda rng: rng.uniform(1, 5)), seed=3)
    rollout = Rollout(
        fleet,
        "v2",
        strategy=RollingUpdate(max_unavailable=4),
        router=fleet,
        journal=_JournalDownAtAttach(),
    )
    # The journal's first error, alone: once it failed, every later record is refused with it.
    with anyio.fail_after(600), pytest.raises(RuntimeError, match="journal down"):
        await rollout.run()


class _LeaseLock:
    """A lock that is lost ``after`` seconds (its hold() returns, or raises ``error``)."""

    def __init__(self, after: float, error: Exception | None = None) -> None:
        self.after = after
        self.error = error
        self.held = False

    async def acquire(self) -> None:
        self.held = True

    async def release(self) -> None:
        self.held = False

    async def hold(self) -> None:
        await anyio.sleep(self.after)
        self.lost = True
        if self.error is not None:
            raise self.error

    lost = False


class _FencedJournal(MemoryJournal):
    """Refuses every record once ``lock`` is lost, as an EtcdJournal does."""

    def __init__(self, lock: _LeaseLock) -> None:
        super().__init__()
        self.lock = lock

    async def append(self, record: rolling.typing.JournalRecord, *, sync: bool = False) -> None:
        if self.lock.lost:
            raise rolling.LockLostError("lost the lock: the journal is fenced")
        await super().append(record, sync=sync)


@pytest.mark.parametrize("error", [None, rolling.LockLostError("lost the lock: lease gone")])
async def test_a_lock_lost_mid_rollout_halts_it_and_run_raises(error: Exception | None) -> None:
    fleet = SimulatedFleet(6, latency=Latency(replace=10))
    lock = _LeaseLock(after=15, error=error)
    recorder = EventRecorder()
    rollout = Rollout(fleet, "v2", router=fleet, lock=lock, observers=[recorder])
    with pytest.raises(rolling.LockLostError, match="lost the lock"):
        await rollout.run()
    finished = recorder.of_type(rolling.RolloutFinished)
    assert finished[-1].result.status is rolling.RolloutStatus.HALTED
    # One unit was in its replace when the lock went: it finished; nothing else started.
    assert [c.op for c in fleet.calls if c.op == "replace"] == ["replace", "replace"]
    assert not lock.held


async def test_a_lock_kept_to_the_end_changes_nothing() -> None:
    fleet = SimulatedFleet(3, latency=Latency(replace=10))
    lock = _LeaseLock(after=10_000)
    result = await Rollout(fleet, "v2", router=fleet, lock=lock).run()
    assert result.status is rolling.RolloutStatus.SUCCEEDED
    assert not lock.held


async def test_a_lost_lock_in_a_readiness_wait_stops_the_unit_without_putting_it_back() -> None:
    # The loss is seen first by hold(), while the unit waits for readiness: the halt
    # interrupts the wait, the unit would put its instance back, and that attach's record
    # is refused. run() raises the one LockLostError; no call follows the loss.
    fleet = SimulatedFleet(3, latency=Latency(replace=10))
    lock = _LeaseLock(after=15, error=rolling.LockLostError("lost the lock: lease gone"))
    rollout = Rollout(
        fleet,
        "v2",
        router=fleet,
        readiness=rolling.Readiness(check=fleet, initial_delay=20),
        lock=lock,
        journal=_FencedJournal(lock),
    )
    with pytest.raises(rolling.LockLostError, match="lease gone"):
        await rollout.run()
    assert [c.op for c in fleet.calls if c.op in MUTATING] == ["detach", "replace"]
    assert not lock.held

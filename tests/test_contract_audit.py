"""Promises of the docs that an audit, written from the docs alone, found broken.

Each test names the promise it holds the engine to; public API only.
"""

from __future__ import annotations

from typing import Any

import anyio
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
from rolling.testing import EventRecorder, InvariantMonitor, MemoryJournal, SimulatedFleet

pytestmark = pytest.mark.anyio

FINAL = {
    Phase.UPDATED,
    Phase.SKIPPED,
    Phase.FAILED,
    Phase.REVERTED,
    Phase.REVERT_FAILED,
    Phase.INTERRUPTED,
}


def rollout(fleet: SimulatedFleet, **options: Any) -> tuple[Rollout[Any], EventRecorder]:
    recorder = EventRecorder()
    options.setdefault("readiness", Readiness(check=fleet, period=1, timeout=1, deadline=30))
    return Rollout(fleet, "v2", router=fleet, observers=[recorder], **options), recorder


def last_phases(recorder: EventRecorder) -> dict[str, Phase]:
    return {e.instance_id: e.phase for e in recorder.of_type(rolling.InstancePhaseChanged)}


async def test_every_instance_ends_on_its_outcome_s_final_phase() -> None:
    # events.Phase: "Every instance a rollout works on ends on a final phase". A revert
    # that failed used to be followed by the put-back's attaching/attached.
    fleet = SimulatedFleet(5)
    fleet.fault("i-001", replace_raises=True)
    run, recorder = rollout(fleet, strategy=RollingUpdate(max_unavailable=1))
    result = await run.run()
    assert result.status is RolloutStatus.ROLLED_BACK
    last = last_phases(recorder)
    for instance in result.instances:
        if instance.id in last:
            assert last[instance.id] in FINAL, instance.id
            assert str(last[instance.id]) == str(instance.outcome), instance.id


async def test_a_failed_instance_the_rollback_puts_back_stays_failed() -> None:
    # concepts.md: FAILED is "could not be updated", REVERTED "was updated, then put back".
    fleet = SimulatedFleet(5)
    fleet.fault("i-000", replace_raises=1)
    run, recorder = rollout(
        fleet,
        strategy=RollingUpdate(max_unavailable=1),
        failure=FailurePolicy(max_failed=3, restore_failed=False),
    )
    result = await run.run()
    assert result.status is RolloutStatus.ROLLED_BACK  # stuck: the failed one holds the window
    first = result.by_id("i-000")
    assert first.outcome is InstanceOutcome.FAILED
    assert first.reason.startswith("driver.replace raised")
    assert first.reason.endswith("restored to v1 by the rollback")
    assert first.serving
    assert first.version == "v1"
    assert last_phases(recorder)["i-000"] is Phase.FAILED


async def test_a_batch_stopped_by_its_failures_still_finishes() -> None:
    # events.BatchFinished: "A lockstep batch ended." The batch whose failure fired the
    # rollback had a BatchStarted and no BatchFinished.
    fleet = SimulatedFleet(4)
    fleet.fault("i-002", replace_raises=True)
    run, recorder = rollout(fleet, strategy=Batches(2, 2))
    result = await run.run()
    assert result.status is RolloutStatus.ROLLED_BACK
    started = [e.index for e in recorder.of_type(rolling.BatchStarted)]
    finished = [(e.index, e.failed) for e in recorder.of_type(rolling.BatchFinished)]
    assert started == [0, 1]
    assert finished == [(0, 0), (1, 1)]


@pytest.mark.parametrize("how", ["policy", "abort"])
async def test_a_halt_is_announced_by_rollback_started(how: str) -> None:
    # events.RollbackStarted: "mode: revert or halt; instance_ids: empty for halt".
    fleet = SimulatedFleet(4)
    fleet.fault("i-001", replace_raises=True)
    if how == "policy":
        run, recorder = rollout(fleet, strategy=RollingUpdate(max_unavailable=1), rollback="halt")
        result = await run.run()
        assert result.status is RolloutStatus.HALTED
    else:
        run, recorder = rollout(fleet, steps=[rolling.Pause()])
        async with run.start() as handle:
            handle.abort(rollback=False)
        result = handle.result
        assert result.status is RolloutStatus.ABORTED
    (started,) = recorder.of_type(rolling.RollbackStarted)
    assert started.mode == "halt"
    assert started.instance_ids == ()
    assert started.reason == result.reason


class SlowEnd(MemoryJournal):
    """A journal whose ``end`` record takes a long time to write."""

    async def append(self, record: dict[str, Any], *, sync: bool = False) -> None:
        if record.get("t") == "end":
            await anyio.sleep(100)
        await super().append(record, sync=sync)


async def test_a_cancellation_after_the_rollout_ended_changes_nothing() -> None:
    # Found by the 600-scenario property test on trio: a cancel that came while the end was
    # being written sent a second RolloutFinished (CANCELLED after SUCCEEDED).
    fleet = SimulatedFleet(2)
    run, recorder = rollout(fleet, journal=SlowEnd())
    with anyio.move_on_after(50):  # the instances take 2 s: cut while "end" is written
        await run.run()
    finished = recorder.of_type(rolling.RolloutFinished)
    assert [e.result.status for e in finished] == [RolloutStatus.SUCCEEDED]
    assert [e.status for e in recorder.of_type(rolling.StatusChanged)][-1] is (
        RolloutStatus.SUCCEEDED
    )


async def test_a_cancelled_canary_is_left_as_it_is_and_resumed_away() -> None:
    # Found by the property test on trio: a cancellation, like a halt, leaves the canaries
    # serving their share, reported as strays; the resume removes them.
    fleet = SimulatedFleet(4)
    journal = MemoryJournal()

    def canary(**options: Any) -> Rollout[Any]:
        return Rollout(
            fleet,
            "v2",
            strategy=rolling.Canary(),
            steps=[rolling.SetWeight(25), rolling.Pause()],
            router=fleet,
            journal=journal,
            **options,
        )

    monitor = InvariantMonitor(fleet, max_unavailable=0, max_surge=4)
    handles: list[rolling.RolloutHandle] = []
    with anyio.move_on_after(100):
        async with canary().start() as handle:
            handles.append(handle)
    result = handles[0].result
    assert result.status is RolloutStatus.CANCELLED
    assert fleet.traffic_share("v2") == 25.0
    (stray,) = {s for i in result.instances for s in i.strays}
    assert fleet.is_attached(stray)
    monitor.check_result(result, fleet)
    monitor.assert_ok()
    resumed = canary()
    async with resumed.start() as handle:
        await anyio.sleep(100)
        assert fleet.traffic_share("v2") == 25.0  # rebuilt by the resume, held at the pause
        handle.abort()
    assert handle.result.status is RolloutStatus.ABORTED
    assert fleet.version_counts() == {"v1": 4}
    assert not fleet.is_live(stray)

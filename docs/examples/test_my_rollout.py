"""Test a rollout configuration on a simulated fleet before it touches a real one.

Copy this module into your test suite and make ``build_rollout`` the function your deploy
script uses to build its :class:`rolling.Rollout`. The tests pass a
:class:`rolling.testing.SimulatedFleet` where your script passes its real driver, router and
health check, script what goes wrong, and check what the rollout did: with an
:class:`rolling.testing.InvariantMonitor` watching every change, with the result, and with the
events an :class:`rolling.testing.EventRecorder` kept.

Every test runs twice, on asyncio and on trio, in virtual time: the hours of pauses, readiness
waits and back-off below take milliseconds, and every run takes the same path. It needs pytest,
anyio (installed with rolling) and trio. Run it with ``python -m pytest test_my_rollout.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import anyio
import pytest
import trio.testing

import rolling
from rolling.testing import (
    EventRecorder,
    FleetCall,
    InvariantMonitor,
    Latency,
    SimulatedFleet,
    virtual_time_loop_factory,
)

pytestmark = pytest.mark.anyio

STALLED = 24 * 3600
"""Virtual seconds after which a rollout has stalled: the test fails instead of hanging."""


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Run each test on both event loops, each with a clock that jumps when every task waits."""
    if request.param == "asyncio":
        return ("asyncio", {"loop_factory": virtual_time_loop_factory})
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})


# --------------------------------------------------------------------- the configuration
# In your project this lives in your deploy code, and the tests import it from there.

CANARY_STEPS: list[rolling.Step] = [
    rolling.Advance(1),  # one canary...
    rolling.Pause(),  # ...held until someone calls handle.promote()
    rolling.Advance("50%"),  # then half the fleet...
    rolling.Pause(60),  # ...left to bake for a minute, then the rest
]


def build_rollout(
    driver: Any,
    target: str,
    *,
    router: Any,
    check: Any,
    observers: Iterable[Callable[[rolling.Event], object]] = (),
) -> rolling.Rollout[Any]:
    """Build the rollout your deploy script runs."""
    return rolling.Rollout(
        driver,
        target,
        strategy=rolling.RollingUpdate(max_unavailable="25%"),
        readiness=rolling.Readiness(check=check, period=5, min_ready=30, deadline=120),
        router=router,
        failure=rolling.FailurePolicy(retries=2, backoff=rolling.Backoff(initial=10)),
        steps=CANARY_STEPS,
        progress_deadline=900,
        observers=observers,
    )


# ---------------------------------------------------------------------------- helpers


def simulated_fleet() -> SimulatedFleet:
    """Eight instances on v1 whose operations take (virtual) time, as real ones would."""
    return SimulatedFleet(8, version="v1", latency=Latency(replace=20, detach=5, attach=1))


def rollout_on(fleet: SimulatedFleet, recorder: EventRecorder) -> rolling.Rollout[Any]:
    """The configuration under test, with the fleet as driver, router and health check."""
    return build_rollout(fleet, "v2", router=fleet, check=fleet, observers=[recorder])


def watch(fleet: SimulatedFleet, rollout: rolling.Rollout[Any]) -> InvariantMonitor:
    """Check the invariants on every change of ``fleet``, with the rollout's own budget."""
    window = rollout.window(fleet.desired)
    return InvariantMonitor(
        fleet, max_unavailable=window.max_unavailable, max_surge=window.max_surge
    )


async def run_approving_pauses(rollout: rolling.Rollout[Any]) -> rolling.RolloutResult:
    """Run ``rollout``, promoting each ``Pause()`` as soon as it starts, as an operator would."""
    with anyio.fail_after(STALLED):
        async with rollout.start() as handle, handle.events() as events:
            async for event in events:
                if isinstance(event, rolling.StepStarted) and event.step == rolling.Pause():
                    handle.promote()
    return handle.result


def all_in_traffic(fleet: SimulatedFleet) -> bool:
    """Whether every live instance of ``fleet`` is in traffic."""
    return set(fleet.attached_ids) == {instance.id for instance in fleet.instances}


# ------------------------------------------------------------------------------ tests


async def test_canary_waits_at_the_pause_then_finishes_once_promoted() -> None:
    fleet = simulated_fleet()
    recorder = EventRecorder()
    rollout = rollout_on(fleet, recorder)
    monitor = watch(fleet, rollout)

    with anyio.fail_after(STALLED):
        async with rollout.start() as handle:
            # An hour of virtual time: the canary is long done, and the rollout must still wait.
            await anyio.sleep(3600)
            snapshot = handle.status()
            assert snapshot.status is rolling.RolloutStatus.PAUSED
            assert snapshot.step == rolling.Pause()
            assert fleet.version_counts() == {"v1": 7, "v2": 1}

            handle.promote()
            result = await handle.wait()

    assert result.status is rolling.RolloutStatus.SUCCEEDED, result.reason
    assert result.counts == {rolling.InstanceOutcome.UPDATED: 8}
    assert fleet.version_counts() == {"v2": 8}
    assert all_in_traffic(fleet)
    # Availability floor, capacity ceiling and no overlap held throughout; the result is true.
    monitor.check_result(result)
    assert monitor.min_serving == 6  # 8 instances, "25%" unavailable: 2 out at most

    # The manual pause was promoted; the timed one ran its full minute, with nothing started.
    started = recorder.of_type(rolling.StepStarted)
    finished = recorder.of_type(rolling.StepFinished)
    assert [(step.step, step.promoted) for step in finished] == [
        (rolling.Pause(), True),
        (rolling.Pause(60), False),
    ]
    assert finished[1].at - started[1].at == pytest.approx(60)
    detached_during_bake = [
        event
        for event in recorder.of_type(rolling.InstancePhaseChanged)
        if event.phase is rolling.Phase.DETACHING and started[1].at <= event.at < finished[1].at
    ]
    assert detached_during_bake == []
    assert recorder.phases("i-000")[-1] is rolling.Phase.UPDATED


async def test_a_release_that_never_gets_ready_rolls_back_by_itself() -> None:
    fleet = simulated_fleet()
    # Every instance that runs v2 answers its health checks with "never ready".
    fleet.fault(version="v2", never_ready=True)
    recorder = EventRecorder()
    rollout = rollout_on(fleet, recorder)
    monitor = watch(fleet, rollout)

    # No promote needed: the canary fails before the rollout reaches its pause.
    with anyio.fail_after(STALLED):
        result = await rollout.run()

    assert result.status is rolling.RolloutStatus.ROLLED_BACK
    assert "never ready" in result.reason
    canary = result.by_id("i-000")
    assert canary.outcome is rolling.InstanceOutcome.FAILED
    assert canary.attempts == 3  # the first try and two retries
    assert canary.version == "v1"
    assert canary.serving
    # Only the canary was touched; the whole fleet ends on v1, in traffic.
    assert {call.instance_id for call in fleet.calls if call.op == "replace"} == {"i-000"}
    assert fleet.version_counts() == {"v1": 8}
    assert all_in_traffic(fleet)
    monitor.check_result(result)
    assert recorder.of_type(rolling.RollbackStarted)


async def test_a_transient_replace_failure_is_absorbed_by_retries() -> None:
    fleet = simulated_fleet()
    # The first two replace calls on i-003 fail; the third works.
    fleet.fault("i-003", replace_raises=2)
    recorder = EventRecorder()
    rollout = rollout_on(fleet, recorder)
    monitor = watch(fleet, rollout)

    result = await run_approving_pauses(rollout)

    assert result.status is rolling.RolloutStatus.SUCCEEDED, result.reason
    assert result.by_id("i-003").attempts == 3
    assert recorder.phases("i-003").count(rolling.Phase.BACKING_OFF) == 2
    assert fleet.calls.count(FleetCall("replace", "i-003", "v2")) == 3
    assert fleet.version_counts() == {"v2": 8}
    assert all_in_traffic(fleet)
    monitor.check_result(result)

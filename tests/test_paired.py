"""Canary and BlueGreen on a simulated fleet: steps, weights, switches, rollbacks and resume."""

from __future__ import annotations

import math
from typing import Any

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

import rolling
from helpers import MUTATING, ElasticOnly, cancel_then_resume, monitor_for, rollout_for
from rolling import (
    Advance,
    Analysis,
    BlueGreen,
    Canary,
    ConfigError,
    InstanceOutcome,
    MeasurementTaken,
    Metric,
    Pause,
    Readiness,
    RollingUpdate,
    Rollout,
    RolloutStatus,
    SetCanaryScale,
    SetWeight,
    StepFinished,
    StepStarted,
    TrafficShifted,
)
from rolling._weights import canary_weights, share
from rolling.testing import EventRecorder, InvariantMonitor, Latency, MemoryJournal, SimulatedFleet
from rolling.typing import FULL_WEIGHT, MAX_WEIGHT

pytestmark = pytest.mark.anyio

WEIGHING = MUTATING | {"weigh", "weigh_out"}


class PlainRouter:
    """A router with attach and detach only (no weights), over a simulated fleet."""

    def __init__(self, fleet: SimulatedFleet) -> None:
        self.fleet = fleet
        self.calls: list[tuple[str, str]] = []

    async def attach(self, instance: Any) -> None:
        self.calls.append(("attach", instance.id))
        await self.fleet.attach(instance)

    async def detach(self, instance: Any) -> None:
        self.calls.append(("detach", instance.id))
        await self.fleet.detach(instance)


def canary_rollout(fleet: SimulatedFleet, steps: list[Any], **options: Any) -> Rollout[Any]:
    return Rollout(
        fleet,
        "v2",
        strategy=options.pop("strategy", Canary()),
        router=fleet,
        readiness=Readiness(check=fleet, period=1, deadline=30),
        steps=steps,
        **options,
    )


def all_full(fleet: SimulatedFleet) -> bool:
    return all(fleet.weight_of(i.id) == FULL_WEIGHT for i in fleet.instances)


# ----------------------------------------------------------------- configuration


def test_configuration_errors_name_the_field() -> None:
    fleet = SimulatedFleet(3)
    with pytest.raises(ConfigError, match=r"Rollout\.router.*no router"):
        Rollout(fleet, "v2", strategy=Canary())
    with pytest.raises(ConfigError, match=r"Rollout\.router.*PlainRouter has no set_weight"):
        Rollout(fleet, "v2", strategy=Canary(), router=PlainRouter(fleet))

    class InPlaceOnly:
        async def list_instances(self) -> Any:
            return await fleet.list_instances()

        async def replace(self, instance: Any, version: str) -> Any:
            return await fleet.replace(instance, version)  # pragma: no cover

    for strategy in (Canary(), BlueGreen()):
        with pytest.raises(ConfigError, match=r"Rollout\.strategy.*cannot launch"):
            Rollout(InPlaceOnly(), "v2", strategy=strategy, router=fleet)
    with pytest.raises(ConfigError, match=r"steps\[0\].*SetWeight, not Advance"):
        Rollout(fleet, "v2", strategy=Canary(), router=fleet, steps=[Advance(1)])
    with pytest.raises(ConfigError, match=r"steps\[1\].*Canary strategy only"):
        Rollout(fleet, "v2", steps=[Pause(1), SetWeight(5)])
    with pytest.raises(ConfigError, match=r"steps\[0\].*BlueGreen takes no steps"):
        Rollout(fleet, "v2", strategy=BlueGreen(), router=fleet, steps=[Pause(1)])
    with pytest.raises(ConfigError, match=r"SetWeight\.percent"):
        SetWeight(101)
    with pytest.raises(ConfigError, match=r"SetWeight\.percent"):
        SetWeight(True)
    with pytest.raises(ConfigError, match="exactly one"):
        SetCanaryScale()
    with pytest.raises(ConfigError, match="exactly one"):
        SetCanaryScale(replicas=1, match_traffic_weight=True)
    with pytest.raises(ConfigError, match=r"SetCanaryScale\.replicas"):
        SetCanaryScale(replicas=-1)
    with pytest.raises(ConfigError, match=r"BlueGreen\.auto_promote_after"):
        BlueGreen(auto_promote_after=5)
    with pytest.raises(ConfigError, match=r"BlueGreen\.preview_replicas"):
        BlueGreen(preview_replicas=0)
    with pytest.raises(ConfigError, match=r"BlueGreen\.pre_promotion"):
        BlueGreen(pre_promotion="errors")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"Canary\.promotion"):
        Canary(promotion="25%")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"Canary\.scale_down_delay"):
        Canary(scale_down_delay=-1)


def test_the_window_of_a_paired_strategy_allows_a_whole_new_set() -> None:
    fleet = SimulatedFleet(8)
    window = Rollout(fleet, "v2", strategy=BlueGreen(), router=fleet).window(8)
    assert (window.max_unavailable, window.max_surge, window.floor, window.ceiling) == (0, 8, 8, 16)
    promoted = Canary(promotion=RollingUpdate(max_unavailable=2, max_surge=1))
    window = Rollout(fleet, "v2", strategy=promoted, router=fleet).window(8)
    assert (window.max_unavailable, window.max_surge) == (2, 8)
    assert BlueGreen(preview_replicas="25%").preview(7) == 2
    assert BlueGreen(preview_replicas=10).preview(7) == 7


# ----------------------------------------------------------------------- weights


@given(
    percent=st.floats(0.5, 99.5),
    canaries=st.integers(1, 50),
    stables=st.integers(1, 500),
)
def test_canary_weights_are_the_closest_whole_weights(
    percent: float, canaries: int, stables: int
) -> None:
    new, old = canary_weights(percent, canaries, stables)
    assert 1 <= new <= MAX_WEIGHT
    assert 1 <= old <= MAX_WEIGHT
    got = share(canaries, new, stables, old)
    # No pair of whole weights with the canary side at the same stable weight does better.
    for other in (new - 1, new + 1):
        if 1 <= other <= MAX_WEIGHT:
            assert abs(got - percent) <= abs(share(canaries, other, stables, old) - percent) + 1e-9
    # Reachable shares are met within a tenth of a point.
    lowest = share(canaries, 1, stables, MAX_WEIGHT)
    highest = share(canaries, MAX_WEIGHT, stables, 1)
    if lowest + 0.1 <= percent <= highest - 0.1:
        assert abs(got - percent) < 0.1, (new, old, got)


def test_canary_weights_at_the_ends() -> None:
    assert canary_weights(0, 3, 10) == (0, FULL_WEIGHT)
    assert canary_weights(50, 0, 10) == (0, FULL_WEIGHT)
    assert canary_weights(100, 3, 10) == (FULL_WEIGHT, 0)
    assert canary_weights(100, 3, 10, keep_stable=True) == (MAX_WEIGHT, 1)
    assert canary_weights(40, 3, 0) == (FULL_WEIGHT, 0)
    assert canary_weights(5, 1, 9) == (45, 95)
    assert share(0, 1, 0, 1) == 0.0


# ------------------------------------------------------------------------ canary


async def test_a_canary_follows_its_steps_and_ends_on_the_new_version() -> None:
    fleet = SimulatedFleet(10)
    recorder = EventRecorder()
    steps = [SetWeight(10), Pause(30), SetWeight(25), Pause(30), SetWeight(50), Pause(30)]
    rollout = canary_rollout(fleet, steps, observers=[recorder])
    monitor = monitor_for(rollout, fleet)
    seen: list[tuple[float, dict[str, int], float]] = []
    async with rollout.start():
        await anyio.sleep(15)
        for _ in range(3):  # inside each pause
            await anyio.sleep(0 if not seen else 30)
            seen.append((fleet.traffic_share("v2"), fleet.version_counts(), anyio.current_time()))
    result = rollout_result(recorder)
    assert result.status is RolloutStatus.SUCCEEDED
    assert [round(s, 6) for s, _, _ in seen] == [10.0, 25.0, 50.0]
    # The canary set follows the weight: 10 % and 25 % of 10 rounded up, then half.
    assert [counts.get("v2") for _, counts, _ in seen] == [1, 3, 5]
    assert all(counts["v1"] == 10 for _, counts, _ in seen)
    shifts = recorder.of_type(TrafficShifted)
    assert [(e.percent, e.reason) for e in shifts] == [
        (10.0, "step"),
        (25.0, "step"),
        (50.0, "step"),
        (100.0, "switch"),
    ]
    assert fleet.version_counts() == {"v2": 10}
    assert all_full(fleet)
    monitor.check_result(result, fleet)
    monitor.assert_ok()


def rollout_result(recorder: EventRecorder) -> rolling.RolloutResult:
    (finished,) = recorder.of_type(rolling.RolloutFinished)
    return finished.result


async def test_an_explicit_canary_scale_holds_until_the_next_one() -> None:
    fleet = SimulatedFleet(10)
    steps = [
        SetCanaryScale(replicas=4),
        SetWeight(10),
        Pause(10),
        SetCanaryScale(match_traffic_weight=True),
        SetWeight(10),
        Pause(10),
    ]
    rollout = canary_rollout(fleet, steps)
    counts: list[int] = []
    async with rollout.start() as handle:
        await anyio.sleep(5)
        counts.append(fleet.version_counts().get("v2", 0))
        assert round(fleet.traffic_share("v2"), 6) == 10.0
        await anyio.sleep(10)
        counts.append(fleet.version_counts().get("v2", 0))
    assert counts == [4, 1]  # the scale shrank back to the weight's share: one canary
    assert handle.result.status is RolloutStatus.SUCCEEDED


async def test_abort_during_a_canary_leaves_the_stable_set_untouched_at_full_weight() -> None:
    fleet = SimulatedFleet(6)
    before = {i.id for i in fleet.instances}
    rollout = canary_rollout(fleet, [SetWeight(20), Pause()])
    monitor = monitor_for(rollout, fleet)
    async with rollout.start() as handle:
        await anyio.sleep(10)
        assert fleet.version_counts() == {"v1": 6, "v2": 2}
        handle.abort()
    result = handle.result
    assert result.status is RolloutStatus.ABORTED
    assert {i.id for i in fleet.instances} == before
    assert fleet.version_counts() == {"v1": 6}
    assert all_full(fleet)
    assert [i.outcome for i in result.instances].count(InstanceOutcome.REVERTED) == 2
    monitor.check_result(result, fleet)
    monitor.assert_ok()


async def test_promote_full_skips_the_steps_left() -> None:
    fleet = SimulatedFleet(4)
    recorder = EventRecorder()
    rollout = canary_rollout(
        fleet, [SetWeight(25), Pause(), SetWeight(50), Pause()], observers=[recorder]
    )
    async with rollout.start() as handle:
        await anyio.sleep(5)
        handle.promote(full=True)
    assert handle.result.status is RolloutStatus.SUCCEEDED
    assert [e.percent for e in recorder.of_type(TrafficShifted)] == [25.0, 100.0]
    assert fleet.version_counts() == {"v2": 4}


async def test_a_failing_canary_rolls_back_and_terminates_what_it_launched() -> None:
    fleet = SimulatedFleet(5)
    fleet.fault(version="v2", never_ready=True)
    rollout = canary_rollout(fleet, [SetWeight(40), Pause(10)])
    monitor = monitor_for(rollout, fleet)
    result = await rollout.run()
    assert result.status is RolloutStatus.ROLLED_BACK
    assert fleet.version_counts() == {"v1": 5}
    assert len(fleet.instances) == 5
    assert all_full(fleet)
    monitor.check_result(result, fleet)
    monitor.assert_ok()


async def test_a_canary_promoted_through_a_window() -> None:
    fleet = SimulatedFleet(8)
    recorder = EventRecorder()
    strategy = Canary(promotion=RollingUpdate(max_unavailable=0, max_surge=2))
    rollout = canary_rollout(
        fleet, [SetWeight(25), Pause(5)], strategy=strategy, observers=[recorder]
    )
    monitor = monitor_for(rollout, fleet)
    result = await rollout.run()
    assert result.status is RolloutStatus.SUCCEEDED
    assert fleet.version_counts() == {"v2": 8}
    assert all_full(fleet)
    # Everyone at full weight first; then the window replaces the rest, never above 8 + 8.
    assert [e.reason for e in recorder.of_type(TrafficShifted)] == ["step", "promote"]
    assert monitor.max_existing <= 10  # 8 old + 2 canaries, then the window's surge of 2
    monitor.check_result(result, fleet)
    monitor.assert_ok()


async def test_a_canary_below_the_floor_never_takes_every_request() -> None:
    fleet = SimulatedFleet(5)
    recorder = EventRecorder()
    rollout = canary_rollout(
        fleet, [SetCanaryScale(replicas=1), SetWeight(100), Pause(10)], observers=[recorder]
    )
    async with rollout.start():
        await anyio.sleep(5)
        assert all(fleet.weight_of(i.id) == 1 for i in fleet.instances if i.version == "v1")
    step = recorder.of_type(TrafficShifted)[1]  # [0]: the scale step, at weight 0
    assert (step.percent, step.new_weight, step.old_weight) == (100.0, MAX_WEIGHT, 1)
    assert step.achieved == pytest.approx(100 * 256 / 261)


# -------------------------------------------------------------------- blue-green


async def test_blue_green_keeps_blue_for_the_delay_then_terminates_it() -> None:
    fleet = SimulatedFleet(4, latency=Latency(launch=2))
    blue = {i.id for i in fleet.instances}
    recorder = EventRecorder()
    rollout = Rollout(
        fleet, "v2", strategy=BlueGreen(scale_down_delay=60), router=fleet, observers=[recorder]
    )
    monitor = monitor_for(rollout, fleet)
    async with rollout.start():
        await anyio.sleep(30)
        assert blue <= {i.id for i in fleet.instances}
        assert fleet.traffic_share("v2") == 100.0
        assert all(fleet.weight_of(i) == 0 for i in blue)
        await anyio.sleep(40)
        assert not blue & {i.id for i in fleet.instances}
    (switch,) = recorder.of_type(TrafficShifted)
    finished = rollout_result(recorder)
    assert finished.status is RolloutStatus.SUCCEEDED
    assert finished.finished_at - switch.at == pytest.approx(60, abs=1)
    assert monitor.max_existing == 8
    monitor.check_result(finished, fleet)
    monitor.assert_ok()


async def _bad(_context: object) -> float:
    return 1.0


BAD = Analysis(
    name="errors", metrics=[Metric(name="errors", provider=_bad, failure=lambda v: v > 0.5)]
)


@pytest.mark.parametrize("weighted", [True, False], ids=["weights", "attach-detach"])
async def test_a_failed_post_promotion_analysis_switches_back(weighted: bool) -> None:
    fleet = SimulatedFleet(3)
    router: Any = fleet if weighted else PlainRouter(fleet)
    rollout = Rollout(
        fleet, "v2", strategy=BlueGreen(post_promotion=BAD, scale_down_delay=60), router=router
    )
    monitor = monitor_for(rollout, fleet)
    result = await rollout.run()
    assert result.status is RolloutStatus.ROLLED_BACK
    assert "errors" in result.reason
    assert fleet.version_counts() == {"v1": 3}
    assert all_full(fleet)
    assert set(fleet.attached_ids) == {i.id for i in fleet.instances}
    monitor.check_result(result, fleet)
    monitor.assert_ok()
    if not weighted:
        calls = router.calls
        # Green goes in at the switch, never before; each blue leaves only after its green came.
        assert calls[0][0] == "attach"
        assert [op for op, _ in calls].count("attach") == 6  # 3 green in, 3 blue back
        assert [op for op, _ in calls].count("detach") == 6  # 3 blue out, 3 green out
        first_detach = next(i for i, (op, _) in enumerate(calls) if op == "detach")
        assert first_detach >= 1


async def test_a_failed_pre_promotion_analysis_never_switches() -> None:
    fleet = SimulatedFleet(3)
    recorder = EventRecorder()
    rollout = Rollout(
        fleet,
        "v2",
        strategy=BlueGreen(pre_promotion=BAD),
        router=fleet,
        observers=[recorder],
    )
    result = await rollout.run()
    assert result.status is RolloutStatus.ROLLED_BACK
    assert not recorder.of_type(TrafficShifted)
    assert fleet.version_counts() == {"v1": 3}


async def test_blue_green_waits_for_a_promote_or_its_timer() -> None:
    fleet = SimulatedFleet(2)
    rollout = Rollout(
        fleet, "v2", strategy=BlueGreen(auto_promote=False, scale_down_delay=0), router=fleet
    )
    async with rollout.start() as handle:
        await anyio.sleep(100)
        assert handle.status().status is RolloutStatus.PAUSED
        assert fleet.traffic_share("v2") == 0.0
        assert fleet.version_counts() == {"v1": 2, "v2": 2}  # the preview stands, unseen
        handle.promote()
    assert handle.result.status is RolloutStatus.SUCCEEDED
    fleet = SimulatedFleet(2)
    strategy = BlueGreen(auto_promote=False, auto_promote_after=30, scale_down_delay=0)
    started = anyio.current_time()
    result = await Rollout(fleet, "v2", strategy=strategy, router=fleet).run()
    assert result.status is RolloutStatus.SUCCEEDED
    assert anyio.current_time() - started == pytest.approx(30, abs=1)


async def test_a_preview_share_comes_first_and_the_rest_before_the_switch() -> None:
    fleet = SimulatedFleet(4)
    rollout = Rollout(
        fleet,
        "v2",
        strategy=BlueGreen(preview_replicas=1, auto_promote=False, scale_down_delay=0),
        router=fleet,
    )
    async with rollout.start() as handle:
        await anyio.sleep(10)
        assert fleet.version_counts() == {"v1": 4, "v2": 1}
        handle.promote()
    assert handle.result.status is RolloutStatus.SUCCEEDED
    assert fleet.version_counts() == {"v2": 4}


async def test_a_halt_during_the_hold_reports_both_sets() -> None:
    fleet = SimulatedFleet(2)
    rollout = Rollout(fleet, "v2", strategy=BlueGreen(scale_down_delay=60), router=fleet)
    async with rollout.start() as handle:
        await anyio.sleep(20)
        handle.abort(rollback=False)
    result = handle.result
    assert result.status is RolloutStatus.ABORTED
    assert len(fleet.instances) == 4  # both sets stand, as a halt leaves them
    strays = {s for i in result.instances for s in i.strays}
    assert strays == {i.id for i in fleet.instances if i.version == "v2"}
    assert all(i.outcome is InstanceOutcome.INTERRUPTED for i in result.instances)
    assert all(fleet.is_attached(s) and fleet.weight_of(s) > 0 for s in strays)  # serving
    InvariantMonitor(fleet, max_unavailable=0, max_surge=2).check_result(result)


async def test_a_canary_halted_at_its_first_weight_is_reported_serving() -> None:
    # Found by the 600-scenario property test: a halt leaves the canary taking its share,
    # and the result names it as its unit's stray (the monitor accepts that after a halt).
    fleet = SimulatedFleet(2)
    steps: list[Any] = [SetWeight(10), Pause()]
    rollout = Rollout(fleet, "v2", strategy=Canary(), steps=steps, router=fleet)
    async with rollout.start() as handle:
        await anyio.sleep(5)
        handle.abort(rollback=False)
    result = handle.result
    assert result.status is RolloutStatus.ABORTED
    (canary,) = [i.id for i in fleet.instances if i.version == "v2"]
    assert fleet.weight_of(canary) > 0
    assert {s for i in result.instances for s in i.strays} == {canary}
    InvariantMonitor(fleet, max_unavailable=0, max_surge=2).check_result(result)


# ------------------------------------------------------------------------ resume


def canary_shape(journal: MemoryJournal) -> Any:
    def make() -> tuple[SimulatedFleet, Rollout[Any]]:
        fleet = SimulatedFleet(4, latency=Latency(launch=3, terminate=1, detach=1, attach=1))
        steps = [SetWeight(25), Pause(5), SetWeight(50)]
        return fleet, rollout_for(fleet, journal, strategy=Canary(), steps=steps)

    return make


def blue_green_shape(journal: MemoryJournal) -> Any:
    def make() -> tuple[SimulatedFleet, Rollout[Any]]:
        fleet = SimulatedFleet(3, latency=Latency(launch=3, terminate=1, detach=1, attach=1))
        return fleet, rollout_for(fleet, journal, strategy=BlueGreen(scale_down_delay=10))

    return make


@pytest.mark.parametrize("shape", [canary_shape, blue_green_shape], ids=["canary", "blue-green"])
async def test_cancel_at_every_effect_then_resume(shape: Any) -> None:
    fleet, rollout = shape(MemoryJournal())()
    assert (await rollout.run()).status is RolloutStatus.SUCCEEDED
    effects = sum(1 for c in fleet.calls if c.op in MUTATING | {"set_weight"})
    assert effects >= 10
    for k in range(1, effects + 1):
        fleet, monitor = await cancel_then_resume(shape, k, WEIGHING)
        assert all_full(fleet), k
        monitor.assert_ok()


async def test_a_paired_strategy_works_with_an_elastic_only_driver() -> None:
    fleet = SimulatedFleet(3)
    result = await Rollout(
        ElasticOnly(fleet), "v2", strategy=BlueGreen(scale_down_delay=0), router=fleet
    ).run()
    assert result.status is RolloutStatus.SUCCEEDED
    assert fleet.version_counts() == {"v2": 3}
    assert not math.isnan(result.finished_at)


async def test_pause_holds_a_canary_before_its_next_step() -> None:
    fleet = SimulatedFleet(4)
    recorder = EventRecorder()
    rollout = canary_rollout(fleet, [SetWeight(25), SetWeight(50)], observers=[recorder])
    async with rollout.start() as handle:
        handle.pause()
        await anyio.sleep(100)
        # Paused before the first step: nothing launched, no weight moved.
        assert handle.status().status is RolloutStatus.PAUSED
        assert fleet.version_counts() == {"v1": 4}
        handle.resume()
    assert handle.result.status is RolloutStatus.SUCCEEDED
    assert [e.percent for e in recorder.of_type(TrafficShifted)] == [25.0, 50.0, 100.0]


async def test_a_shrinking_canary_puts_the_stable_set_back_before_a_canary_leaves() -> None:
    # Found by the property test: 100 % on two canaries took the stable set to 0, and the
    # drop to 10 % took a canary to 0 before the stable set was back, under the floor.
    fleet = SimulatedFleet(2)
    rollout = canary_rollout(fleet, [SetWeight(100), SetWeight(10)])
    monitor = monitor_for(rollout, fleet)
    result = await rollout.run()
    assert result.status is RolloutStatus.SUCCEEDED
    monitor.check_result(result, fleet)
    monitor.assert_ok()


async def test_an_old_instance_that_cannot_be_detached_is_left_at_weight_0() -> None:
    # Found by the property test: a window promotion retires canaries' partners at full
    # weight, and a failed detach left one in traffic.
    fleet = SimulatedFleet(4)
    fleet.fault("i-000", detach_raises=True)
    strategy = Canary(promotion=RollingUpdate(max_unavailable=1, max_surge=1))
    rollout = canary_rollout(
        fleet, [SetWeight(25)], strategy=strategy, failure=rolling.FailurePolicy(max_failed=4)
    )
    monitor = monitor_for(rollout, fleet)
    result = await rollout.run()
    monitor.check_result(result, fleet)
    monitor.assert_ok()
    (first,) = [i for i in result.instances if i.id == "i-000"]
    assert first.strays == ("i-000",)
    assert fleet.weight_of("i-000") == 0
    assert "left in the router at weight 0" in first.reason


async def test_the_status_says_the_new_sets_share_of_traffic() -> None:
    fleet = SimulatedFleet(4)
    rollout = canary_rollout(fleet, [SetWeight(25), Pause(), SetWeight(30), Pause()])
    async with rollout.start() as handle:
        assert handle.status().traffic is None  # no shift yet
        await anyio.sleep(100)
        assert handle.status().traffic == fleet.traffic_share("v2") == 25.0
        handle.promote()
        await anyio.sleep(100)
        # 30 % of four: two canaries; the share is what the weights give, not the ask.
        assert handle.status().traffic == pytest.approx(fleet.traffic_share("v2"))
        canary, stable = canary_weights(30, 2, 4)
        assert handle.status().traffic == pytest.approx(share(2, canary, 4, stable))
        handle.abort()
    assert handle.result.status is RolloutStatus.ABORTED
    assert handle.status().traffic == 0.0
    assert fleet.traffic_share("v2") == 0.0
    plain = Rollout(SimulatedFleet(2), "v2")
    async with plain.start() as handle:
        pass
    assert handle.status().traffic is None


async def test_after_a_window_promotion_the_status_says_all_traffic_is_new() -> None:
    fleet = SimulatedFleet(4)
    strategy = Canary(promotion=RollingUpdate(max_unavailable=1))
    rollout = canary_rollout(fleet, [SetWeight(25)], strategy=strategy)
    async with rollout.start() as handle:
        pass
    assert handle.result.status is RolloutStatus.SUCCEEDED
    assert handle.status().traffic == 100.0


async def test_a_resumed_canary_goes_on_after_its_last_ended_step() -> None:
    fleet = SimulatedFleet(4)
    journal = MemoryJournal()
    steps = [SetWeight(25), Pause(100), SetWeight(50), Pause(100)]
    with anyio.move_on_after(150):  # cut during the second pause
        await canary_rollout(fleet, steps, journal=journal).run()
    assert fleet.version_counts() == {"v1": 4, "v2": 2}
    recorder = EventRecorder()
    began = anyio.current_time()
    result = await canary_rollout(fleet, steps, journal=journal, observers=[recorder]).run()
    assert result.status is RolloutStatus.SUCCEEDED
    assert fleet.version_counts() == {"v2": 4}
    # The traffic steps run again to rebuild the canary set; the pause that had ended is
    # not held again, the one that was cut is held in full.
    assert [e.index for e in recorder.of_type(StepStarted)] == [0, 2, 3]
    assert [e.percent for e in recorder.of_type(TrafficShifted)] == [25.0, 50.0, 100.0]
    assert 100 <= anyio.current_time() - began < 150


async def test_a_resumed_canary_keeps_a_full_promote() -> None:
    fleet = SimulatedFleet(4, latency=Latency(launch=30))
    journal = MemoryJournal()
    steps = [SetWeight(25), Pause(), SetWeight(50), Pause()]
    with anyio.move_on_after(45):  # cut while the promotion stages the rest of the new set
        async with canary_rollout(fleet, steps, journal=journal).start() as handle:
            await anyio.sleep(10)  # the first step's canary is still being launched
            handle.promote(full=True)
    assert fleet.traffic_share("v2") == 25.0
    recorder = EventRecorder()
    resumed = canary_rollout(fleet, steps, journal=journal, observers=[recorder])
    with anyio.fail_after(1000):  # a resumed run that held at the last Pause() would not end
        result = await resumed.run()
    assert result.status is RolloutStatus.SUCCEEDED
    assert fleet.version_counts() == {"v2": 4}
    assert not recorder.of_type(StepStarted)  # straight to the promotion


def manual_blue_green(fleet: SimulatedFleet, journal: MemoryJournal, **options: Any) -> Any:
    strategy = BlueGreen(auto_promote=False, scale_down_delay=100)
    return Rollout(fleet, "v2", strategy=strategy, router=fleet, journal=journal, **options)


async def test_a_resumed_blue_green_does_not_ask_again_for_an_approval_it_had() -> None:
    fleet = SimulatedFleet(3)
    journal = MemoryJournal()
    with anyio.move_on_after(60):  # cut while blue is kept after the switch
        async with manual_blue_green(fleet, journal).start() as handle:
            await anyio.sleep(10)
            assert handle.status().status is RolloutStatus.PAUSED  # waiting for the approval
            handle.promote()
    assert fleet.traffic_share("v2") == 100.0
    recorder = EventRecorder()
    began = anyio.current_time()
    with anyio.fail_after(1000):  # a resumed run that asked again would hold for ever
        result = await manual_blue_green(fleet, journal, observers=[recorder]).run()
    assert result.status is RolloutStatus.SUCCEEDED
    assert fleet.version_counts() == {"v2": 3}
    assert not recorder.of_type(StepStarted)  # the wait for a promote had ended
    # Green was staged and switched to again, and blue kept the whole delay after that.
    assert [e.reason for e in recorder.of_type(TrafficShifted)] == ["switch"]
    assert anyio.current_time() - began >= 100


async def test_a_resumed_blue_green_still_asks_when_it_was_cut_before_the_approval() -> None:
    fleet = SimulatedFleet(3)
    journal = MemoryJournal()
    with anyio.move_on_after(30):  # cut while it waits for a promote
        await manual_blue_green(fleet, journal).run()
    async with manual_blue_green(fleet, journal).start() as handle:
        await anyio.sleep(30)
        assert handle.status().status is RolloutStatus.PAUSED
        assert fleet.traffic_share("v2") == 0.0
        handle.promote(full=True)
    assert handle.result.status is RolloutStatus.SUCCEEDED
    assert fleet.version_counts() == {"v2": 3}


async def test_a_resumed_blue_green_keeps_a_full_promote() -> None:
    fleet = SimulatedFleet(3)
    journal = MemoryJournal()
    steps_seen = EventRecorder()
    with anyio.move_on_after(60):  # cut while blue is kept after the switch
        async with manual_blue_green(fleet, journal, observers=[steps_seen]).start() as handle:
            await anyio.sleep(10)
            handle.promote(full=True)
    assert [e.promoted for e in steps_seen.of_type(StepFinished)] == [True]
    assert {"t": "promoted"} in journal.durable
    recorder = EventRecorder()
    with anyio.fail_after(1000):
        result = await manual_blue_green(fleet, journal, observers=[recorder]).run()
    assert result.status is RolloutStatus.SUCCEEDED
    assert fleet.version_counts() == {"v2": 3}


# ------------------------------------------------------------ background analysis


class Watching:
    """A provider that fails once the new set is measured, and keeps every context."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    async def measure(self, context: Any) -> float | None:
        self.seen.append(context)
        return 1.0 if context.new_instances else None


def watching(provider: Watching) -> Analysis:
    metric = Metric(name="errors", provider=provider, failure=lambda v: v > 0.5, interval=5)
    return Analysis(metrics=[metric])


@pytest.mark.parametrize("weighted", [True, False], ids=["weights", "attach-detach"])
async def test_the_background_analysis_watches_blue_green_s_hold(weighted: bool) -> None:
    fleet = SimulatedFleet(3)
    blue = {i.id for i in fleet.instances}
    provider = Watching()
    router: Any = fleet if weighted else PlainRouter(fleet)
    rollout = Rollout(
        fleet,
        "v2",
        strategy=BlueGreen(scale_down_delay=100),
        router=router,
        analysis=watching(provider),
    )
    result = await rollout.run()
    # Failed during the hold: switched back to blue, which was never stopped.
    assert result.status is RolloutStatus.ROLLED_BACK
    assert "analysis 'analysis' failed" in result.reason
    assert {i.id for i in fleet.instances} == blue
    assert fleet.version_counts() == {"v1": 3}
    # Blue was kept out of traffic while green was measured: not the control group.
    assert all(not c.old_instances for c in provider.seen)
    assert all(len(c.new_instances) == 3 for c in provider.seen)


async def test_the_background_analysis_watches_a_canary_s_steps() -> None:
    fleet = SimulatedFleet(4)
    stable = {i.id for i in fleet.instances}
    provider = Watching()
    recorder = EventRecorder()
    rollout = canary_rollout(
        fleet, [SetWeight(25), Pause(100)], analysis=watching(provider), observers=[recorder]
    )
    result = await rollout.run()
    assert result.status is RolloutStatus.ROLLED_BACK
    assert {i.id for i in fleet.instances} == stable
    # It began measuring at the first shift, and failed during the pause after it.
    shifted = recorder.of_type(TrafficShifted)[0].at
    measured = [e.at for e in recorder.of_type(MeasurementTaken)]
    assert measured
    assert shifted <= measured[0] < shifted + 100
    assert all(len(c.old_instances) == 4 for c in provider.seen)

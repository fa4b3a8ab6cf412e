"""Metric analysis in the engine: the Analyze step and the background analysis.

A simulated fleet on both backends, in virtual time; providers are plain async
functions that read what is on the new version.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

from rolling import (
    Advance,
    Analysis,
    AnalysisDecided,
    Analyze,
    ConfigError,
    MeasurementTaken,
    Metric,
    Readiness,
    RollbackStarted,
    Rollout,
    RolloutStatus,
)
from rolling.analysis import MeasureContext, Outcome
from rolling.testing import EventRecorder, Latency, SimulatedFleet

pytestmark = pytest.mark.anyio


class ErrorRate:
    """A provider: ``rate`` while an instance runs the target, no data before."""

    def __init__(self, rate: float = 0.1) -> None:
        self.rate = rate
        self.seen: list[MeasureContext] = []
        self.error: Exception | None = None

    async def measure(self, context: MeasureContext) -> float | None:
        self.seen.append(context)
        if self.error is not None:
            raise self.error
        if not context.new_instances:
            return None
        return self.rate


def error_metric(provider: Any, **options: Any) -> Metric:
    options.setdefault("interval", 5)
    return Metric(name="errors", provider=provider, failure=lambda v: v > 0.01, **options)


def make(fleet: SimulatedFleet, **options: Any) -> tuple[Rollout[Any], EventRecorder]:
    recorder = EventRecorder()
    rollout: Rollout[Any] = Rollout(
        fleet,
        "v2",
        router=fleet,
        readiness=Readiness(check=fleet, period=1, timeout=1, deadline=30),
        observers=[recorder],
        **options,
    )
    return rollout, recorder


def fleet_of(size: int = 6) -> SimulatedFleet:
    return SimulatedFleet(size, latency=Latency(replace=10))


# --------------------------------------------------------------------- background


async def test_background_failure_rolls_back_after_the_first_instance() -> None:
    fleet = fleet_of()
    provider = ErrorRate(0.1)
    rollout, recorder = make(fleet, analysis=Analysis(metrics=[error_metric(provider)]))
    result = await rollout.run()
    assert result.status is RolloutStatus.ROLLED_BACK
    assert "analysis 'analysis' failed: errors: 1 failed measurement" in result.reason
    assert fleet.version_counts() == {"v1": 6}
    assert result.counts.get(rolling_updated(), 0) == 0
    # It started once an instance was on v2 and in traffic: never measured an empty new set.
    assert all(c.new_instances for c in provider.seen)
    assert provider.seen[0].target == "v2"
    assert provider.seen[0].old_versions == ("v1",)
    assert result.verdict is not None
    assert result.verdict.outcome is Outcome.FAILED
    assert result.verdict.background
    assert [m.outcome for m in result.measurements] == [Outcome.FAILED]
    taken = recorder.of_type(MeasurementTaken)
    assert [e.measurement.value for e in taken] == [0.1]
    # It stops when the rollback starts: nothing measured after.
    rollback_at = recorder.of_type(RollbackStarted)[0].at
    assert all(e.at <= rollback_at for e in taken)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["verdict"]["outcome"] == "failed"
    assert data["measurements"][0]["value"] == 0.1


def rolling_updated() -> Any:
    from rolling import InstanceOutcome  # noqa: PLC0415 - local to keep the header short

    return InstanceOutcome.UPDATED


async def test_background_good_release_succeeds_after_its_bake() -> None:
    fleet = fleet_of()
    provider = ErrorRate(0.0)
    analysis = Analysis(metrics=[error_metric(provider)], bake=30)
    rollout, recorder = make(fleet, analysis=analysis)
    result = await rollout.run()
    assert result.status is RolloutStatus.SUCCEEDED
    assert fleet.version_counts() == {"v2": 6}
    last_update = max(i.finished_at or 0 for i in result.instances)
    assert result.finished_at >= last_update + 30
    assert result.verdict is not None
    assert result.verdict.outcome is Outcome.SUCCESSFUL
    assert len(result.measurements) >= 6
    assert recorder.of_type(AnalysisDecided)[-1].verdict.outcome is Outcome.SUCCESSFUL


async def test_background_waits_for_a_first_measurement_before_succeeding() -> None:
    fleet = SimulatedFleet(2)  # instant: the rollout would end before any measurement
    provider = ErrorRate(0.0)
    rollout, _ = make(fleet, analysis=Analysis(metrics=[error_metric(provider, initial_delay=20)]))
    result = await rollout.run()
    assert result.status is RolloutStatus.SUCCEEDED
    assert [m.outcome for m in result.measurements] == [Outcome.SUCCESSFUL]
    assert result.duration >= 20


async def test_background_failure_mid_rollout_stops_new_disruptions() -> None:
    fleet = fleet_of(8)
    provider = ErrorRate(0.0)
    rollout, _ = make(fleet, analysis=Analysis(metrics=[error_metric(provider, interval=1)]))
    async with rollout.start() as handle:
        while fleet.version_counts().get("v2", 0) < 3:  # noqa: ASYNC110 - polling what the rollout does
            await anyio.sleep(1)
        provider.rate = 0.5
        result = await handle.wait()
    assert result.status is RolloutStatus.ROLLED_BACK
    assert fleet.version_counts() == {"v1": 8}
    assert sum(1 for i in result.instances if i.outcome.value == "pending") >= 3


async def test_background_halt_policy() -> None:
    fleet = fleet_of()
    rollout, _ = make(
        fleet, analysis=Analysis(metrics=[error_metric(ErrorRate(0.1))]), rollback="halt"
    )
    result = await rollout.run()
    assert result.status is RolloutStatus.HALTED
    # The first v2 instance, and at most the one in flight when the verdict came, stay.
    assert fleet.version_counts()["v2"] in {1, 2}
    assert "analysis 'analysis' failed" in result.reason


async def test_background_inconclusive_pauses_for_a_person() -> None:
    fleet = fleet_of()
    provider = ErrorRate(0.03)
    metric = Metric(
        name="errors",
        provider=provider,
        success=lambda v: v < 0.01,
        failure=lambda v: v > 0.05,
        interval=5,
    )
    rollout, _ = make(fleet, analysis=Analysis(metrics=[metric]))
    async with rollout.start() as handle:
        while handle.status().status is not RolloutStatus.PAUSED:  # noqa: ASYNC110 - polling what the rollout does
            await anyio.sleep(1)
        assert "inconclusive" in handle.status().reason or handle.status().paused
        await anyio.sleep(100)
        assert handle.status().status is RolloutStatus.PAUSED
        v2 = fleet.version_counts().get("v2", 0)
        assert v2 < 6
        provider.rate = 0.0
        handle.resume()
        result = await handle.wait()
    assert result.status is RolloutStatus.SUCCEEDED
    assert result.verdict is not None
    assert result.verdict.outcome is Outcome.INCONCLUSIVE


async def test_background_errors_in_a_row_fail() -> None:
    fleet = fleet_of()
    provider = ErrorRate(0.0)
    provider.error = OSError("prometheus is down")
    rollout, _ = make(
        fleet,
        analysis=Analysis(metrics=[error_metric(provider, interval=1, consecutive_error_limit=2)]),
    )
    result = await rollout.run()
    assert result.status is RolloutStatus.ROLLED_BACK
    assert "3 errors in a row" in result.reason
    assert "prometheus is down" in result.reason


async def test_a_slow_provider_is_an_error() -> None:
    async def slow(_context: MeasureContext) -> float:
        await anyio.sleep(100)
        return 0.0

    fleet = fleet_of()
    rollout, _ = make(
        fleet,
        analysis=Analysis(metrics=[error_metric(slow, timeout=2, consecutive_error_limit=0)]),
    )
    result = await rollout.run()
    assert result.status is RolloutStatus.ROLLED_BACK
    assert "longer than 2" in result.reason


async def test_dry_run_never_decides() -> None:
    fleet = fleet_of()
    rollout, _ = make(
        fleet, analysis=Analysis(metrics=[error_metric(ErrorRate(0.5), dry_run=True)], bake=10)
    )
    result = await rollout.run()
    assert result.status is RolloutStatus.SUCCEEDED
    assert result.measurements
    assert result.measurements[0].dry_run
    assert result.measurements[0].outcome is Outcome.FAILED


async def test_a_rejected_prepare_stops_before_any_change() -> None:
    class Rejecting(ErrorRate):
        async def prepare(self, context: MeasureContext) -> None:
            raise ConfigError("q", f"rejected for {context.target}", "fix it")

    fleet = fleet_of()
    rollout, _ = make(fleet, analysis=Analysis(metrics=[error_metric(Rejecting())]))
    with pytest.raises(ConfigError, match="rejected for v2"):
        await rollout.run()
    assert fleet.calls == []


async def test_a_prepare_that_hangs_is_cut_at_the_metric_s_timeout() -> None:
    class Hanging(ErrorRate):
        async def prepare(self, _context: MeasureContext) -> None:
            await anyio.sleep_forever()

    fleet = fleet_of()
    metric = error_metric(Hanging(), timeout=7)
    rollout, _ = make(fleet, analysis=Analysis(metrics=[metric]))
    began = anyio.current_time()
    with pytest.raises(TimeoutError, match=r"'errors'.*prepare\(\) did not return within 7s"):
        await rollout.run()
    assert anyio.current_time() - began == pytest.approx(7)
    assert fleet.calls == []


async def test_rollout_analysis_must_be_an_analysis() -> None:
    with pytest.raises(ConfigError, match=r"Rollout\.analysis"):
        make(fleet_of(), analysis="error rate")


# --------------------------------------------------------------------- the step


def step_rollout(
    fleet: SimulatedFleet, provider: Any, step_options: dict[str, Any] | None = None, **metric: Any
) -> tuple[Rollout[Any], EventRecorder]:
    analysis = Analysis(metrics=[error_metric(provider, **metric)], name="canary")
    return make(fleet, steps=[Advance(1), Analyze(analysis, **(step_options or {}))])


async def test_step_failure_rolls_back() -> None:
    fleet = fleet_of()
    rollout, _ = step_rollout(fleet, ErrorRate(0.1))
    result = await rollout.run()
    assert result.status is RolloutStatus.ROLLED_BACK
    assert "analysis 'canary' failed" in result.reason
    assert fleet.version_counts() == {"v1": 6}
    assert result.verdict is not None
    assert not result.verdict.background


async def test_step_success_goes_on() -> None:
    fleet = fleet_of()
    rollout, _ = step_rollout(fleet, ErrorRate(0.0), count=3)
    result = await rollout.run()
    assert result.status is RolloutStatus.SUCCEEDED
    assert len(result.measurements) == 3
    assert result.verdicts[0].outcome is Outcome.SUCCESSFUL


def inconclusive_provider() -> ErrorRate:
    return ErrorRate(0.03)


def inconclusive_step(
    fleet: SimulatedFleet, **step_options: Any
) -> tuple[Rollout[Any], EventRecorder]:
    metric = Metric(
        name="errors",
        provider=inconclusive_provider(),
        success=lambda v: v < 0.01,
        failure=lambda v: v > 0.05,
    )
    step = Analyze(Analysis(metrics=[metric]), **step_options)
    return make(fleet, steps=[Advance(1), step])


@pytest.mark.parametrize("action", ["promote", "resume", "abort"])
async def test_step_inconclusive_waits_for_a_person(action: str) -> None:
    fleet = fleet_of()
    rollout, _ = inconclusive_step(fleet)
    async with rollout.start() as handle:
        while handle.status().status is not RolloutStatus.PAUSED:  # noqa: ASYNC110 - polling what the rollout does
            await anyio.sleep(1)
        await anyio.sleep(1000)
        assert handle.status().status is RolloutStatus.PAUSED
        assert fleet.version_counts() == {"v1": 5, "v2": 1}
        getattr(handle, action)()
        result = await handle.wait()
    if action == "abort":
        assert result.status is RolloutStatus.ABORTED
        assert fleet.version_counts() == {"v1": 6}
    else:
        assert result.status is RolloutStatus.SUCCEEDED


@pytest.mark.parametrize(
    ("on_timeout", "status"), [("rollback", "rolled_back"), ("continue", "succeeded")]
)
async def test_step_inconclusive_timeout(on_timeout: str, status: str) -> None:
    fleet = fleet_of()
    rollout, _ = inconclusive_step(fleet, inconclusive_timeout=60, on_timeout=on_timeout)
    result = await rollout.run()
    assert result.status == status
    if on_timeout == "rollback":
        assert "nobody decided within 60" in result.reason


async def test_promote_skips_a_running_step_analysis() -> None:
    fleet = fleet_of()
    rollout, _ = step_rollout(fleet, ErrorRate(0.0), count=100, interval=60)
    async with rollout.start() as handle:
        while handle.status().step is None:  # noqa: ASYNC110 - polling what the rollout does
            await anyio.sleep(1)
        await anyio.sleep(150)
        handle.promote()
        result = await handle.wait()
    assert result.status is RolloutStatus.SUCCEEDED
    assert 2 <= len(result.measurements) <= 4

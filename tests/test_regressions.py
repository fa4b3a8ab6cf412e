"""Regression tests for the nine engine defects of issue 10, on both backends.

Each test is written against the public API only (``rolling``, ``rolling.testing``),
so that it keeps working whatever the engine looks like inside.
"""

from __future__ import annotations

import itertools
import pathlib
from typing import Any

import anyio
import attrs
import pytest

import rolling
from rolling import (
    Advance,
    Batches,
    FailurePolicy,
    InstanceOutcome,
    Phase,
    Readiness,
    RollingUpdate,
    Rollout,
    RolloutStatus,
)
from rolling.testing import EventRecorder, InvariantMonitor, Latency, SimulatedFleet

pytestmark = pytest.mark.anyio

DOCS = pathlib.Path(__file__).parent.parent / "docs"


def _rollout(fleet: SimulatedFleet, **options: Any) -> tuple[Rollout[Any], InvariantMonitor]:
    """A rollout of v2 over ``fleet`` (driver, router and check), with a monitor on it."""
    options.setdefault("readiness", Readiness(check=fleet, period=1, timeout=1, deadline=30))
    rollout: Rollout[Any] = Rollout(fleet, "v2", router=fleet, **options)
    window = rollout.window(fleet.desired)
    monitor = InvariantMonitor(
        fleet, max_unavailable=window.max_unavailable, max_surge=window.max_surge
    )
    return rollout, monitor


async def _cancelled_after(rollout: Rollout[Any], seconds: float) -> rolling.RolloutResult:
    """Start ``rollout``, cancel it after ``seconds``, and return its result."""
    handles: list[rolling.RolloutHandle] = []
    with anyio.move_on_after(seconds):
        async with rollout.start() as handle:
            handles.append(handle)
    return handles[0].result


# -- 1. a consumer that leaves the event stream early ------------------------------------------


async def test_defect_1_leaving_the_event_stream_early() -> None:
    fleet = SimulatedFleet(4, latency=Latency(replace=1))
    rollout, monitor = _rollout(fleet)
    seen: list[rolling.Event] = []
    async with rollout.start() as handle, handle.events() as events:
        async for event in events:
            seen.append(event)
            if isinstance(event, rolling.InstancePhaseChanged) and event.phase is Phase.UPDATED:
                break
    # The consumer went away after the first instance; the rollout went on without it.
    assert isinstance(seen[-1], rolling.InstancePhaseChanged)
    result = handle.result
    assert result.status is RolloutStatus.SUCCEEDED
    assert result.counts == {InstanceOutcome.UPDATED: 4}
    assert set(fleet.attached_ids) == {"i-000", "i-001", "i-002", "i-003"}
    monitor.check_result(result, fleet)


# -- 2 and 3. a driver that breaks its promises --------------------------------------------------


@attrs.frozen
class _Box:
    id: str
    version: str


class _LyingDriver:
    """An in-place driver and router over a dict, whose ``replace`` can be told to lie.

    ``wrong_version`` maps an asked version to the one really installed;
    ``new_id_for`` lists asked versions for which the instance comes back under a
    new id (the old one is gone). Every call is checked against what exists.
    """

    def __init__(
        self,
        size: int,
        *,
        wrong_version: dict[str, str] | None = None,
        new_id_for: frozenset[str] = frozenset(),
    ) -> None:
        self.versions = {f"h-{n}": "v1" for n in range(size)}
        self.attached = set(self.versions)
        self.wrong_version = wrong_version or {}
        self.new_id_for = new_id_for
        self.replaced: list[tuple[str, str]] = []
        self._made = 0

    def _known(self, instance: _Box) -> None:
        if instance.id not in self.versions:
            raise LookupError(f"{instance.id} does not exist")

    async def list_instances(self) -> list[_Box]:
        return [_Box(key, version) for key, version in self.versions.items()]

    async def replace(self, instance: _Box, version: str) -> _Box:
        self._known(instance)
        self.replaced.append((instance.id, version))
        installed = self.wrong_version.get(version, version)
        key = instance.id
        if version in self.new_id_for:
            del self.versions[key]
            self.attached.discard(key)
            key = f"x-{self._made}"
            self._made += 1
        self.versions[key] = installed
        return _Box(key, installed)

    async def detach(self, instance: _Box) -> None:
        self._known(instance)
        self.attached.discard(instance.id)

    async def attach(self, instance: _Box) -> None:
        self._known(instance)
        self.attached.add(instance.id)


async def test_defect_2_replace_returning_the_wrong_version() -> None:
    driver = _LyingDriver(3, wrong_version={"v2": "v1.9"})
    rollout: Rollout[Any] = Rollout(driver, "v2", router=driver, failure=FailurePolicy(retries=1))
    result = await rollout.run()
    assert result.status is RolloutStatus.ROLLED_BACK
    first = result.by_id("h-0")
    assert first.outcome is InstanceOutcome.FAILED
    assert "v2" in first.reason
    assert "v1.9" in first.reason
    # A failed attempt like any other: retried once, then restored to what it ran.
    assert first.attempts == 2
    assert driver.replaced == [("h-0", "v2"), ("h-0", "v2"), ("h-0", "v1")]
    assert first.version == "v1"
    assert first.serving
    assert driver.versions == {"h-0": "v1", "h-1": "v1", "h-2": "v1"}
    assert driver.attached == {"h-0", "h-1", "h-2"}


@pytest.mark.parametrize("max_surge", [0, 1])
async def test_defect_2_launch_returning_the_wrong_version(max_surge: int) -> None:
    fleet = SimulatedFleet(3)

    class WrongLaunch:
        """Elastic only; launching v2 starts v1.9."""

        async def list_instances(self) -> Any:
            return await fleet.list_instances()

        async def launch(self, version: str) -> Any:
            return await fleet.launch("v1.9" if version == "v2" else version)

        async def terminate(self, instance: Any) -> None:
            await fleet.terminate(instance)

    rollout: Rollout[Any] = Rollout(
        WrongLaunch(),
        "v2",
        router=fleet,
        strategy=RollingUpdate(max_unavailable=1 - max_surge, max_surge=max_surge),
    )
    monitor = InvariantMonitor(fleet, max_unavailable=1 - max_surge, max_surge=max_surge)
    result = await rollout.run()
    assert result.status is RolloutStatus.ROLLED_BACK
    first = result.by_id("i-000")
    assert first.outcome is InstanceOutcome.FAILED
    assert "asked v2, got v1.9" in first.reason
    assert fleet.version_counts() == {"v1": 3}
    monitor.check_result(result, fleet)


async def test_defect_3_replace_returning_a_different_id() -> None:
    driver = _LyingDriver(3, new_id_for=frozenset({"v2"}))
    rollout: Rollout[Any] = Rollout(driver, "v2", router=driver)
    result = await rollout.run()
    assert result.status is RolloutStatus.ROLLED_BACK
    first = result.by_id("h-0")
    assert first.outcome is InstanceOutcome.FAILED
    assert "h-0" in first.reason
    assert "x-0" in first.reason
    # The result names what really stands there now, and nothing the driver does not know.
    assert first.current_id == "x-0"
    assert first.version == "v1"
    assert first.serving
    for instance in result.instances:
        assert instance.current_id in driver.versions
    assert driver.versions == {"x-0": "v1", "h-1": "v1", "h-2": "v1"}
    assert driver.attached == {"x-0", "h-1", "h-2"}


# -- 4. a step configuration error ----------------------------------------------------------------


async def test_defect_4_step_configuration_errors_come_early_and_unwrapped() -> None:
    # Counts and percentages that go back: checkable only with the fleet's size.
    fleet = SimulatedFleet(20)
    rollout, _ = _rollout(fleet, steps=[Advance(5), Advance("10%")])
    with pytest.raises(rolling.ConfigError) as caught:
        await rollout.run()
    assert caught.value.field == "Rollout.steps[1]"
    # Nothing but the inventory was asked: no health check, nothing changed.
    assert [call.op for call in fleet.calls] == ["list_instances"]
    # Checkable from the configuration alone: refused at construction.
    with pytest.raises(rolling.ConfigError):
        Rollout(fleet, "v2", steps=[Advance("50%"), Advance("10%")])
    with pytest.raises(rolling.ConfigError):
        Rollout(fleet, "v2", steps=[Advance(10), Advance("100%"), Advance(5)])

    # A driver's own error comes out as itself, never in an ExceptionGroup.
    class Broken:
        async def list_instances(self) -> list[_Box]:
            return [_Box("h-0", "v1"), _Box("h-1", "v1")]

        async def replace(self, instance: _Box, version: str) -> _Box:
            raise AssertionError(f"replace({instance.id}, {version}) should not be called")

    class BoomError(Exception):
        pass

    def explode(event: rolling.Event) -> None:
        if isinstance(event, rolling.RolloutStarted):
            raise BoomError("observer")

    with pytest.raises(BoomError):
        await Rollout(Broken(), "v2", observers=[explode]).run()


# -- 5. no new work after a halt ------------------------------------------------------------------


async def test_defect_5_no_new_unit_starts_after_a_fatal_observer_error() -> None:
    fleet = SimulatedFleet(6, latency=Latency(replace=2, detach=1))
    fleet.set_latency("i-000", replace=1)

    class BoomError(Exception):
        pass

    def explode(event: rolling.Event) -> None:
        if (
            isinstance(event, rolling.InstancePhaseChanged)
            and event.phase is Phase.UPDATED
            and event.instance_id == "i-000"
        ):
            raise BoomError("observer failed")

    rollout, monitor = _rollout(
        fleet, strategy=RollingUpdate(max_unavailable=2), observers=[explode]
    )
    with pytest.raises(BoomError):
        await rollout.run()
    # i-000 and i-001 were in flight when the observer failed; nothing else began.
    touched = {call.instance_id for call in fleet.calls if call.op in {"detach", "replace"}}
    assert touched == {"i-000", "i-001"}
    assert set(fleet.attached_ids) == {i.id for i in fleet.instances}
    monitor.assert_ok()


async def test_an_error_halts_a_rollback_not_yet_begun_and_the_run_finishes_once() -> None:
    # The budget's trigger asks for a rollback; an observer fails before it begins (on the
    # failed instance's own event). The error wins: HALTED, nothing reverted, one finish.
    fleet = SimulatedFleet(4, latency=Latency(replace=1))
    fleet.fault(fleet.instances[1].id, replace_raises=True)
    seen: list[rolling.Event] = []

    class BoomError(Exception):
        pass

    def explode(event: rolling.Event) -> None:
        seen.append(event)
        if isinstance(event, rolling.InstancePhaseChanged) and event.phase is Phase.FAILED:
            raise BoomError("observer failed")

    rollout, monitor = _rollout(
        fleet,
        strategy=RollingUpdate(max_unavailable=2),
        failure=FailurePolicy(max_failed=0, retries=0, restore_failed=False),
        observers=[explode, seen.append],
    )
    with pytest.raises(BoomError):
        await rollout.run()
    finished = [e for e in seen if isinstance(e, rolling.RolloutFinished)]
    (last,) = finished  # one finish (the observer that raised hears no more)
    assert isinstance(seen[-1], rolling.RolloutFinished)
    result = last.result
    assert result.status is RolloutStatus.HALTED
    assert "observer failed" in result.reason
    assert not any(i.outcome is InstanceOutcome.REVERTED for i in result.instances)
    monitor.assert_ok()


# -- 6. readiness period -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("check_takes", "expected_gaps"),
    [(0.5, [2.0, 2.0, 2.0, 2.0]), (3.0, [3.0, 3.0])],
)
async def test_defect_6_readiness_period_is_start_to_start(
    check_takes: float, expected_gaps: list[float]
) -> None:
    fleet = SimulatedFleet(1, latency=Latency(check=check_takes))
    fleet.fault(version="v2", never_ready=True)
    starts: list[float] = []

    async def check(instance: Any) -> rolling.HealthResult:
        if instance.version == "v2":  # the readiness wait (not the survey, not the restore)
            starts.append(anyio.current_time())
        return await fleet.check(instance)

    rollout, _ = _rollout(fleet, readiness=Readiness(check=check, period=2, timeout=5, deadline=9))
    await rollout.run()
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps == pytest.approx(expected_gaps, abs=0.01)


# -- 7. batches with instances already on the target ---------------------------------------------


async def test_defect_7_batches_count_the_whole_fleet() -> None:
    fleet = SimulatedFleet(20)
    for n in range(10):
        await fleet.replace(fleet.get(f"i-{n:03d}"), "v2")
    recorder = EventRecorder()
    rollout, _ = _rollout(fleet, strategy=Batches("30%"), observers=[recorder])
    result = await rollout.run()
    assert result.status is RolloutStatus.SUCCEEDED
    sizes = [len(e.instance_ids) for e in recorder.of_type(rolling.BatchStarted)]
    assert sizes == [6, 4]
    # And the concepts page says so (it used to promise 3, 3, 3 and 1).
    concepts = " ".join((DOCS / "concepts.md").read_text().split())
    assert '`Batches("30%")` batches of 6 and 4' in concepts
    assert "3, 3, 3 and 1" not in concepts


# -- 8. a hung call cut by cancellation ----------------------------------------------------------


async def test_defect_8_cancelled_hung_call_reason_and_restore_time() -> None:
    fleet = SimulatedFleet(3)
    fleet.fault("i-000", version="v2", hang="replace")
    rollout, monitor = _rollout(fleet, cleanup_timeout=30)
    result = await _cancelled_after(rollout, 5)
    assert result.status is RolloutStatus.CANCELLED
    first = result.by_id("i-000")
    assert "did not return within" not in first.reason
    assert "cancelled" in first.reason
    assert "cleanup_timeout=30" in first.reason
    # The restore had time of its own: i-000 is back on v1 and in traffic.
    assert first.version == "v1"
    assert first.serving
    assert fleet.get("i-000").version == "v1"
    assert fleet.is_attached("i-000")
    # Cut about cleanup_timeout after the cancellation, restored at once.
    assert first.finished_at == pytest.approx(35, abs=0.5)
    monitor.check_result(result, fleet)


async def test_defect_8_a_hung_restore_is_bounded_too() -> None:
    # The worst case the docs state: cut after cleanup_timeout, then a restore that hangs
    # as well, cut after cleanup_timeout of its own; the instance is reported out of traffic.
    fleet = SimulatedFleet(3)
    fleet.fault("i-000", hang="replace")
    rollout, monitor = _rollout(fleet, cleanup_timeout=30)
    result = await _cancelled_after(rollout, 5)
    assert result.status is RolloutStatus.CANCELLED
    first = result.by_id("i-000")
    assert first.reason.count("cancelled:") == 2
    assert "restoring v1 failed too" in first.reason
    assert not first.serving
    assert result.finished_at == pytest.approx(65, abs=0.5)
    monitor.check_result(result, fleet)


async def test_defect_8_a_surge_instance_cut_by_cancellation_is_terminated() -> None:
    # With surge the restore is dropping the new instance: it gets its own time as well.
    fleet = SimulatedFleet(3)
    fleet.fault("n-000", hang="attach")
    rollout, monitor = _rollout(
        fleet, strategy=RollingUpdate(max_unavailable=0, max_surge=1), cleanup_timeout=30
    )
    result = await _cancelled_after(rollout, 5)
    first = result.by_id("i-000")
    assert "cancelled: router.attach was cut after cleanup_timeout=30" in first.reason
    assert first.strays == ()
    assert fleet.terminated_ids == ("n-000",)
    assert first.current_id == "i-000"
    assert first.serving
    monitor.check_result(result, fleet)


# -- 9. surge above 100 % -----------------------------------------------------------------------


async def test_defect_9_max_surge_above_100_percent() -> None:
    strategy = RollingUpdate(max_unavailable=0, max_surge="200%")
    assert strategy.resolve(3).max_surge == 6
    assert strategy.resolve(3).ceiling == 9
    fleet = SimulatedFleet(3)
    rollout, monitor = _rollout(fleet, strategy=strategy)
    result = await rollout.run()
    assert result.status is RolloutStatus.SUCCEEDED
    monitor.check_result(result, fleet)
    assert monitor.max_existing == 6  # every replacement at once, old ones still there
    # max_unavailable stays capped at 100 %.
    with pytest.raises(rolling.ConfigError):
        RollingUpdate(max_unavailable="101%")

"""Metric analysis against a real Prometheus, over a real fleet of processes, in real time.

The fleet runs the demo app, which exposes its request counter and latency
histogram on ``/metrics``; Prometheus scrapes every second; a load task sends
requests to every instance all along. Versions carry their behaviour in their
name: ``faulty`` fails 10 % of requests, ``slow`` takes 300 ms.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from helpers import http_get
from prometheus_harness import Prometheus, running_prometheus
from rolling import (
    Analysis,
    ConfigError,
    Metric,
    Readiness,
    RollingError,
    Rollout,
    RolloutStatus,
)
from rolling.analysis import MeasureContext, Outcome
from rolling.checks import HTTPCheck
from rolling.demo.app import command as app_command
from rolling.drivers.process import ProcessDriver, ProcessInstance
from rolling.metrics import MetricError, PrometheusQuery

pytestmark = [pytest.mark.anyio, pytest.mark.real_time]

SIZE = 3
ERROR_RATIO = (
    '(sum(rate(demo_requests_total{version=$target, code="500"}[5s])) or vector(0))'
    " / sum(rate(demo_requests_total{version=$target}[5s]))"
)
P90 = (
    "histogram_quantile(0.9, sum by (le)"
    " (rate(demo_request_duration_seconds_bucket{version=$target}[5s])))"
)


def command(version: str, port: int) -> Sequence[str]:
    return app_command(
        version,
        port,
        startup_delay=0.1,
        latency_ms=300 if "slow" in version else 5,
        error_pct=10 if "faulty" in version else 0,
        python=sys.executable,
    )


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    with running_prometheus(tmp_path_factory.mktemp(f"prometheus-{os.getpid()}")) as server:
        yield server


async def load(driver: ProcessDriver) -> None:
    """Requests to every instance, all the time (errors while one restarts are expected)."""
    while True:
        for instance in await driver.list_instances():
            try:
                await http_get(instance, "/", within=2)
            except (OSError, anyio.BrokenResourceError, AssertionError, IndexError, ValueError):
                await anyio.sleep(0.01)
        await anyio.sleep(0.005)


class Fleet:
    def __init__(self, driver: ProcessDriver, tag: str) -> None:
        self.driver = driver
        self.tag = tag

    def version(self, name: str) -> str:
        return f"{name}.{self.tag}"

    async def versions(self) -> list[str]:
        return sorted(i.version.split(".")[0] for i in await self.driver.list_instances())


@pytest.fixture
async def fleet(prometheus: Prometheus) -> AsyncIterator[Fleet]:
    tag = uuid.uuid4().hex[:8]
    async with ProcessDriver(command, id_prefix=f"prom-{os.getpid()}") as driver:
        instances = await driver.spawn(SIZE, f"v1.{tag}")
        prometheus.scrape([i.port for i in instances])
        async with anyio.create_task_group() as tg:
            tg.start_soon(load, driver)
            # Wait for data: Prometheus 2.x takes some seconds before its first scrape.
            query = PrometheusQuery(prometheus.url, "count(demo_requests_total{version=$target})")
            with anyio.fail_after(30):
                while await query.measure(MeasureContext(target=f"v1.{tag}")) != SIZE:  # noqa: ASYNC110 - polling what the rollout does
                    await anyio.sleep(0.2)
            yield Fleet(driver, tag)
            tg.cancel_scope.cancel()


def rollout(fleet: Fleet, target: str, metric: Metric, **options: Any) -> Rollout[ProcessInstance]:
    return Rollout(
        fleet.driver,
        fleet.version(target),
        readiness=Readiness(check=HTTPCheck("/healthz"), period=0.1, min_ready=3, deadline=20),
        analysis=Analysis(metrics=[metric], **options),
    )


def error_ratio(url: str, **options: Any) -> Metric:
    options.setdefault("interval", 1)
    return Metric(
        name="error-ratio",
        provider=PrometheusQuery(url, ERROR_RATIO, timeout=2),
        failure=lambda v: v > 0.05,
        **options,
    )


async def test_a_faulty_release_is_rolled_back(prometheus: Prometheus, fleet: Fleet) -> None:
    result = await rollout(fleet, "v2-faulty", error_ratio(prometheus.url)).run()
    assert result.status is RolloutStatus.ROLLED_BACK, result.reason
    assert "analysis 'analysis' failed: error-ratio" in result.reason
    assert await fleet.versions() == ["v1"] * SIZE
    # Stopped before the whole fleet was on the new version: the first instance, and the one
    # in flight while Prometheus gathered its first samples of the new version, at most.
    assert 1 <= sum(1 for i in result.instances if i.outcome.value == "reverted") <= 2
    assert any(i.outcome.value == "pending" for i in result.instances)
    assert result.verdict is not None
    assert result.verdict.outcome is Outcome.FAILED
    failed = [m for m in result.measurements if m.outcome is Outcome.FAILED]
    assert isinstance(failed[0].value, float)
    assert failed[0].value > 0.05


async def test_a_good_release_passes(prometheus: Prometheus, fleet: Fleet) -> None:
    result = await rollout(fleet, "v2-good", error_ratio(prometheus.url), bake=2).run()
    assert result.status is RolloutStatus.SUCCEEDED, result.reason
    assert await fleet.versions() == ["v2-good"] * SIZE
    assert result.verdict is not None
    assert result.verdict.outcome is Outcome.SUCCESSFUL
    counted = [m for m in result.measurements if m.outcome is Outcome.SUCCESSFUL]
    assert counted
    assert all(m.value == 0.0 for m in counted)


async def test_a_slow_release_is_rolled_back_on_a_latency_quantile(
    prometheus: Prometheus, fleet: Fleet
) -> None:
    metric = Metric(
        name="p90",
        provider=PrometheusQuery(prometheus.url, P90),
        failure=lambda seconds: seconds > 0.2,
        interval=1,
    )
    result = await rollout(fleet, "v2-slow", metric).run()
    assert result.status is RolloutStatus.ROLLED_BACK, result.reason
    assert "p90" in result.reason
    assert await fleet.versions() == ["v1"] * SIZE
    failed = [m for m in result.measurements if m.outcome is Outcome.FAILED]
    assert isinstance(failed[0].value, float)
    assert failed[0].value > 0.2


async def test_a_rejected_query_stops_the_rollout_before_any_change(
    prometheus: Prometheus, fleet: Fleet
) -> None:
    pids = {i.id: i.pid for i in await fleet.driver.list_instances()}
    metric = Metric(
        name="typo",
        provider=PrometheusQuery(prometheus.url, "sum(rate(demo_requests_total[5s])"),
        failure=lambda v: v > 1,
    )
    with pytest.raises(ConfigError, match="Prometheus rejected"):
        await rollout(fleet, "v2-good", metric).run()
    assert {i.id: i.pid for i in await fleet.driver.list_instances()} == pids


async def test_an_unreachable_prometheus_stops_the_rollout_before_any_change(
    fleet: Fleet,
) -> None:
    from helpers import free_port  # noqa: PLC0415 - only this test needs it

    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(MetricError, match="cannot connect"):
        await rollout(fleet, "v2-good", error_ratio(url)).run()
    assert await fleet.versions() == ["v1"] * SIZE
    assert issubclass(MetricError, RollingError)


async def test_prometheus_stopped_mid_rollout_is_never_a_silent_pass(
    fleet: Fleet, tmp_path: Path
) -> None:
    with running_prometheus(tmp_path / f"prom-{os.getpid()}") as own:
        own.scrape([i.port for i in await fleet.driver.list_instances()])
        metric = error_ratio(own.url, consecutive_error_limit=1)
        async with rollout(fleet, "v2-good", metric).start() as handle:
            while not (await fleet.versions()).count("v2-good"):  # noqa: ASYNC110 - polling what the rollout does
                await anyio.sleep(0.05)
            await anyio.to_thread.run_sync(own.stop)
            result = await handle.wait()
    assert result.status is RolloutStatus.ROLLED_BACK, result.reason
    assert "2 errors in a row" in result.reason
    assert await fleet.versions() == ["v1"] * SIZE
    errors = [m for m in result.measurements if m.outcome is Outcome.ERROR]
    assert len(errors) == 2

"""Compare: the decision on synthetic samples, then real demo-app traffic (real time).

The unit tests drive :meth:`Compare.judge` and :meth:`Compare.worse` with
made-up observations on each side of ``alpha`` and of ``min_effect``; the
integration test scrapes real demo-app processes on v1 and v2 under load.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import anyio
import pytest

from helpers import http_get, wait_healthy
from rolling import ConfigError, Metric
from rolling.analysis import MeasureContext, Value
from rolling.demo.app import command as app_command
from rolling.drivers.process import ProcessDriver
from rolling.metrics import Compare, MetricError
from rolling.metrics._compare import EFFECT, NEW_SAMPLES, P_VALUE, hodges_lehmann

BASELINE = [0.0, 0.01, 0.0, 0.02, 0.0, 0.01, 0.0, 0.0, 0.01, 0.0]


def errors(labels: Mapping[str, str]) -> bool:
    return labels["code"] >= "500"


def stat(value: Value | None, key: Any) -> float:
    assert isinstance(value, dict)
    return float(value[key])


def test_a_clearly_worse_canary_fails() -> None:
    compare = Compare("x_total", errors=errors, min_effect=0.02)
    value = compare.judge([0.1, 0.12, 0.09, 0.11, 0.1, 0.08, 0.1, 0.13, 0.1, 0.09], BASELINE)
    assert stat(value, P_VALUE) < 0.001
    assert stat(value, EFFECT) == pytest.approx(0.095, abs=0.01)
    assert stat(value, NEW_SAMPLES) == 10
    assert compare.worse(value)  # type: ignore[arg-type]


def test_the_same_distribution_passes() -> None:
    compare = Compare("x_total", errors=errors)
    value = compare.judge(list(reversed(BASELINE)), BASELINE)
    assert stat(value, P_VALUE) > 0.3
    assert not compare.worse(value)  # type: ignore[arg-type]
    # No variation at all (a quiet service: no errors anywhere): p = 1, not NaN.
    assert stat(compare.judge([0.0] * 5, [0.0] * 5), P_VALUE) == 1.0


def test_alpha_both_sides() -> None:
    # A small overlap: p between 0.01 and 0.05.
    new = [0.03, 0.05, 0.02, 0.04, 0.01, 0.06]
    old = [0.0, 0.02, 0.01, 0.03, 0.0, 0.01]
    loose = Compare("x_total", errors=errors, alpha=0.05)
    strict = Compare("x_total", errors=errors, alpha=0.01)
    value = loose.judge(new, old)
    p = stat(value, P_VALUE)
    assert 0.01 < p < 0.05
    assert loose.worse(value)  # type: ignore[arg-type]
    assert not strict.worse(value)  # type: ignore[arg-type]


def test_min_effect_both_sides() -> None:
    # Certain, but tiny: 0.001 more errors everywhere.
    new = [v + 0.001 for v in (0.0, 0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.007)]
    old = [0.0, 0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.007]
    new = [v + 0.0099 for v in old]
    value = Compare("x_total").judge(new, old)
    assert stat(value, EFFECT) == pytest.approx(0.0099)
    assert Compare("x_total", min_effect=0.0099).worse(value)  # type: ignore[arg-type]
    assert not Compare("x_total", min_effect=0.01).worse(value)  # type: ignore[arg-type]
    assert stat(value, P_VALUE) < 0.05  # the test alone would have failed it


def test_lower_is_worse() -> None:
    compare = Compare("x_total", higher_is_worse=False, min_effect=1)
    value = compare.judge([50.0, 52, 48, 51, 49], [100.0, 101, 99, 98, 102])
    assert stat(value, EFFECT) == pytest.approx(50)
    assert compare.worse(value)  # type: ignore[arg-type]
    assert not Compare("x_total", min_effect=1).worse(
        Compare("x_total").judge([50.0, 52, 48, 51, 49], [100.0, 101, 99, 98, 102])  # type: ignore[arg-type]
    )


def test_too_few_samples_is_no_data() -> None:
    compare = Compare("x_total", min_samples=5)
    assert compare.judge([0.1] * 4, [0.0] * 10) is None
    assert compare.judge([0.1] * 10, [0.0] * 4) is None
    with pytest.raises(TypeError):
        compare.worse(0.5)


def test_hodges_lehmann() -> None:
    assert hodges_lehmann([3.0], [1.0, 2.0]) == 1.5
    assert hodges_lehmann([0.0, 10.0], [0.0]) == 5.0


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"alpha": 0}, "Compare.alpha"),
        ({"alpha": 1.5}, "Compare.alpha"),
        ({"alpha": True}, "Compare.alpha"),
        ({"min_effect": -0.1}, "Compare.min_effect"),
        ({"min_effect": float("nan")}, "Compare.min_effect"),
        ({"window": 0}, "window"),
        ({"min_samples": 2}, "min_samples"),
        ({"quantile": 0.5, "errors": errors}, "Scrape.errors"),
    ],
)
def test_compare_config(options: dict[str, Any], field: str) -> None:
    arguments: dict[str, Any] = {"metric": "x_total", **options}
    with pytest.raises(ConfigError, match=field):
        Compare(**arguments)


def test_compare_plugs_into_a_metric() -> None:
    compare = Compare("x_total", errors=errors)
    metric = Metric(name="vs-baseline", provider=compare, failure=compare.worse)
    assert metric.provider is compare


# ------------------------------------------------------------------ real traffic


def command(version: str, port: int) -> list[str]:
    return app_command(
        version, port, latency_ms=1, error_pct=10 if version == "faulty" else 0,
        python=sys.executable,
    )  # fmt: skip


async def judge_under_load(target: str) -> tuple[bool, Value]:
    """Two v1 instances and two ``target`` ones under the same load; the last measurement."""
    compare = Compare("demo_requests_total", errors=errors, min_effect=0.02, window=20)
    async with ProcessDriver(command) as driver:
        old = await driver.spawn(2, "v1")
        new = await driver.spawn(2, target)
        await wait_healthy(old + new)
        context = MeasureContext(
            target=target, old_versions=("v1",), new_instances=tuple(new), old_instances=tuple(old)
        )
        value: Value | None = None
        async with anyio.create_task_group() as tg:

            async def load(instance: Any) -> None:
                while True:
                    await http_get(instance, "/")

            for instance in old + new:
                tg.start_soon(load, instance)
            for _ in range(12):
                value = await compare.measure(context)
                await anyio.sleep(0.25)
            tg.cancel_scope.cancel()
        assert value is not None
        assert isinstance(value, dict)
        return compare.worse(value), value


@pytest.mark.anyio
@pytest.mark.real_time
async def test_a_good_release_passes_on_real_traffic() -> None:
    worse, value = await judge_under_load("v2")
    assert not worse, value
    assert stat(value, NEW_SAMPLES) >= 20


@pytest.mark.anyio
@pytest.mark.real_time
async def test_a_ten_percent_faulty_release_fails_on_real_traffic() -> None:
    worse, value = await judge_under_load("faulty")
    assert worse, value
    assert stat(value, P_VALUE) < 0.001
    assert 0.05 < stat(value, EFFECT) < 0.15


@pytest.mark.anyio
@pytest.mark.real_time
async def test_a_side_that_cannot_be_scraped_is_an_error() -> None:
    class Down:
        id = "down"
        version = "v1"
        host = "127.0.0.1"
        port = 9  # discard: nothing listens there

    context = MeasureContext(target="v2", old_instances=(Down(),))
    with pytest.raises(MetricError, match="old version could be scraped: down"):
        await Compare("x_total").measure(context)
    # No instance on either side: nothing to compare yet.
    assert await Compare("x_total").measure(MeasureContext(target="v2")) is None

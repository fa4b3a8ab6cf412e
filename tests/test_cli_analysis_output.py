"""Analysis events in `rolling run --json` lines and on the timeline picture."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

import rolling
from rolling.analysis import MeasureContext
from rolling.cli._output import step_json, to_json
from rolling.cli._timeline import render
from rolling.testing import Latency, SimulatedFleet

pytestmark = pytest.mark.anyio


async def _error_ratio(context: MeasureContext) -> float | None:
    return 0.10 if context.new_instances else None


async def test_a_verdict_is_a_json_object_and_a_mark_on_the_timeline() -> None:
    fleet = SimulatedFleet(4, latency=Latency(replace=20))
    metric = rolling.Metric(
        name="error-ratio", provider=_error_ratio, failure=lambda r: r > 0.01, interval=10
    )
    lines: list[dict[str, Any]] = []
    rollout = rolling.Rollout(
        fleet,
        "v2",
        router=fleet,
        readiness=rolling.Readiness(check=fleet),
        analysis=rolling.Analysis(metrics=[metric]),
        observers=[lambda event: lines.append(to_json(event))],
    )
    result = await rollout.run()
    assert result.status is rolling.RolloutStatus.ROLLED_BACK
    # Every line is plain JSON (a measurement's or verdict's fields, not their repr).
    decoded = [json.loads(json.dumps(line)) for line in lines]
    verdicts = [line for line in decoded if line["event"] == "analysis_decided"]
    assert verdicts
    assert verdicts[0]["verdict"]["outcome"] == "failed"
    assert verdicts[0]["verdict"]["metrics"][0]["metric"] == "error-ratio"
    measured = [line for line in decoded if line["event"] == "measurement_taken"]
    assert measured
    assert measured[0]["measurement"]["value"] == pytest.approx(0.10)
    page = render(decoded, title="analysis")
    assert re.search(r">analysis [^<]*: failed<", page), "the verdict is marked on the timeline"


def test_an_analyze_step_is_named_in_json() -> None:
    metric = rolling.Metric(name="p90", provider=_error_ratio, failure=lambda v: v > 1)
    step = rolling.Analyze(rolling.Analysis(metrics=[metric]))
    assert step_json(step) == {"type": "analyze", "metrics": ["p90"]}

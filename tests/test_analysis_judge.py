"""Metric analysis, pure logic: configuration, the judge's rules, PromQL quoting."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rolling import Analysis, Analyze, ConfigError, Metric
from rolling._judge import AnalysisJudge, MetricJudge, normalise
from rolling.analysis import (
    MeasureContext,
    Measurement,
    OnNoData,
    Outcome,
    Verdict,
    fill_template,
    promql_regex,
    promql_string,
)


async def nothing(_context: MeasureContext) -> float | None:
    return None


def above(limit: float) -> Callable[[float], bool]:
    return lambda value: value > limit


def below(limit: float) -> Callable[[float], bool]:
    return lambda value: value < limit


def metric(**options: Any) -> Metric:
    options.setdefault("failure", above(0.05))
    return Metric(name=options.pop("name", "m"), provider=nothing, **options)


def state(judge: MetricJudge | AnalysisJudge) -> Outcome:
    """The judge's outcome now (a call, so type checkers do not keep an earlier narrowing)."""
    return judge.outcome


def feed(judge: MetricJudge, *answers: object) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for answer in answers:
        error = answer if isinstance(answer, str) else ""
        outcomes.append(judge.judge(None if error else answer, error, 0.0).outcome)
    return outcomes


# ------------------------------------------------------------------ measurement rules


@pytest.mark.parametrize(
    ("success", "failure", "value", "expected"),
    [
        (None, True, 1.0, Outcome.FAILED),
        (None, True, 0.0, Outcome.SUCCESSFUL),
        (True, None, 0.0, Outcome.SUCCESSFUL),
        (True, None, 1.0, Outcome.FAILED),
        (True, True, 0.0, Outcome.SUCCESSFUL),  # only success holds
        (True, True, 1.0, Outcome.FAILED),  # failure is asked first
        (True, True, 0.5, Outcome.INCONCLUSIVE),  # neither holds
    ],
)
def test_argo_condition_rules(
    success: bool | None, failure: bool | None, value: float, expected: Outcome
) -> None:
    m = Metric(
        name="m",
        provider=nothing,
        success=(lambda v: v < 0.1) if success else None,
        failure=(lambda v: v > 0.9) if failure else None,
    )
    assert feed(MetricJudge(m, background=True), value) == [expected]


def test_a_condition_that_raises_is_an_error() -> None:
    m = Metric(name="m", provider=nothing, failure=lambda v: v["missing"] > 0)
    judge = MetricJudge(m, background=True)
    measurement = judge.judge(1.0, "", 0.0)
    assert measurement.outcome is Outcome.ERROR
    assert "raised TypeError" in measurement.reason


@pytest.mark.parametrize(
    ("answer", "value"),
    [
        (None, None),
        (math.nan, None),
        ({}, None),
        ({(("a", "1"),): math.nan}, None),
        (3, 3.0),
        ({(("a", "1"),): 2, (("a", "2"),): math.nan}, {(("a", "1"),): 2.0}),
    ],
)
def test_no_data_shapes(answer: object, value: object) -> None:
    assert normalise(answer) == (value, "")


@pytest.mark.parametrize("answer", [True, "0.1", [1.0], {"a": "x"}])
def test_answers_that_are_not_numbers_are_errors(answer: object) -> None:
    value, reason = normalise(answer)
    assert value is None
    assert "not a number" in reason


# ------------------------------------------------------------------ limits: strictly more than


@pytest.mark.parametrize("limit", [0, 1, 3])
def test_failure_limit_is_strictly_more_than(limit: int) -> None:
    judge = MetricJudge(metric(failure_limit=limit), background=True)
    feed(judge, *[1.0] * limit)
    assert state(judge) is Outcome.RUNNING  # exactly at the limit: still running
    feed(judge, 1.0)
    assert state(judge) is Outcome.FAILED  # one more: failed
    assert f"failure_limit={limit}" in judge.reason


@pytest.mark.parametrize("limit", [0, 2])
def test_inconclusive_limit_is_strictly_more_than(limit: int) -> None:
    m = metric(success=below(0.01), inconclusive_limit=limit)
    judge = MetricJudge(m, background=True)
    feed(judge, *[0.03] * limit)
    assert state(judge) is Outcome.RUNNING
    feed(judge, 0.03)
    assert state(judge) is Outcome.INCONCLUSIVE


def test_consecutive_errors_strictly_more_than_and_reset_by_a_measurement() -> None:
    judge = MetricJudge(metric(consecutive_error_limit=2), background=True)
    feed(judge, "boom", "boom", 0.0, "boom", "boom")
    assert state(judge) is Outcome.RUNNING  # never 3 in a row
    feed(judge, "boom")
    assert state(judge) is Outcome.FAILED
    assert "3 errors in a row" in judge.reason
    assert judge.errors == 5


def test_count_ends_successfully_within_the_limits() -> None:
    judge = MetricJudge(metric(count=3, failure_limit=1), background=False)
    feed(judge, 1.0, 0.0)
    assert state(judge) is Outcome.RUNNING
    feed(judge, 0.0)
    assert state(judge) is Outcome.SUCCESSFUL


def test_a_step_metric_without_count_measures_once() -> None:
    judge = MetricJudge(metric(), background=False)
    feed(judge, 0.0)
    assert state(judge) is Outcome.SUCCESSFUL


# ------------------------------------------------------------------ no data


def test_no_data_waits_within_a_bound_then_is_inconclusive() -> None:
    judge = MetricJudge(metric(no_data_limit=2), background=True)
    assert feed(judge, None, None) == [Outcome.NO_DATA, Outcome.NO_DATA]
    assert judge.measured == 0
    assert feed(judge, None) == [Outcome.INCONCLUSIVE]
    assert state(judge) is Outcome.INCONCLUSIVE


def test_data_ends_a_run_of_waits() -> None:
    judge = MetricJudge(metric(no_data_limit=1), background=True)
    assert feed(judge, None, 0.0, None) == [Outcome.NO_DATA, Outcome.SUCCESSFUL, Outcome.NO_DATA]
    assert state(judge) is Outcome.RUNNING


@pytest.mark.parametrize(
    ("choice", "outcome"),
    [(OnNoData.FAIL, Outcome.FAILED), (OnNoData.INCONCLUSIVE, Outcome.INCONCLUSIVE)],
)
def test_no_data_choices(choice: OnNoData, outcome: Outcome) -> None:
    judge = MetricJudge(metric(on_no_data=choice), background=True)
    assert feed(judge, None) == [outcome]
    assert state(judge) is outcome


def test_a_background_metric_with_no_data_is_never_a_silent_pass() -> None:
    judge = AnalysisJudge(Analysis(metrics=[metric()]), background=True)
    judge.judge(0, None, "", 0.0)
    judge.close()
    assert state(judge) is Outcome.INCONCLUSIVE
    assert "no measurement with data" in judge.verdict().reason


# ------------------------------------------------------------------ the analysis's verdict


def test_combined_verdict_and_dry_run() -> None:
    analysis = Analysis(
        metrics=[
            metric(name="a", count=1),
            metric(name="b", count=1),
            metric(name="dry", dry_run=True),
        ]
    )
    judge = AnalysisJudge(analysis, background=False)
    judge.judge(2, 1.0, "", 0.0)  # the dry run fails: it never decides
    assert state(judge) is Outcome.RUNNING
    judge.judge(0, 0.0, "", 1.0)
    assert state(judge) is Outcome.RUNNING
    judge.judge(1, 0.0, "", 2.0)
    assert state(judge) is Outcome.SUCCESSFUL
    verdict = judge.verdict()
    assert [m.outcome for m in verdict.metrics] == [Outcome.SUCCESSFUL] * 2 + [Outcome.FAILED]
    assert verdict.to_dict()["outcome"] == "successful"


def test_failed_beats_inconclusive() -> None:
    analysis = Analysis(metrics=[metric(name="a", success=below(0.01)), metric(name="b")])
    judge = AnalysisJudge(analysis, background=True)
    judge.judge(0, 0.03, "", 0.0)
    assert state(judge) is Outcome.INCONCLUSIVE
    judge.judge(1, 1.0, "", 0.0)
    assert state(judge) is Outcome.FAILED
    assert judge.verdict().reason.startswith("b:")


@given(st.lists(st.sampled_from([0.0, 1.0, 0.5, None, "err"]), max_size=30), st.integers(0, 3))
def test_a_metric_is_decided_exactly_by_its_limits(answers: list[Any], limit: int) -> None:
    m = metric(success=below(0.1), failure_limit=limit, inconclusive_limit=limit)
    judge = MetricJudge(m, background=True)
    counted = 0
    for answer in answers:
        if judge.done:
            break
        # Neither a no-data wait nor an error is a counted measurement.
        counted += feed(judge, answer)[0] not in {Outcome.NO_DATA, Outcome.ERROR}
    assert judge.measured == counted
    over = judge.failed > limit or judge.errors_in_row > m.consecutive_error_limit
    assert (state(judge) is Outcome.FAILED) == over
    if state(judge) is Outcome.INCONCLUSIVE:
        assert judge.inconclusive > limit
    if state(judge) is Outcome.RUNNING:
        assert judge.inconclusive <= limit


# ------------------------------------------------------------------ config


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"failure": None}, "Metric.success"),
        ({"interval": 0}, "Metric.interval"),
        ({"count": 0}, "Metric.count"),
        ({"failure_limit": -1}, "Metric.failure_limit"),
        ({"on_no_data": "pass"}, "Metric.on_no_data"),
        ({"name": ""}, "Metric.name"),
        ({"provider": 3}, "Metric.provider"),
    ],
)
def test_metric_config_errors(options: dict[str, Any], field: str) -> None:
    options = {"name": "m", "provider": nothing, "failure": above(1), **options}
    with pytest.raises(ConfigError, match=re.escape(field)):
        Metric(**options)


def test_analysis_config_errors() -> None:
    with pytest.raises(ConfigError, match="is empty"):
        Analysis(metrics=[])
    with pytest.raises(ConfigError, match="used twice"):
        Analysis(metrics=[metric(), metric()])
    with pytest.raises(ConfigError, match="single Metric"):
        Analysis(metrics=metric())
    with pytest.raises(ConfigError, match=r"Analyze\.analysis"):
        Analyze(metric())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"Analyze\.on_timeout"):
        Analyze(Analysis(metrics=[metric()]), on_timeout="maybe")


# ------------------------------------------------------------------ templates and quoting


class _Inst:
    def __init__(self, id_: str, host: str, port: int) -> None:
        self.id, self.version, self.host, self.port = id_, "v2", host, port


def test_promql_quoting() -> None:
    assert promql_string('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'
    assert promql_regex(["10.0.0.1:80", "a|b"]) == '"10\\\\.0\\\\.0\\\\.1:80|a\\\\|b"'
    assert promql_regex([]) == '""'


def test_fill_template() -> None:
    context = MeasureContext(
        target='v2"x',
        old_versions=("v1",),
        new_instances=(_Inst("i-1", "127.0.0.1", 8001), _Inst("i-2", "::1", 8002)),
        rollout_id="r",
    )
    query = "sum(rate(x{instance=~$new_addresses, v=$target, id=~$new_ids}[1m]))"
    filled = fill_template(query, context)
    assert filled == (
        'sum(rate(x{instance=~"127\\\\.0\\\\.0\\\\.1:8001|\\\\[::1\\\\]:8002",'
        ' v="v2\\"x", id=~"i\\\\-1|i\\\\-2"}[1m]))'
    )


def test_measurement_to_dict() -> None:
    m = Measurement(metric="m", outcome=Outcome.FAILED, value={(("a", "1"),): 2.0})
    assert m.to_dict()["value"] == [{"labels": {"a": "1"}, "value": 2.0}]
    assert (
        Measurement(metric="m", outcome=Outcome.FAILED, value=math.inf).to_dict()["value"] == "inf"
    )
    assert isinstance(
        Verdict(analysis="a", outcome=Outcome.RUNNING, reason="", metrics=()), Verdict
    )


def test_an_error_is_measured_again_and_never_passes_a_metric() -> None:
    # A step's metric measures once; an error is not that measurement (a metric server
    # that is down must not pass a release), and the fifth error in a row fails it.
    judge = MetricJudge(metric(success=below(0.1)), background=False)
    assert feed(judge, "down", "down", "down", "down") == [Outcome.ERROR] * 4
    assert state(judge) is Outcome.RUNNING
    assert feed(judge, "down") == [Outcome.ERROR]
    assert state(judge) is Outcome.FAILED
    assert judge.verdict().measured == 0
    assert judge.verdict().errors == 5
    recovered = MetricJudge(metric(success=below(0.1)), background=False)
    feed(recovered, "down", 0.0)
    assert state(recovered) is Outcome.SUCCESSFUL
    assert recovered.verdict().measured == 1
    background = MetricJudge(metric(success=below(0.1)), background=True)
    feed(background, "down")
    background.close()
    assert state(background) is Outcome.INCONCLUSIVE

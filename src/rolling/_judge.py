"""Judging measurements: from a provider's answer to a metric's and an analysis's verdict.

Sans-io like the machine (:mod:`rolling._machine`), which owns one judge per
running analysis; the runner takes measurements and hands each answer to it.

Rules, in the order a measurement meets them:

1. **Value.** A provider returns a number or a mapping of label set to
   number (a vector). None, NaN, and a vector that is empty once its NaN
   entries are dropped are *no data*. A provider that raises or outlasts the
   metric's ``timeout``, or returns anything else, gives an *error*.
2. **No data** counts as the metric's ``on_no_data`` says: ``fail`` -> a
   failed measurement; ``inconclusive`` -> an inconclusive one; ``wait``
   (the default) -> not counted at all, measured again after ``interval``,
   until ``no_data_limit`` waits in a row have passed; the next no-data
   measurement counts as inconclusive. Data ends the run of waits.
3. **Conditions** (Argo Rollouts' rules): ``failure`` is asked first; true
   -> failed. Then ``success``: true -> successful. When both are given and
   neither held -> inconclusive; with only ``success``, false -> failed;
   with only ``failure``, false -> successful. A condition that raises gives
   an error.
4. **Limits** are *strictly more than*, as in Argo's code (its docs say
   "at"): the metric **fails** when failed measurements > ``failure_limit``,
   or errors in a row > ``consecutive_error_limit`` (a measurement that is
   not an error, a no-data wait included, ends the row); it is
   **inconclusive** when inconclusive measurements > ``inconclusive_limit``.
   Failure is checked first. The defaults (0, 4, 0) mean: the first failed
   or inconclusive measurement decides, the fifth error in a row fails.
5. **End of a metric.** Once failed or inconclusive it measures no more.
   With ``count``, it is successful after ``count`` counted measurements
   within the limits. Without (a background analysis) it runs until the
   analysis ends: then successful if it counted a measurement, inconclusive
   if none ("no data" is never a silent pass). An error is never counted:
   it is measured again after ``interval``, so a provider that only fails
   ends failed at its error limit, never successful.
6. **Analysis verdict.** Dry-run metrics never decide. Failed if any
   deciding metric failed; else inconclusive if any is; else successful
   once every deciding metric is; else running. An analysis of dry runs
   only is successful when they all ended.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ._analysis import (
    Analysis,
    Measurement,
    Metric,
    MetricVerdict,
    OnNoData,
    Outcome,
    Value,
    Verdict,
)

__all__ = ["AnalysisJudge", "MetricJudge", "normalise"]


def normalise(answer: object) -> tuple[Value | None, str]:
    """The value of a provider's ``answer`` (None for no data), or an error reason.

    Returns:
        ``(value, "")``; ``(None, "")`` for no data; ``(None, reason)`` for an
        answer that is not a number or a vector.
    """
    if answer is None:
        return None, ""
    if isinstance(answer, bool):
        return None, f"the provider returned {answer!r}, not a number"
    if isinstance(answer, int | float):
        value = float(answer)
        return (None, "") if math.isnan(value) else (value, "")
    if isinstance(answer, Mapping):
        vector: dict[Any, float] = {}
        for key, item in answer.items():  # pyright: ignore[reportUnknownVariableType]
            if isinstance(item, bool) or not isinstance(item, int | float):
                return None, f"the provider returned a vector with {item!r}, not a number"
            if not math.isnan(item):
                vector[key] = float(item)
        return (vector or None), ""
    return None, f"the provider returned {type(answer).__name__}, not a number or a mapping"


class MetricJudge:
    """One metric's measurements so far, and its verdict."""

    def __init__(self, metric: Metric, *, background: bool) -> None:
        self.metric = metric
        self.count = metric.count if metric.count is not None or background else 1
        self.measured = 0
        self.failed = 0
        self.inconclusive = 0
        self.errors = 0
        self.errors_in_row = 0
        self.waits_in_row = 0
        self.outcome = Outcome.RUNNING
        self.reason = ""

    @property
    def done(self) -> bool:
        """Whether it measures no more."""
        return self.outcome is not Outcome.RUNNING

    def judge(self, answer: object, error: str, at: float) -> Measurement:
        """Judge one answer (``error`` non-empty: the provider failed) and update the verdict."""
        metric = self.metric
        value: Value | None = None
        reason = error
        if not error:
            value, reason = normalise(answer)
        if reason:
            outcome = Outcome.ERROR
        elif value is None:
            outcome, reason = self._no_data()
        else:
            outcome, reason = _condition(metric, value)
        self._count(outcome, reason)
        return Measurement(
            metric=metric.name,
            outcome=outcome,
            value=value,
            reason=reason,
            at=at,
            dry_run=metric.dry_run,
        )

    def _no_data(self) -> tuple[Outcome, str]:
        metric = self.metric
        if metric.on_no_data is OnNoData.FAIL:
            return Outcome.FAILED, "no data (on_no_data=fail)"
        if metric.on_no_data is OnNoData.INCONCLUSIVE:
            return Outcome.INCONCLUSIVE, "no data (on_no_data=inconclusive)"
        if self.waits_in_row < metric.no_data_limit:
            return Outcome.NO_DATA, "no data yet"
        return Outcome.INCONCLUSIVE, f"no data after {metric.no_data_limit} waits"

    def _count(self, outcome: Outcome, reason: str) -> None:
        metric = self.metric
        if outcome is Outcome.NO_DATA:
            self.waits_in_row += 1
            self.errors_in_row = 0
            return
        self.waits_in_row = 0
        if outcome is Outcome.ERROR:
            self.errors += 1
            self.errors_in_row += 1
        else:
            self.measured += 1
            self.errors_in_row = 0
        if outcome is Outcome.FAILED:
            self.failed += 1
        elif outcome is Outcome.INCONCLUSIVE:
            self.inconclusive += 1
        if self.failed > metric.failure_limit:
            self._end(
                Outcome.FAILED,
                f"{self.failed} failed measurement(s), over failure_limit={metric.failure_limit}"
                f"; last: {reason}",
            )
        elif self.errors_in_row > metric.consecutive_error_limit:
            self._end(
                Outcome.FAILED,
                f"{self.errors_in_row} errors in a row, over"
                f" consecutive_error_limit={metric.consecutive_error_limit}; last: {reason}",
            )
        elif self.inconclusive > metric.inconclusive_limit:
            self._end(
                Outcome.INCONCLUSIVE,
                f"{self.inconclusive} inconclusive measurement(s), over"
                f" inconclusive_limit={metric.inconclusive_limit}; last: {reason}",
            )
        elif self.count is not None and self.measured >= self.count:
            self._end(Outcome.SUCCESSFUL, f"{self.measured} measurement(s) within the limits")

    def _end(self, outcome: Outcome, reason: str) -> None:
        self.outcome = outcome
        self.reason = f"{self.metric.name}: {reason}"

    def close(self) -> None:
        """The analysis ends: a metric still running is decided now (rule 5)."""
        if self.done:
            return
        if self.measured:
            self._end(Outcome.SUCCESSFUL, f"{self.measured} measurement(s) within the limits")
        else:
            self._end(Outcome.INCONCLUSIVE, "no measurement with data before the analysis ended")

    def verdict(self) -> MetricVerdict:
        """Where the metric stands."""
        return MetricVerdict(
            metric=self.metric.name,
            outcome=self.outcome,
            reason=self.reason,
            measured=self.measured,
            failed=self.failed,
            inconclusive=self.inconclusive,
            errors=self.errors,
            dry_run=self.metric.dry_run,
        )


def _condition(metric: Metric, value: Value) -> tuple[Outcome, str]:
    try:
        if metric.failure is not None and metric.failure(value):
            return Outcome.FAILED, f"failure condition held for {_show(value)}"
        if metric.success is not None:
            if metric.success(value):
                return Outcome.SUCCESSFUL, ""
            if metric.failure is None:
                return Outcome.FAILED, f"success condition did not hold for {_show(value)}"
            return Outcome.INCONCLUSIVE, f"neither condition held for {_show(value)}"
    except Exception as exc:  # noqa: BLE001 - a user's condition that raises is an error measurement
        return Outcome.ERROR, f"a condition raised {type(exc).__name__}: {exc}"
    return Outcome.SUCCESSFUL, ""


def _show(value: Value) -> str:
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_labels(k)}: {v:.6g}" for k, v in value.items()) + "}"
    return f"{value:.6g}"


def _labels(key: object) -> str:
    if isinstance(key, tuple):
        pairs = [
            f"{pair[0]}={pair[1]}"
            for pair in key  # pyright: ignore[reportUnknownVariableType]
            if isinstance(pair, tuple) and len(pair) == 2  # pyright: ignore[reportUnknownArgumentType]  # noqa: PLR2004 - a (name, value) pair
        ]
        return "{" + ",".join(pairs) + "}"
    return str(key)


class AnalysisJudge:
    """The judges of one analysis's metrics, and its combined verdict."""

    def __init__(self, analysis: Analysis, *, background: bool) -> None:
        self.analysis = analysis
        self.background = background
        self.metrics = [MetricJudge(m, background=background) for m in analysis.metrics]
        self.measurements: list[Measurement] = []
        self.closed = False

    def judge(self, index: int, answer: object, error: str, at: float) -> Measurement:
        """Judge one answer for the ``index``-th metric."""
        measurement = self.metrics[index].judge(answer, error, at)
        self.measurements.append(measurement)
        return measurement

    def close(self) -> None:
        """The analysis ends: decide every metric still running."""
        self.closed = True
        for judge in self.metrics:
            judge.close()

    @property
    def outcome(self) -> Outcome:
        """The combined outcome (rule 6)."""
        deciding = [j for j in self.metrics if not j.metric.dry_run]
        if any(j.outcome is Outcome.FAILED for j in deciding):
            return Outcome.FAILED
        if any(j.outcome is Outcome.INCONCLUSIVE for j in deciding):
            return Outcome.INCONCLUSIVE
        if all(j.done for j in deciding or self.metrics):
            return Outcome.SUCCESSFUL
        return Outcome.RUNNING

    @property
    def done(self) -> bool:
        """Whether no metric needs another measurement."""
        return all(j.done for j in self.metrics)

    @property
    def settled(self) -> bool:
        """Whether every deciding metric is decided or has counted a measurement."""
        return all(j.done or j.measured > 0 for j in self.metrics if not j.metric.dry_run)

    def verdict(self) -> Verdict:
        """The combined verdict, with the deciding reason."""
        outcome = self.outcome
        reason = ""
        for judge in self.metrics:
            if not judge.metric.dry_run and judge.outcome is outcome and judge.reason:
                reason = judge.reason
                break
        return Verdict(
            analysis=self.analysis.name,
            outcome=outcome,
            reason=reason,
            metrics=tuple(j.verdict() for j in self.metrics),
            background=self.background,
        )

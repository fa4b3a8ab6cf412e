"""Metric analysis: watch a release's metrics while it rolls out, and roll back on its own.

Configure :class:`Metric` objects (a provider, conditions, limits), group
them in an :class:`Analysis`, and either gate a step on it
(:class:`Analyze`) or run it in the background for the whole rollout
(``Rollout(..., analysis=...)``). Providers implement
:class:`rolling.typing.MetricProvider`; the built-in ones are in
:mod:`rolling.metrics`.

In short: a metric fails when its failed measurements are *strictly more*
than ``failure_limit`` (as Argo Rollouts' code has it), or its errors in a
row strictly more than ``consecutive_error_limit``; it is inconclusive when
its inconclusive measurements are strictly more than ``inconclusive_limit``.
No data is its own outcome (``on_no_data``), never a silent pass. The
"Canary analysis" guide has every rule, in a table beside Argo Rollouts'
and Flagger's.

.. versionadded:: 0.3.0
"""

from __future__ import annotations

from ._analysis import (
    Analysis,
    Condition,
    LabelSet,
    MeasureContext,
    Measurement,
    Metric,
    MetricProviderFunction,
    MetricVerdict,
    OnNoData,
    Outcome,
    Value,
    Verdict,
    check_template,
    fill_template,
    promql_regex,
    promql_string,
)
from ._steps import Analyze, InconclusiveAction

__all__ = [
    "Analysis",
    "Analyze",
    "Condition",
    "InconclusiveAction",
    "LabelSet",
    "MeasureContext",
    "Measurement",
    "Metric",
    "MetricProviderFunction",
    "MetricVerdict",
    "OnNoData",
    "Outcome",
    "Value",
    "Verdict",
    "check_template",
    "fill_template",
    "promql_regex",
    "promql_string",
]

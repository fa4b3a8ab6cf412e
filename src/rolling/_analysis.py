"""Metric analysis, configured: metrics, their conditions and limits, and what they measure.

Everything here is a frozen value, validated at construction. How
measurements turn into verdicts is :mod:`rolling._judge`; the rules are
written there.
"""

from __future__ import annotations

import enum
import math
import re
import string
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

from ._errors import ConfigError
from .validate import check_bool, check_callable, check_seconds, validator

__all__ = [
    "Analysis",
    "Condition",
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
    "fill_template",
    "promql_regex",
    "promql_string",
]

LabelSet = tuple[tuple[str, str], ...]
"""The labels of one series of a vector, as sorted ``(name, value)`` pairs."""

Value = float | Mapping[LabelSet, float]
"""What a provider measured: a number, or one number per series (a vector)."""

Condition = Callable[[Any], bool]
"""A Python callable on the measured :data:`Value`; never a string to evaluate."""

MetricProviderFunction = Callable[["MeasureContext"], Awaitable["Value | None"]]
"""An async function that measures; None (or NaN, or an empty vector) means no data."""


class Outcome(enum.StrEnum):
    """The outcome of one measurement, of one metric, or of an analysis.

    .. versionadded:: 0.3.0
    """

    SUCCESSFUL = "successful"
    """The success condition held (or the failure condition did not)."""
    FAILED = "failed"
    """The failure condition held (or the success condition did not)."""
    INCONCLUSIVE = "inconclusive"
    """Neither condition decided."""
    ERROR = "error"
    """The provider (or a condition) raised or timed out."""
    NO_DATA = "no_data"
    """The provider had no data; counted as the metric's ``on_no_data`` says."""
    RUNNING = "running"
    """A metric or analysis not decided yet (never a measurement's outcome)."""


class OnNoData(enum.StrEnum):
    """What a measurement with no data counts as.

    .. versionadded:: 0.3.0
    """

    WAIT = "wait"
    """Not counted: measure again after ``interval``, up to ``no_data_limit`` times in a row;
    past it, the measurement counts as inconclusive."""
    INCONCLUSIVE = "inconclusive"
    """Counts as an inconclusive measurement at once."""
    FAIL = "fail"
    """Counts as a failed measurement."""


_PLACEHOLDERS = frozenset(
    {"target", "old_versions", "new_ids", "old_ids", "new_addresses", "old_addresses", "rollout_id"}
)


def promql_string(value: str) -> str:
    r"""``value`` as a PromQL double-quoted string literal, escaped.

    >>> promql_string('a"b')
    '"a\\\\"b"'
    """
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def promql_regex(values: Sequence[str]) -> str:
    """A quoted PromQL regex that matches exactly ``values``, for ``label=~...``.

    Each value is escaped for RE2, then the alternation is quoted as a
    string. With no values it matches nothing a scraped series has (the
    empty string), so a query over it has no data.
    """
    return promql_string("|".join(re.escape(v) for v in sorted(set(values))))


@attrs.frozen(kw_only=True)
class MeasureContext:
    """What a measurement knows of the rollout, when it is taken.

    Attributes:
        target: The version being rolled out.
        old_versions: The versions the fleet ran before, sorted.
        new_instances: Instances now on the target version: in traffic, and a
            canary's or blue-green's new instances from their launch, in
            traffic or not (so a pre-promotion analysis measures a preview
            that gets no requests yet).
        old_instances: Instances now on an old version and in traffic (not
            one a router call set to weight 0).
        rollout_id: An id of this rollout, stable while it runs.
        at: The event loop's time.

    .. versionadded:: 0.3.0
    """

    target: str
    old_versions: tuple[str, ...] = ()
    new_instances: tuple[Any, ...] = ()
    old_instances: tuple[Any, ...] = ()
    rollout_id: str = ""
    at: float = 0.0

    def values(self) -> dict[str, str]:
        """Every template placeholder, as a quoted PromQL literal.

        ``$target`` and ``$rollout_id`` are strings; the others are regex
        alternations for ``=~``. Addresses are ``host:port`` (from the
        instances' ``host`` and ``port`` attributes; those without are left out).
        """
        return {
            "target": promql_string(self.target),
            "rollout_id": promql_string(self.rollout_id),
            "old_versions": promql_regex(self.old_versions),
            "new_ids": promql_regex([i.id for i in self.new_instances]),
            "old_ids": promql_regex([i.id for i in self.old_instances]),
            "new_addresses": promql_regex(_addresses(self.new_instances)),
            "old_addresses": promql_regex(_addresses(self.old_instances)),
        }


def _addresses(instances: Sequence[Any]) -> list[str]:
    found: list[str] = []
    for instance in instances:
        host, port = getattr(instance, "host", None), getattr(instance, "port", None)
        if isinstance(host, str) and isinstance(port, int):
            found.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    return found


def check_template(field: str, template: str) -> None:
    """Raise :class:`ConfigError` when ``template`` names an unknown placeholder."""
    try:
        names = set(string.Template(template).get_identifiers())
        valid = string.Template(template).is_valid()
    except (ValueError, TypeError) as exc:  # pragma: no cover - get_identifiers does not raise
        raise ConfigError(field, str(exc), "write placeholders as $name") from None
    unknown = sorted(names - _PLACEHOLDERS)
    if unknown or not valid:
        raise ConfigError(
            field,
            f"unknown placeholder(s) {unknown}" if unknown else "a stray '$' in the query",
            f"use only ${', $'.join(sorted(_PLACEHOLDERS))}; write $$ for a literal $",
        )


def fill_template(template: str, context: MeasureContext) -> str:
    """Fill ``$placeholders`` of ``template`` with quoted values from ``context``.

    The values are complete PromQL literals, quotes included::

        sum(rate(http_requests_total{instance=~$new_addresses, code=~"5.."}[30s]))
    """
    return string.Template(template).substitute(context.values())


def _check_name(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError(
            f"Metric.{attribute.name}",
            f"expected a non-empty str, got {value!r}",
            'pass a short label such as "error-rate"',
        )


def _check_provider(_instance: object, _attribute: object, value: Any) -> None:
    if callable(getattr(value, "measure", None)) or callable(value):
        return
    raise ConfigError(
        "Metric.provider",
        f"{value!r} has no measure() method and is not callable",
        "pass a rolling.typing.MetricProvider such as PrometheusQuery, or an async function",
    )


def _check_limit(_instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(
            f"Metric.{attribute.name}", f"expected an int >= 0, got {value!r}", "pass 0, 1, 2 ..."
        )


def _check_count(_instance: object, _attribute: object, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            "Metric.count", f"expected an int >= 1 or None, got {value!r}", "pass 1, 5 ..."
        )


def _on_no_data(value: OnNoData | str) -> OnNoData:
    try:
        return OnNoData(value)
    except ValueError:
        raise ConfigError(
            "Metric.on_no_data",
            f"unknown choice {value!r}",
            'pass "wait", "inconclusive" or "fail"',
        ) from None


@attrs.frozen(kw_only=True)
class Metric:
    """One thing to measure, and how a measurement is judged.

    A measurement is *failed* when ``failure`` returns true, else
    *successful* when ``success`` returns true, else *inconclusive*. With
    only ``success``, a false answer is failed; with only ``failure``, a
    false answer is successful (Argo Rollouts' rules). The metric's verdict
    follows the limits in :mod:`rolling.analysis`.

    Attributes:
        name: A short label, used in events, reasons and the result.
        provider: A :class:`~rolling.typing.MetricProvider`, or an async
            function taking a :class:`~rolling.analysis.MeasureContext`.
        success: Condition for a successful measurement.
        failure: Condition for a failed measurement.
        interval: Seconds between measurements.
        count: Measurements to take (not counting no-data waits); None: one
            in an :class:`~rolling.Analyze` step, until the rollout ends in a
            background analysis.
        initial_delay: Seconds before the first measurement.
        failure_limit: The metric fails when failed measurements are
            strictly more than this.
        inconclusive_limit: The metric is inconclusive when inconclusive
            measurements are strictly more than this.
        consecutive_error_limit: The metric fails when errors in a row are
            strictly more than this.
        on_no_data: What a measurement without data counts as.
        no_data_limit: With ``on_no_data="wait"``: no-data measurements in a
            row that are waited out; the next one counts as inconclusive.
        timeout: Longest one measurement may take, in seconds; past it, an error.
        dry_run: Measured and reported, but its verdict never decides.

    Raises:
        ConfigError: An argument is invalid, or neither condition is given.

    .. versionadded:: 0.3.0
    """

    name: str = attrs.field(validator=_check_name)
    provider: Any = attrs.field(validator=_check_provider)
    success: Condition | None = attrs.field(
        default=None, validator=validator(check_callable, allow_none=True)
    )
    failure: Condition | None = attrs.field(
        default=None, validator=validator(check_callable, allow_none=True)
    )
    interval: float = attrs.field(
        default=10.0, validator=validator(check_seconds, allow_zero=False)
    )
    count: int | None = attrs.field(default=None, validator=_check_count)
    initial_delay: float = attrs.field(default=0.0, validator=validator(check_seconds))
    failure_limit: int = attrs.field(default=0, validator=_check_limit)
    inconclusive_limit: int = attrs.field(default=0, validator=_check_limit)
    consecutive_error_limit: int = attrs.field(default=4, validator=_check_limit)
    on_no_data: OnNoData = attrs.field(default=OnNoData.WAIT, converter=_on_no_data)
    no_data_limit: int = attrs.field(default=10, validator=_check_limit)
    timeout: float = attrs.field(default=30.0, validator=validator(check_seconds, allow_zero=False))
    dry_run: bool = attrs.field(default=False, validator=validator(check_bool))

    def __attrs_post_init__(self) -> None:
        if self.success is None and self.failure is None:
            raise ConfigError(
                "Metric.success",
                f"metric {self.name!r} has neither a success nor a failure condition",
                "pass success=lambda v: v < 0.01 and/or failure=lambda v: v > 0.05",
            )


def _iterable(value: object) -> bool:
    return isinstance(value, Iterable)


def _metrics(value: Any) -> tuple[Metric, ...]:
    if isinstance(value, Metric):
        raise ConfigError("Analysis.metrics", "got a single Metric", "wrap it in a list")
    if isinstance(value, str | bytes) or not _iterable(value):
        raise ConfigError(
            "Analysis.metrics", f"expected a list of Metric, got {value!r}", "pass [Metric(...)]"
        )
    metrics: tuple[Any, ...] = tuple(value)
    if not metrics:
        raise ConfigError("Analysis.metrics", "is empty", "pass at least one Metric")
    names: set[str] = set()
    for index, metric in enumerate(metrics):
        if not isinstance(metric, Metric):
            raise ConfigError(
                f"Analysis.metrics[{index}]",
                f"expected a Metric, got {metric!r}",
                "pass Metric(...)",
            )
        if metric.name in names:
            raise ConfigError(
                f"Analysis.metrics[{index}]",
                f"the name {metric.name!r} is used twice",
                "give each metric its own name",
            )
        names.add(metric.name)
    return metrics


@attrs.frozen(kw_only=True)
class Analysis:
    """Metrics measured together, with one combined verdict.

    The verdict: failed if any deciding metric failed; else inconclusive if
    any is inconclusive; else successful once all are successful.
    ``dry_run`` metrics never decide.

    Attributes:
        metrics: The metrics, with unique names.
        name: A short label, used in events and reasons.
        bake: For a background analysis (``Rollout(analysis=...)``): seconds
            it goes on after the last instance is updated, before the
            rollout succeeds.

    .. versionadded:: 0.3.0
    """

    metrics: tuple[Metric, ...] = attrs.field(converter=_metrics)
    name: str = attrs.field(default="analysis", validator=_check_name)
    bake: float = attrs.field(default=0.0, validator=validator(check_seconds))


@attrs.frozen(kw_only=True)
class Measurement:
    """One measurement of one metric.

    Attributes:
        metric: The metric's name.
        outcome: How it was judged (:attr:`Outcome.NO_DATA` for a no-data wait).
        value: What the provider returned (None for no data or an error).
        reason: Why, for errors and no data; empty otherwise.
        at: The event loop's time it was taken.
        dry_run: Whether the metric is a dry run.

    .. versionadded:: 0.3.0
    """

    metric: str
    outcome: Outcome
    value: Value | None
    reason: str = ""
    at: float = 0.0
    dry_run: bool = False

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dictionary."""
        value: object = self.value
        if isinstance(value, Mapping):
            value = [
                {"labels": dict(labels), "value": v}
                for labels, v in value.items()  # pyright: ignore[reportUnknownVariableType]
            ]
        elif isinstance(value, float) and not math.isfinite(value):
            value = str(value)
        return {
            "metric": self.metric,
            "outcome": str(self.outcome),
            "value": value,
            "reason": self.reason,
            "at": self.at,
            "dry_run": self.dry_run,
        }


@attrs.frozen(kw_only=True)
class MetricVerdict:
    """Where one metric stands.

    Attributes:
        metric: Its name.
        outcome: ``successful``, ``failed``, ``inconclusive`` or ``running``.
        reason: Why, in words.
        measured: Counted measurements (no-data waits and errors left out).
        failed: Failed measurements.
        inconclusive: Inconclusive measurements.
        errors: Error measurements.
        dry_run: Whether the metric is a dry run (and so never decides).

    .. versionadded:: 0.3.0
    """

    metric: str
    outcome: Outcome
    reason: str
    measured: int
    failed: int
    inconclusive: int
    errors: int
    dry_run: bool = False


@attrs.frozen(kw_only=True)
class Verdict:
    """The combined verdict of an analysis.

    Attributes:
        analysis: The analysis's name.
        outcome: ``successful``, ``failed``, ``inconclusive`` or ``running``.
        reason: The deciding metric's reason.
        metrics: Each metric's verdict, dry runs included.
        background: Whether it is the rollout's background analysis (else a step).

    .. versionadded:: 0.3.0
    """

    analysis: str
    outcome: Outcome
    reason: str
    metrics: tuple[MetricVerdict, ...]
    background: bool = False

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dictionary."""
        return {
            "analysis": self.analysis,
            "outcome": str(self.outcome),
            "reason": self.reason,
            "background": self.background,
            "metrics": [
                {k: str(v) if isinstance(v, enum.Enum) else v for k, v in attrs.asdict(m).items()}
                for m in self.metrics
            ],
        }

"""A rollout file's metric analysis: ``[metrics.NAME]`` tables, ``[analysis]``, ``analyze`` steps.

Rules:

1. **Metrics** are defined once, by name, in ``[metrics.NAME]``: ``provider``
   names an entry point of the ``rolling.metrics`` group, its settings go in
   ``[metrics.NAME.settings]``, every other key is a :class:`rolling.Metric`
   argument. Each use of a name (in ``[analysis]`` or a step) builds its own
   provider, since providers such as ``scrape`` remember their last scrape.
2. **Conditions** are never evaluated: ``success`` and ``failure`` are a
   comparison, an operator (``<``, ``<=``, ``>``, ``>=``, ``==``, ``!=``) and
   a number, such as ``"> 0.02"``. On a vector, ``success`` holds when every
   series satisfies it and ``failure`` when any does. ``"worse"`` is the
   provider's own ``worse`` condition (``compare``).
3. **Analyses**: ``[analysis]`` (``metrics = [names]``, ``name``, ``bake``)
   is the rollout's background analysis; a step ``analyze = [names]`` or
   ``analyze = {metrics = [...], name = ..., inconclusive_timeout = ...,
   on_timeout = ...}`` is an :class:`rolling.Analyze` step.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from typing import Any, Protocol, cast

import attrs

from rolling import Analysis, Analyze, ConfigError, Metric
from rolling.plugins import build

__all__ = ["AnalysisReader", "Loader", "Threshold", "Where", "parse_condition"]

Where = tuple[str | int, ...]

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
}
_CONDITION = re.compile(r"^\s*(<=|>=|==|!=|<|>)\s*([-+0-9.eE]+|[-+]?inf)\s*$")


@attrs.frozen
class Threshold:
    """A condition read from a file: ``value OP limit``; on a vector, every or any series."""

    op: str
    limit: float
    every: bool

    def __call__(self, value: Any) -> bool:
        compare = _OPERATORS[self.op]
        if isinstance(value, Mapping):
            held = [compare(float(v), self.limit) for v in value.values()]  # pyright: ignore[reportUnknownArgumentType, reportUnknownVariableType]
            return all(held) if self.every else any(held)
        return compare(float(value), self.limit)


def parse_condition(text: object, *, every: bool) -> Threshold:
    """``"> 0.02"`` as a :class:`Threshold`.

    Raises:
        ConfigError: Not an operator followed by a number.
    """
    match = _CONDITION.match(text) if isinstance(text, str) else None
    if match is not None:
        try:
            return Threshold(match.group(1), float(match.group(2)), every)
        except ValueError:
            pass
    raise ConfigError(
        "condition",
        f"expected an operator and a number, got {text!r}",
        'write "< 0.02", "> 0.05", ">= 100" ... (conditions are compared, never evaluated)',
    )


class Loader(Protocol):
    """What the readers need of the file's loader: its errors and construction."""

    def error(self, where: Where, key: str | None, problem: str, fix: str) -> ConfigError: ...
    def from_config_error(self, where: Where, exc: ConfigError) -> ConfigError: ...
    def construct(
        self, where: Where, factory: Callable[..., Any], table: Mapping[str, Any]
    ) -> Any: ...


class AnalysisReader:
    """Builds the analyses of one rollout file, with its loader's file:line errors."""

    def __init__(self, loader: Loader, data: Mapping[str, Any]) -> None:
        self.loader = loader
        metrics = data.get("metrics", {})
        if not isinstance(metrics, dict):
            raise loader.error((), "metrics", "expected a table", "write [metrics.NAME] tables")
        self.tables = cast("dict[str, Any]", metrics)
        for name, table in self.tables.items():
            if not isinstance(table, dict):
                raise loader.error(
                    ("metrics",), name, "expected a table", f"write [metrics.{name}]"
                )
        self.used: set[str] = set()

    def metric(self, name: str, where: Where, key: str) -> Metric:
        """Build the metric ``name`` (referenced at ``where``/``key``), with its own provider."""
        if name not in self.tables:
            known = ", ".join(sorted(self.tables)) or "none defined"
            raise self.loader.error(
                where, key, f"no metric named {name!r}", f"define [metrics.{name}] ({known})"
            )
        self.used.add(name)
        at: Where = ("metrics", name)
        table = dict(cast("dict[str, Any]", self.tables[name]))
        if "name" in table:  # it was silently replaced by the table's own name
            raise self.loader.error(
                at,
                "name",
                "is not a setting: a metric is named by its table",
                f"remove it, or rename the table [metrics.{table['name']}]",
            )
        provider_name = table.pop("provider", None)
        if not isinstance(provider_name, str) or not provider_name:
            raise self.loader.error(
                at, "provider", "is missing", 'write provider = "scrape" (`rolling plugins`)'
            )
        settings = table.pop("settings", {})
        if not isinstance(settings, dict):
            raise self.loader.error(
                at, "settings", "expected a table", f"write [{at[0]}.{name}.settings]"
            )
        try:
            provider = build("rolling.metrics", provider_name, cast("dict[str, Any]", settings))
        except ConfigError as exc:
            if exc.field == "plugin":  # the provider's name itself
                raise self.loader.error(at, "provider", exc.problem, exc.fix) from None
            raise self.loader.from_config_error((*at, "settings"), exc) from None
        for key_name in ("success", "failure"):
            if key_name in table:
                table[key_name] = self.condition(at, key_name, table[key_name], provider)
        table.update(name=name, provider=provider)
        return cast("Metric", self.loader.construct(at, Metric, table))

    def condition(self, at: Where, key: str, text: object, provider: object) -> Callable[..., bool]:
        if text == "worse":
            worse = getattr(provider, "worse", None)
            if not callable(worse):
                raise self.loader.error(
                    at, key, "this provider has no worse condition", 'use provider = "compare"'
                )
            return cast("Callable[..., bool]", worse)
        try:
            return parse_condition(text, every=key == "success")
        except ConfigError as exc:
            raise self.loader.error(at, key, exc.problem, exc.fix) from None

    def analysis(self, where: Where, key: str | None, table: Mapping[str, Any]) -> Analysis:
        """``Analysis`` from ``{metrics = [names], name = ..., bake = ...}``."""
        table = dict(table)
        names = table.pop("metrics", None)
        if not isinstance(names, list) or not names:
            raise self.loader.error(
                where, "metrics" if key is None else key, "expected a list of metric names",
                'write metrics = ["error-ratio"] (each defined in [metrics.NAME])',
            )  # fmt: skip
        metrics = [
            self.metric(str(n), where, "metrics" if key is None else key)
            for n in cast("list[object]", names)
        ]
        table["metrics"] = metrics
        return cast("Analysis", self.loader.construct(where, Analysis, table))

    def background(self, data: Mapping[str, Any]) -> Analysis | None:
        value = data.get("analysis")
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.loader.error(
                (), "analysis", "expected a table", 'write [analysis] metrics = ["error-ratio"]'
            )
        return self.analysis(("analysis",), None, cast("dict[str, Any]", value))

    def step(self, where: Where, value: object) -> Analyze:
        """An ``analyze = [names]`` or ``analyze = {metrics = [...], ...}`` step."""
        if isinstance(value, list):
            return Analyze(self.analysis(where, "analyze", {"metrics": value}))
        if not isinstance(value, dict):
            raise self.loader.error(
                where, "analyze", f"expected a list of metric names, got {value!r}",
                'write analyze = ["error-ratio"]',
            )  # fmt: skip
        table = dict(cast("dict[str, Any]", value))
        inside: Where = (*where, "analyze")  # its keys are in the inline table
        step: dict[str, Any] = {
            k: table.pop(k) for k in ("inconclusive_timeout", "on_timeout") if k in table
        }
        analysis = self.analysis(inside, None, table)
        step["analysis"] = analysis
        return cast("Analyze", self.loader.construct(inside, Analyze, step))

    def check_unused(self) -> None:
        """A metric defined and never used is most likely a mistake: say so."""
        for name in self.tables:
            if name not in self.used:
                raise self.loader.error(
                    ("metrics", name), None, "is defined but no analysis uses it",
                    f'add it to [analysis] metrics, or a step analyze = ["{name}"], or remove it',
                )  # fmt: skip

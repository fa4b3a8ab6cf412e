"""A rollout file's ``[strategy]`` table and the steps only a strategy gives meaning to.

Rules:

1. ``type`` picks the class: ``"rolling"`` (the default) is
   :class:`rolling.RollingUpdate`, ``"batches"`` :class:`rolling.Batches`,
   ``"canary"`` :class:`rolling.Canary` and ``"blue-green"``
   :class:`rolling.BlueGreen`. Every other key is an argument of that class,
   under its own name.
2. What the library takes as an object is a small table or a name here: a
   canary's ``promotion`` is a table of :class:`rolling.RollingUpdate`'s
   arguments; a blue-green ``pre_promotion`` or ``post_promotion`` is a list
   of metric names or a table like ``[analysis]`` (metrics defined in
   ``[metrics.NAME]``); a ``pause`` is seconds or ``"promote"``.
3. The canary's steps are ``set_weight = 10`` (:class:`rolling.SetWeight`) and
   ``set_canary_scale = 2``, ``"50%"`` or ``"match"``
   (:class:`rolling.SetCanaryScale`: replicas, or ``match_traffic_weight``).

Whether the driver and router can do what the strategy needs (launch and
terminate; set weights) is the library's question, asked by the loader's
check of all the options together.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from rolling import (
    Analysis,
    Batches,
    BlueGreen,
    Canary,
    ConfigError,
    Pause,
    RollingUpdate,
    SetCanaryScale,
    SetWeight,
)

from ._analysis_file import AnalysisReader, Loader, Where

__all__ = ["STRATEGY_TYPES", "StrategyReader"]

STRATEGY_TYPES = ("rolling", "batches", "canary", "blue-green")
"""The values of ``[strategy] type``."""

Strategy = RollingUpdate | Batches | Canary | BlueGreen


class StrategyReader:
    """Builds ``[strategy]`` and the canary's steps, with its loader's file:line errors."""

    def __init__(self, loader: Loader, analyses: AnalysisReader) -> None:
        self.loader = loader
        self.analyses = analyses

    def strategy(self, table: dict[str, Any] | None) -> Strategy | None:
        """The strategy the ``[strategy]`` table (None: absent) describes."""
        if table is None:
            return None
        loader = self.loader
        where: Where = ("strategy",)
        kind = table.pop("type", "rolling")
        if kind == "rolling":
            return cast("RollingUpdate", loader.construct(where, RollingUpdate, table))
        if kind == "batches":
            return self._batches(table)
        if kind == "canary":
            if "promotion" in table:
                table["promotion"] = self._promotion(table["promotion"])
            return cast("Canary", loader.construct(where, Canary, table))
        if kind == "blue-green":
            for key in ("pre_promotion", "post_promotion"):
                if key in table:
                    table[key] = self._analysis(key, table[key])
            return cast("BlueGreen", loader.construct(where, BlueGreen, table))
        raise loader.error(
            where, "type", f"unknown strategy {kind!r}", "use one of: " + ", ".join(STRATEGY_TYPES)
        )

    def _batches(self, table: dict[str, Any]) -> Batches:
        where: Where = ("strategy",)
        if "pause" in table:
            table["pause"] = self.pause(where, "pause", table["pause"])
        sizes = table.pop("sizes", None)
        if not isinstance(sizes, list) or not sizes:
            raise self.loader.error(
                where,
                "sizes",
                "is missing or empty" if sizes in (None, []) else f"expected a list, got {sizes!r}",
                'write sizes = [1, "25%"]',
            )

        def batches(
            *, sizes: list[int | str], pause: Pause | None = None, surge: bool = False
        ) -> Batches:
            return Batches(*sizes, pause=pause, surge=surge)

        return cast("Batches", self.loader.construct(where, batches, {"sizes": sizes, **table}))

    def _promotion(self, value: object) -> RollingUpdate | None:
        if value is False:
            return None  # written out: all at once, the default
        if not isinstance(value, dict):
            raise self.loader.error(
                ("strategy",), "promotion", f"expected a table, got {value!r}",
                "write promotion = { max_unavailable = 1, max_surge = 1 } (a RollingUpdate), "
                "or leave it out to promote all at once",
            )  # fmt: skip
        table = dict(cast("dict[str, Any]", value))
        return cast(
            "RollingUpdate", self.loader.construct(("strategy", "promotion"), RollingUpdate, table)
        )

    def _analysis(self, key: str, value: object) -> Analysis:
        if isinstance(value, list):
            return self.analyses.analysis(("strategy",), key, {"metrics": value})
        if not isinstance(value, dict):
            raise self.loader.error(
                ("strategy",), key, f"expected a list of metric names or a table, got {value!r}",
                f'write {key} = ["error-ratio"], or {key} = {{ metrics = ["error-ratio"], '
                "bake = 60 }",
            )  # fmt: skip
        return self.analyses.analysis(("strategy", key), None, cast("dict[str, Any]", value))

    def pause(self, where: Where, key: str, value: object) -> Pause:
        """A ``pause``: seconds, or ``"promote"`` for a pause until ``rolling promote``."""
        if value == "promote":
            return Pause()
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.loader.error(
                where,
                key,
                f'expected seconds or "promote", got {value!r}',
                'write pause = 30, or pause = "promote" to wait for `rolling promote`',
            )
        try:
            return Pause(value)
        except ConfigError as exc:
            raise self.loader.error(where, key, exc.problem, exc.fix) from None

    def canary_step(self, where: Where, key: str, value: object) -> SetWeight | SetCanaryScale:
        """A ``set_weight`` or ``set_canary_scale`` step."""
        loader = self.loader
        if key == "set_weight":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise loader.error(
                    where, key, f"expected a percentage, got {value!r}", "write set_weight = 10"
                )
            try:
                return SetWeight(value)
            except ConfigError as exc:  # named as the file writes it, not SetWeight.percent
                raise loader.error(where, key, exc.problem, "write set_weight = 25") from None
        if value == "match":
            table: Mapping[str, Any] = {"match_traffic_weight": True}
        elif isinstance(value, int | str) and not isinstance(value, bool):
            table = {"replicas": value}
        else:
            raise loader.error(
                where, key, f'expected a count, a percentage or "match", got {value!r}',
                'write set_canary_scale = 2, set_canary_scale = "50%" or '
                'set_canary_scale = "match" (follow the weight)',
            )  # fmt: skip
        try:
            return SetCanaryScale(**table)
        except ConfigError as exc:  # named as the file writes it, not SetCanaryScale.replicas
            raise loader.error(where, key, exc.problem, exc.fix) from None

"""Compare: canary (new version) against baseline (old version), judged by a statistical test.

Rules:

1. **Observations.** Each measurement scrapes every instance on the new
   version and every instance on the old, at the same moment. An instance's
   *observation* is its own value (ratio, rate or quantile, as
   :class:`~rolling.metrics.Scrape` computes it) over the increase since
   its previous scrape. An instance seen for the first time on a version
   (a new process, or one just moved to the target) is a baseline only. An
   instance with no traffic in between gives no observation.
2. **Window.** The observations of the last ``window`` measurements of each
   side are judged together, so both sides cover the same stretch of time.
3. **No data** while a side has fewer than ``min_samples`` observations in
   the window: the measurement is no data (the metric's ``on_no_data``).
4. **Test.** One-sided Mann-Whitney U (scipy's ``mannwhitneyu``): the
   p-value that the new side is *not* stochastically worse (greater, or
   less with ``higher_is_worse=False``). Identical samples (every value the
   same on both sides) give p = 1.
5. **Effect.** The Hodges-Lehmann shift: the median of every difference
   ``new - old`` between an observation of each side (sign flipped with
   ``higher_is_worse=False``, so positive is always worse).
6. **Verdict.** :meth:`Compare.worse` holds when p < ``alpha`` *and* the
   effect is at least ``min_effect``: a difference too small to matter
   never fails a release, however confident the test is about it.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import anyio
import attrs

from rolling import ConfigError
from rolling.analysis import LabelSet, MeasureContext, Value
from rolling.validate import check_bool, check_int, validator

from ._prometheus import MetricError
from ._scrape import Scrape

__all__ = ["Compare"]

P_VALUE: LabelSet = (("stat", "p_value"),)
EFFECT: LabelSet = (("stat", "effect"),)
NEW_MEDIAN: LabelSet = (("stat", "new_median"),)
OLD_MEDIAN: LabelSet = (("stat", "old_median"),)
NEW_SAMPLES: LabelSet = (("stat", "new_samples"),)
OLD_SAMPLES: LabelSet = (("stat", "old_samples"),)


def _check_alpha(_instance: object, _attribute: object, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise ConfigError("Compare.alpha", f"expected 0 < alpha < 1, got {value!r}", "pass 0.05")


def _check_effect(_instance: object, _attribute: object, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ConfigError(
            "Compare.min_effect",
            f"expected a number >= 0, got {value!r}",
            "pass the smallest difference that matters, such as 0.01 for an error ratio",
        )


def mann_whitney_p(new: Sequence[float], old: Sequence[float], *, greater: bool) -> float:
    """One-sided Mann-Whitney U p-value that ``new`` is greater (or less) than ``old``."""
    from scipy.stats import mannwhitneyu  # noqa: PLC0415 - lazy: scipy is in rolling[analysis] only

    p = float(mannwhitneyu(new, old, alternative="greater" if greater else "less").pvalue)
    return 1.0 if math.isnan(p) else p  # NaN (no variation at all): no evidence


def hodges_lehmann(new: Sequence[float], old: Sequence[float]) -> float:
    """The median of every pairwise difference ``n - o``: the shift that goes with Mann-Whitney."""
    return statistics.median(n - o for n in new for o in old)


@attrs.frozen
class Compare(Scrape):
    """The new version against the old, over the same window: worse with confidence?

    Scrapes ``/metrics`` of the instances on both versions, as
    :class:`~rolling.metrics.Scrape` does (same arguments; ``of`` is
    ignored), and tests whether the new version's per-instance values are
    worse than the old's with a one-sided Mann-Whitney U test. A
    measurement is a vector: ``{stat=p_value}``, ``{stat=effect}`` (the
    Hodges-Lehmann shift, positive when the new version is worse),
    ``{stat=new_median}``, ``{stat=old_median}``, ``{stat=new_samples}``,
    ``{stat=old_samples}``; judge it with :meth:`worse`::

        errors = Compare("http_requests_total", errors=lambda l: l["code"] >= "500",
                         min_effect=0.01)
        Metric(name="errors-vs-baseline", provider=errors, failure=errors.worse,
               interval=5)

    Give each ``Compare`` to one metric only: it keeps the previous scrape
    of every instance. Needs ``rolling[analysis]`` (scipy).

    Args:
        metric: As for :class:`~rolling.metrics.Scrape`.
        alpha: The significance level: worse only when p < ``alpha``.
        min_effect: The smallest shift (in the metric's unit) that fails a
            release; a smaller one never does.
        higher_is_worse: False for a metric where less is worse (a success rate).
        window: Measurements whose observations are judged together.
        min_samples: Observations each side needs in the window; fewer is no data.

    .. versionadded:: 0.3.0
    """

    alpha: float = attrs.field(default=0.05, kw_only=True, validator=_check_alpha)
    min_effect: float = attrs.field(default=0.0, kw_only=True, validator=_check_effect)
    higher_is_worse: bool = attrs.field(default=True, kw_only=True, validator=validator(check_bool))
    window: int = attrs.field(default=10, kw_only=True, validator=validator(check_int, minimum=1))
    min_samples: int = attrs.field(
        default=5, kw_only=True, validator=validator(check_int, minimum=3)
    )
    _windows: dict[str, deque[list[float]]] = attrs.field(
        init=False, factory=dict[str, "deque[list[float]]"], eq=False, repr=False, hash=False
    )
    """The last ``window`` measurements' observations, by side (``new``, ``old``)."""

    # A vector where Scrape answers a number: both are a MetricProvider's Value.
    async def measure(self, context: MeasureContext) -> Value | None:  # type: ignore[override]  # pyright: ignore[reportIncompatibleMethodOverride]
        """Scrape both versions' instances and test the new against the old.

        Raises:
            MetricError: No instance of a side could be scraped.
        """
        sides = {"new": context.new_instances, "old": context.old_instances}
        observed: dict[str, list[float]] = {"new": [], "old": []}
        failures: list[MetricError] = []

        async def side(name: str) -> None:
            try:
                observed[name] = await self._observe(name, sides[name], context)
            except MetricError as exc:  # raised plainly below, not in an exception group
                failures.append(exc)

        async with anyio.create_task_group() as tg:
            for name in sides:
                tg.start_soon(side, name)
        if failures:
            raise failures[0]
        for name, values in observed.items():
            window = self._windows.setdefault(name, deque(maxlen=self.window))
            window.append(values)
        new = [v for values in self._windows["new"] for v in values]
        old = [v for values in self._windows["old"] for v in values]
        return self.judge(new, old)

    def judge(self, new: Sequence[float], old: Sequence[float]) -> Value | None:
        """The measurement for these observations (None while a side has too few)."""
        if len(new) < self.min_samples or len(old) < self.min_samples:
            return None
        p = mann_whitney_p(new, old, greater=self.higher_is_worse)
        effect = hodges_lehmann(new, old)
        return {
            P_VALUE: p,
            EFFECT: effect if self.higher_is_worse else -effect,
            NEW_MEDIAN: statistics.median(new),
            OLD_MEDIAN: statistics.median(old),
            NEW_SAMPLES: float(len(new)),
            OLD_SAMPLES: float(len(old)),
        }

    def worse(self, value: Value) -> bool:
        """The failure condition: p < ``alpha`` and an effect of at least ``min_effect``."""
        if not isinstance(value, Mapping):
            raise TypeError(f"expected a Compare measurement, got {value!r}")
        return value[P_VALUE] < self.alpha and value[EFFECT] >= self.min_effect

    async def _observe(
        self, name: str, instances: Sequence[Any], context: MeasureContext
    ) -> list[float]:
        if not instances:
            return []
        scraped = await self._scrape_all(instances, f"no instance on the {name} version")
        values: list[float] = []
        for instance_id, samples in scraped.items():
            key = f"{name}:{instance_id}"  # a move to the target starts a new baseline
            before = self._last.get(key)
            self._last[key] = samples
            if before is None:
                continue
            increase = {
                k: v if v < before.get(k, 0.0) else v - before.get(k, 0.0)
                for k, v in samples.items()
            }
            value = self._compute(increase, context)
            if value is not None:
                values.append(value)
        return values

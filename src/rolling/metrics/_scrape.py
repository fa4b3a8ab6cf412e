"""Scrape: the embedded default provider, with no metric server.

Each measurement scrapes ``/metrics`` (Prometheus's text exposition format,
parsed by ``prometheus-client``) of every instance on the new version (or
the old), and compares each instance's counters with its previous scrape:
the difference is the traffic in between. Counters that went down were
reset (the instance restarted): their new value is the difference. An
instance scraped for the first time gives no difference yet, so the first
measurement has no data: it is the baseline.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio
import attrs
from prometheus_client.parser import text_string_to_metric_families

from rolling import ConfigError
from rolling.analysis import MeasureContext
from rolling.net import Address, address_of, default_address
from rolling.validate import check_callable, check_seconds, validator

from ._http import HTTPError, get
from ._prometheus import MetricError

__all__ = ["Scrape"]

Labels = Mapping[str, str]
_Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _check_quantile(_instance: object, _attribute: object, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise ConfigError("Scrape.quantile", f"expected 0 < q < 1, got {value!r}", "pass 0.99")


def _check_of(_instance: object, _attribute: object, value: Any) -> None:
    if not isinstance(value, str) or value not in {"new", "old"}:
        raise ConfigError("Scrape.of", f"expected 'new' or 'old', got {value!r}", 'pass "new"')


def _check_path(_instance: object, _attribute: object, value: Any) -> None:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ConfigError("Scrape.path", f"must start with '/', got {value!r}", 'pass "/metrics"')


def _check_metric(_instance: object, _attribute: object, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError(
            "Scrape.metric",
            f"expected a metric name, got {value!r}",
            'pass "http_requests_total" or a histogram\'s name',
        )


@attrs.frozen
class Scrape:
    """A rate, a ratio or a quantile computed from the instances' own ``/metrics``.

    Three kinds, by the arguments given:

    * ``Scrape("http_requests_total")``: requests per second over the
      instances, between two measurements;
    * ``Scrape("http_requests_total", errors=lambda labels: labels["code"] >= "500")``:
      the share of the counter's increase whose samples' labels ``errors``
      selects (an error ratio, 0 to 1);
    * ``Scrape("http_request_duration_seconds", quantile=0.99)``: a quantile
      of a histogram's observations between two measurements (interpolated
      within a bucket, as PromQL's ``histogram_quantile`` does).

    The first measurement is the baseline, with no data; so is any with no
    increase (no traffic). Needs ``rolling[analysis]``.

    Args:
        metric: The counter's sample name (``..._total``) or the histogram's name.
        errors: For a ratio: which samples (by their labels) count as errors.
        quantile: For a histogram: the quantile, such as ``0.99``.
        of: Scrape the instances on the ``"new"`` version, or the ``"old"``.
        path: The metrics path.
        address: Maps an instance to its ``(host, port)`` (default: its
            ``host`` and ``port`` attributes).
        timeout: Longest one scrape may take, in seconds.

    .. versionadded:: 0.3.0
    """

    metric: str = attrs.field(validator=_check_metric)
    errors: Callable[[Labels], bool] | None = attrs.field(
        default=None, kw_only=True, validator=validator(check_callable, allow_none=True)
    )
    quantile: float | None = attrs.field(default=None, kw_only=True, validator=_check_quantile)
    of: str = attrs.field(default="new", kw_only=True, validator=_check_of)
    path: str = attrs.field(default="/metrics", kw_only=True, validator=_check_path)
    address: Address | None = attrs.field(
        default=None, kw_only=True, validator=validator(check_callable, allow_none=True)
    )
    timeout: float = attrs.field(
        default=2.0, kw_only=True, validator=validator(check_seconds, allow_zero=False)
    )
    _last: dict[str, _Samples] = attrs.field(
        init=False, factory=dict[str, "_Samples"], eq=False, repr=False, hash=False
    )
    """The previous scrape of each instance, by id."""

    def __attrs_post_init__(self) -> None:
        if self.errors is not None and self.quantile is not None:
            raise ConfigError(
                "Scrape.errors", "errors and quantile do not mix", "make two metrics, one of each"
            )

    async def measure(self, context: MeasureContext) -> float | None:
        """Scrape every instance, and compute the value from the increases since last time.

        Raises:
            MetricError: No instance could be scraped.
        """
        instances = context.new_instances if self.of == "new" else context.old_instances
        if not instances:
            return None
        scraped = await self._scrape_all(instances, "no instance")
        increase: _Samples = {}
        for instance_id, samples in scraped.items():
            before = self._last.get(instance_id)
            self._last[instance_id] = samples
            if before is None:
                continue
            for key, value in samples.items():
                old = before.get(key, 0.0)
                delta = value if value < old else value - old  # a reset counter starts again
                increase[key] = increase.get(key, 0.0) + delta
        return self._compute(increase, context)

    async def _scrape_all(self, instances: Sequence[Any], which: str) -> dict[str, _Samples]:
        """Scrape ``instances`` side by side, by id; MetricError when none answers."""
        scraped: dict[str, _Samples] = {}
        failures: list[str] = []

        async def scrape(instance: Any) -> None:
            try:
                scraped[instance.id] = await self._scrape(instance)
            except (MetricError, ValueError) as exc:
                failures.append(f"{instance.id}: {exc}")

        async with anyio.create_task_group() as tg:
            for instance in instances:
                tg.start_soon(scrape, instance)
        if not scraped:
            raise MetricError(f"{which} could be scraped: " + "; ".join(sorted(failures)))
        return scraped

    async def _scrape(self, instance: Any) -> _Samples:
        host, port = address_of(default_address if self.address is None else self.address, instance)
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            with anyio.fail_after(self.timeout):
                response = await get(f"http://{authority}{self.path}")
        except TimeoutError:
            raise MetricError(f"timed out after {self.timeout}s") from None
        except HTTPError as exc:
            raise MetricError(str(exc)) from None
        if response.status != 200:  # noqa: PLR2004
            raise MetricError(f"HTTP {response.status}")
        return self._samples(response.body.decode("utf-8", errors="replace"))

    def _samples(self, text: str) -> _Samples:
        wanted = {f"{self.metric}_bucket"} if self.quantile is not None else {self.metric}
        samples: _Samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in wanted:
                    key = (sample.name, tuple(sorted(sample.labels.items())))
                    samples[key] = float(sample.value)
        return samples

    def _compute(self, increase: _Samples, context: MeasureContext) -> float | None:  # noqa: ARG002 - kept for subclasses' symmetry
        if self.quantile is not None:
            return _quantile(self.quantile, increase)
        total = sum(increase.values())
        if total <= 0:
            return None
        if self.errors is None:
            return total
        errors = self.errors
        failed = sum(v for (_, labels), v in increase.items() if errors(dict(labels)))
        return failed / total


def _quantile(q: float, increase: _Samples) -> float | None:
    """``histogram_quantile(q, ...)`` over the increase of every series' buckets, summed."""
    buckets: dict[float, float] = {}
    for (_, labels), value in increase.items():
        le = dict(labels).get("le")
        if le is None:
            continue
        bound = float(le)
        buckets[bound] = buckets.get(bound, 0.0) + value
    if math.inf not in buckets or buckets[math.inf] <= 0:
        return None
    bounds = sorted(buckets)
    rank = q * buckets[math.inf]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower  # past the last finite bucket: its bound, as PromQL does
            if count == below:  # pragma: no cover - count >= rank > below when reached
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return None  # pragma: no cover - the +Inf bucket always holds the rank

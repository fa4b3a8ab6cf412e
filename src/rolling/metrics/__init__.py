"""Metric providers: Prometheus, a scrape of ``/metrics``, a JSON endpoint, canary vs baseline.

Each implements :class:`rolling.typing.MetricProvider`; use them in a
:class:`rolling.Metric`. This package needs ``rolling[analysis]`` (for
``prometheus-client``'s exposition parser, and scipy for :class:`Compare`).

.. versionadded:: 0.3.0
"""

from __future__ import annotations

from ._compare import Compare
from ._prometheus import MetricError, PrometheusQuery, WebMetric
from ._scrape import Scrape

__all__ = ["Compare", "MetricError", "PrometheusQuery", "Scrape", "WebMetric"]

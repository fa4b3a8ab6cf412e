"""Metric providers: Prometheus, a scrape of the instances' ``/metrics``, a JSON endpoint.

Each implements :class:`rolling.typing.MetricProvider`; use them in a
:class:`rolling.Metric`. This package needs ``rolling[analysis]`` (for
``prometheus-client``'s exposition parser).

.. versionadded:: 0.3.0
"""

from __future__ import annotations

from ._prometheus import MetricError, PrometheusQuery, WebMetric
from ._scrape import Scrape

__all__ = ["MetricError", "PrometheusQuery", "Scrape", "WebMetric"]

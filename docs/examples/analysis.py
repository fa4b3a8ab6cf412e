"""A bad release caught by metric analysis, on a simulated fleet (no server needed).

The provider is a plain async function: the share of failing requests on the new version,
which this simulation makes 10 % for "v2-bad" and 0 for "v2-good". A real one would ask
Prometheus (rolling.metrics.PrometheusQuery) or scrape the instances (rolling.metrics.Scrape).
"""

from __future__ import annotations

import anyio

import rolling
from rolling.analysis import MeasureContext
from rolling.testing import Latency, SimulatedFleet

MAX_ERROR_RATIO = 0.01


async def error_ratio(context: MeasureContext) -> float | None:
    if not context.new_instances:
        return None  # no data: nothing serves the new version yet
    return 0.10 if context.target == "v2-bad" else 0.0


def analysis() -> rolling.Analysis:
    return rolling.Analysis(
        metrics=[
            rolling.Metric(
                name="error-ratio",
                provider=error_ratio,
                failure=lambda ratio: ratio > MAX_ERROR_RATIO,
                interval=10,
            )
        ],
        bake=30,
    )


async def roll(target: str) -> tuple[rolling.RolloutResult, dict[str, int]]:
    fleet = SimulatedFleet(5, latency=Latency(replace=20))
    rollout = rolling.Rollout(
        fleet,
        target,
        router=fleet,
        readiness=rolling.Readiness(check=fleet),
        analysis=analysis(),
    )
    result = await rollout.run()
    return result, fleet.version_counts()


async def main() -> None:
    for target in ("v2-bad", "v2-good"):
        result, versions = await roll(target)
        print(f"{target}: {result.status} {versions} {result.reason}")


if __name__ == "__main__":
    anyio.run(main)

"""A weighted canary and a blue-green switch on a simulated fleet (docs/canary.md).

The simulated fleet is both the driver and the weighted router, so the example runs anywhere;
with real instances, pass a real driver and ``router=Balancer(...)`` or ``HAProxyRouter(...)``.

    python docs/examples/canary.py
"""

from __future__ import annotations

import anyio

import rolling
import rolling.analysis
import rolling.testing


async def canary() -> tuple[rolling.RolloutResult, list[str]]:
    """5 %, 25 %, 50 % of the traffic to v2, a pause after each, then promotion."""
    fleet = rolling.testing.SimulatedFleet(4, version="v1")
    shifts: list[str] = []

    def observe(event: rolling.Event) -> None:
        if isinstance(event, rolling.TrafficShifted):
            shifts.append(
                f"{event.reason}: asked {event.percent:g} %, weights give {event.achieved:.1f} %"
                f" ({event.new_instances} x {event.new_weight} beside {event.old_weight})"
            )

    rollout = rolling.Rollout(
        fleet,
        "v2",
        strategy=rolling.Canary(),
        router=fleet,
        steps=[
            rolling.SetWeight(5),
            rolling.Pause(2),
            rolling.SetWeight(25),
            rolling.Pause(2),
            rolling.SetWeight(50),
            rolling.Pause(),  # until promote()
        ],
        observers=[observe],
    )
    async with rollout.start() as handle:
        # A person would look at the canary's metrics here, then decide.
        while handle.status().step != rolling.Pause():  # noqa: ASYNC110 - polling, as a person does
            await anyio.sleep(0.5)
        handle.promote()  # the last pause is over: promotion
    return handle.result, shifts


async def blue_green(*, error_ratio: float) -> rolling.RolloutResult:
    """Switch to green, watch its error ratio for a while, keep blue meanwhile."""
    fleet = rolling.testing.SimulatedFleet(4, version="v1")

    async def measure(_context: rolling.analysis.MeasureContext) -> float:
        return error_ratio  # a real provider would ask Prometheus, say

    post = rolling.Analysis(
        name="post-promotion",
        metrics=[
            rolling.Metric(
                name="error-ratio",
                provider=measure,
                failure=lambda ratio: ratio > 0.05,  # noqa: PLR2004 - the example's limit
                interval=1.0,
                count=3,
            )
        ],
    )
    strategy = rolling.BlueGreen(post_promotion=post, scale_down_delay=5)
    return await rolling.Rollout(fleet, "v2", strategy=strategy, router=fleet).run()


async def main() -> None:
    result, shifts = await canary()
    print("canary:", result.status, *shifts, sep="\n  ")
    good = await blue_green(error_ratio=0.0)
    print("blue-green, healthy green:", good.status)  # succeeded
    bad = await blue_green(error_ratio=0.2)
    print("blue-green, failing green:", bad.status, bad.reason)  # rolled_back


if __name__ == "__main__":
    anyio.run(main)

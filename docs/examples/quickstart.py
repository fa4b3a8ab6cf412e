"""Roll a simulated fleet of five instances from v1 to v2, one instance at a time."""

from __future__ import annotations

import anyio

import rolling
import rolling.testing


async def main() -> None:
    fleet = rolling.testing.SimulatedFleet(5, version="v1")
    rollout = rolling.Rollout(fleet, "v2", strategy=rolling.RollingUpdate(max_unavailable=1))
    result = await rollout.run()
    print(result.status)  # succeeded
    for instance in result.instances:
        print(instance.id, instance.old_version, "->", instance.version, instance.outcome)


if __name__ == "__main__":
    anyio.run(main)

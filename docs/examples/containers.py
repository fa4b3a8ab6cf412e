"""Roll the containers labelled app=web to a new image, through the built-in balancer.

Run it against any Docker Engine API (Docker, or `podman system service`):

    DOCKER_HOST=unix:///run/podman/podman.sock python docs/examples/containers.py web:2

It needs containers labelled app=web that publish port 8080 on the host.
"""

from __future__ import annotations

import os
import sys

import anyio

import rolling
from rolling.drivers.docker import DockerDriver, DockerInstance
from rolling.routers.balancer import Balancer


async def roll(
    url: str | None, selector: str, target: str, *, router: Balancer | None = None
) -> rolling.RolloutResult:
    """Roll the containers ``selector`` matches to the image ``target``, one at a time."""
    async with DockerDriver(selector, url=url, port=8080, grace=5, pull="if-missing") as driver:
        rollout: rolling.Rollout[DockerInstance] = rolling.Rollout(
            driver,
            target,
            strategy=rolling.RollingUpdate(max_unavailable=1),
            # The container's own HEALTHCHECK, asked of the engine.
            readiness=rolling.Readiness(
                check=driver.check, period=0.2, timeout=5, failure_threshold=3, deadline=120
            ),
            router=router,
            hooks=driver,  # checks every image before any container stops
        )
        return await rollout.run()


async def main(target: str) -> None:
    url = os.environ.get("DOCKER_HOST")
    async with DockerDriver("app=web", url=url, port=8080) as driver:
        fleet = await driver.list_instances()
    async with Balancer(port=8000) as lb:
        for instance in fleet:
            await lb.attach(instance)
        result = await roll(url, "app=web", target, router=lb)
    print(result.status.value)
    for item in result.instances:
        print(f"{item.id}: {item.version} {item.reason}")


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], backend="asyncio")  # aiodocker needs asyncio

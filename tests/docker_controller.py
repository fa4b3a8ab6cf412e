"""A controller process for tests/test_docker_driver.py: one rollout on a Docker API, journaled.

``python docker_controller.py URL APP JOURNAL TARGET SURGE`` rolls the
containers labelled ``app=APP`` to image ``TARGET`` (with ``SURGE`` extra
containers at a time, 0 for in place), on the journal ``JOURNAL``, and prints
the status. The test SIGKILLs it mid-rollout and resumes in its own process.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

import rolling
from rolling.drivers.docker import DockerDriver, DockerInstance


async def main(url: str, app: str, journal: str, target: str, surge: int) -> None:
    async with DockerDriver(f"app={app}", url=url, port=8080, grace=1) as driver:
        rollout: rolling.Rollout[DockerInstance] = rolling.Rollout(
            driver,
            target,
            strategy=rolling.RollingUpdate(max_unavailable=1, max_surge=surge),
            readiness=rolling.Readiness(check=driver.check, period=0.1, timeout=2, deadline=30),
            hooks=driver,
            journal=rolling.FileJournal(Path(journal)),
        )
        result = await rollout.run()
    print(result.status.value, flush=True)  # noqa: T201 - the status, for whoever runs it


if __name__ == "__main__":
    url, app, journal, target, surge = sys.argv[1:]
    anyio.run(main, url, app, journal, target, int(surge), backend="asyncio")

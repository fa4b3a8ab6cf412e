# Container replace latency and a 20-container rollout's make-span, on a real Podman.
#
# Podman runs with storage of its own and an API service on a temporary socket, with test
# images built offline from a static busybox (tests/podman_harness.py, shared with the tests):
# an httpd with a HEALTHCHECK. Everything goes through DockerDriver and the Docker API.
#
# 1. Replace latency: one container replaced in place, again and again, v1 <-> v2. "bare" is
#    the four API calls any in-place replace needs (stop, remove, create, start) made directly
#    with aiodocker; "driver" is DockerDriver.replace (it also inspects the container and its
#    image, checks the new image, renames the old container aside and removes it last, and
#    inspects the new one); "ready" adds the wait until driver.check() passes (Podman runs the
#    HEALTHCHECK on demand). Median and 90th percentile of --rounds replaces.
# 2. Make-span: --fleet containers rolled in place with RollingUpdate(max_unavailable=w), and
#    elastically with max_surge=w, max_unavailable=0, for w = 1 and each --windows. With w
#    identical slots no schedule beats ceil(fleet / w) * d, where d is one instance's time
#    (detach to attached, from the result) with nothing beside it: the median of the w = 1 run
#    of the same kind. At w = 1 the ratio is the engine's own gaps between instances; above it,
#    how much running w at once on one engine (and two cores) slows each of them down.
#
#     python benchmarks/container_replace.py
#     python benchmarks/container_replace.py --quick

from __future__ import annotations

import argparse
import itertools
import math
import shutil
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
from _report import command, machine, table

# The Podman the tests use, set up the same way: tests/podman_harness.py.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import aiodocker

from podman_harness import started_podman
from rolling import Readiness, RollingUpdate, Rollout, RolloutStatus
from rolling.drivers.docker import DockerDriver, DockerInstance

DESCRIPTION = "Container replace latency and a rollout's make-span against its lower bound."
V1, V2 = "localhost/rolling-test/web:v1", "localhost/rolling-test/web:v2"


def free_port() -> int:
    import socket  # noqa: PLC0415 - only here

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def make_fleet(url: str, app: str, count: int, port: int | None = None) -> None:
    client: Any = aiodocker.Docker(url=url)
    async with client:
        for n in range(count):
            config = {
                "Image": V1,
                "Labels": {"app": app},
                "HostConfig": {
                    "Init": True,
                    "PortBindings": {
                        "8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port or free_port())}]
                    },
                },
            }
            container = await client.containers.create(config=config, name=f"{app}-{n}")
            await container.start()


async def wait_ready(driver: DockerDriver, instance: DockerInstance) -> None:
    while not (await driver.check(instance)).healthy:  # noqa: ASYNC110 - a real container
        await anyio.sleep(0.02)


async def wait_port(port: int) -> None:
    """Wait until the container publishing ``port`` answers HTTP (not timed)."""
    while True:
        try:
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                await stream.send(b"GET / HTTP/1.0\r\n\r\n")
                if (await stream.receive()).startswith(b"HTTP/"):
                    return
        except (OSError, anyio.EndOfStream, anyio.BrokenResourceError):
            pass
        await anyio.sleep(0.02)


async def bare_replace(client: Any, name: str, image: str, port: int) -> list[float]:
    """Replace ``name`` with the four calls any in-place replace needs; each call's seconds."""
    marks = [time.perf_counter()]
    container = client.containers.container(name)
    await container.stop(t=2)
    marks.append(time.perf_counter())
    await container.delete(force=True)
    marks.append(time.perf_counter())
    config = {
        "Image": image,
        "Labels": {"app": "bare"},
        "HostConfig": {
            "Init": True,
            "PortBindings": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]},
        },
    }
    new = await client.containers.create(config=config, name=name)
    marks.append(time.perf_counter())
    await new.start()
    marks.append(time.perf_counter())
    return [b - a for a, b in itertools.pairwise(marks)]


def summary(values: Sequence[float]) -> tuple[str, str]:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, math.ceil(0.9 * len(ordered)) - 1)]
    return f"{statistics.median(ordered) * 1000:.0f}", f"{p90 * 1000:.0f}"


async def latency(url: str, rounds: int) -> list[list[str]]:
    app = f"b{uuid.uuid4().hex[:6]}"
    await make_fleet(url, app, 1)
    steps: list[list[float]] = []
    replace: list[float] = []
    ready: list[float] = []
    async with DockerDriver(f"app={app}", url=url, port=8080, grace=2) as driver:
        (instance,) = await driver.list_instances()
        await wait_ready(driver, instance)
        for k in range(rounds):
            started = time.perf_counter()
            instance = await driver.replace(instance, V2 if k % 2 == 0 else V1)
            replaced = time.perf_counter()
            await wait_ready(driver, instance)
            replace.append(replaced - started)
            ready.append(time.perf_counter() - started)
        await driver.terminate(instance)
    client: Any = aiodocker.Docker(url=url)
    async with client:
        port = free_port()
        await make_fleet(url, "bare", 1, port)
        await wait_port(port)
        for k in range(rounds):
            steps.append(await bare_replace(client, "bare-0", V2 if k % 2 == 0 else V1, port))
            # Serving before the next stop, as the driver's container is (a signal that comes
            # before the program has started may be lost, and the stop then waits its grace).
            await wait_port(port)
        await client.containers.container("bare-0").delete(force=True)
    names = ["stop (SIGTERM, exits at once)", "remove", "create", "start"]
    return [
        *([f"bare: {name}", *summary([s[i] for s in steps])] for i, name in enumerate(names)),
        ["bare: stop + remove + create + start", *summary([sum(s) for s in steps])],
        ["driver: DockerDriver.replace", *summary(replace)],
        ["driver + ready: replace, then check() passes", *summary(ready)],
    ]


async def makespan(url: str, fleet: int, window: int, *, surge: bool) -> tuple[float, float]:
    """Roll ``fleet`` containers with a window of ``window``: make-span and median unit time."""
    app = f"m{uuid.uuid4().hex[:6]}"
    await make_fleet(url, app, fleet)
    async with DockerDriver(f"app={app}", url=url, port=8080, grace=2) as driver:
        for instance in await driver.list_instances():
            await wait_ready(driver, instance)
        strategy = (
            RollingUpdate(max_unavailable=0, max_surge=window)
            if surge
            else RollingUpdate(max_unavailable=window)
        )
        rollout: Rollout[DockerInstance] = Rollout(
            driver,
            V2,
            strategy=strategy,
            readiness=Readiness(check=driver.check, period=0.05, timeout=5, deadline=60),
            hooks=driver,
        )
        started = time.perf_counter()
        result = await rollout.run()
        took = time.perf_counter() - started
        for instance in await driver.list_instances():
            await driver.terminate(instance)
    if result.status is not RolloutStatus.SUCCEEDED:
        raise RuntimeError(f"the rollout did not succeed: {result}")
    units = [
        i.finished_at - i.started_at
        for i in result.instances
        if i.finished_at is not None and i.started_at is not None
    ]
    return took, statistics.median(units)


async def run(args: argparse.Namespace) -> None:
    with started_podman(["v1", "v2"]) as (_podman, url):
        rows = await latency(url, args.rounds)
        print(table("Replace latency, one container (ms)", ["step", "median", "p90"], rows))
        spans: list[list[str]] = []
        for surge in (False, True):
            unit = 0.0
            for window in sorted(set(args.windows) | {1}):
                took, median = await makespan(url, args.fleet, window, surge=surge)
                if window == 1:
                    unit = median  # d: one instance's time, measured with nothing beside it
                bound = math.ceil(args.fleet / window) * unit
                kind = f"max_surge={window}" if surge else f"max_unavailable={window}"
                spans.append(
                    [kind, f"{median:.2f}", f"{took:.1f}", f"{bound:.1f}", f"{took / bound:.2f}"]
                )
        header = ["strategy", "median unit s", "make-span s", "bound s", "ratio"]
        print(table(f"Make-span of {args.fleet} containers", header, spans))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--rounds", type=int, default=20, help="replaces timed (default 20)")
    parser.add_argument("--fleet", type=int, default=20, help="containers rolled (default 20)")
    parser.add_argument(
        "--windows", type=int, nargs="+", default=[4], help="windows w besides 1 (default 4)"
    )
    parser.add_argument("--quick", action="store_true", help="5 rounds, 8 containers")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.fleet = 5, 8
    if shutil.which("podman") is None:
        print("container_replace: skipped, podman is not installed (see docs/containers.md)")
        return 0
    print(DESCRIPTION)
    print(machine())
    print(command())
    anyio.run(run, args, backend="asyncio")
    return 0


if __name__ == "__main__":
    sys.exit(main())

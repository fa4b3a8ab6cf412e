"""A fleet of demo-app processes behind a weighted router, with load through it.

For the canary and blue-green end-to-end tests and ``benchmarks/canary_shares.py``: no
pytest fixtures, plain functions and an async context manager::

    async with staged("haproxy", tmp_path) as stage:
        result = await stage.rollout(BlueGreen(scale_down_delay=2)).run()
        print(share(stage.ok_since(result.started_at)))

Every app answers with the version it runs (``X-Version``); the load generator sends one
request per connection through the router for as long as the block runs and keeps every
answer. HAProxy needs a ``server`` line for every instance the process driver may launch
(ids ``p-0``, ``p-1``, ...): the fleet's own lines, then spare ones in maintenance
(``disabled``), whose address the router sets on attach.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio
import attrs

from haproxy_harness import render_config, running_haproxy
from helpers import LOOPBACK, alive, free_port
from rolling import BlueGreen, Canary, FailurePolicy, Readiness, Rollout
from rolling.checks import HTTPCheck
from rolling.demo import app
from rolling.demo._load import LoadGenerator, Sample
from rolling.drivers.process import ProcessDriver, ProcessInstance
from rolling.events import Event
from rolling.routers.balancer import Balancer
from rolling.typing import WeightedRouter

__all__ = ["ROUTERS", "SIZE", "Stage", "app_processes", "share", "staged"]

E = TypeVar("E", bound=Event)

SIZE = 4
"""Instances in the fleet."""
APP = "rolling.demo.app"
WAIT = 60.0
"""Seconds a test waits for an event or for answers before it fails."""


def command(version: str, port: int) -> Sequence[str]:
    # No added latency: the more requests a second, the sooner each step has its count.
    return app.command(version, port, latency_ms=0.0, python=sys.executable)


@attrs.define(eq=False)
class Stage:
    """A fleet of ``SIZE`` v1 processes behind a weighted router, and load through it."""

    driver: ProcessDriver
    router: WeightedRouter[Any]
    load: LoadGenerator
    fleet: list[ProcessInstance]
    check: HTTPCheck
    events: list[Event] = attrs.field(factory=list[Event])

    def rollout(self, strategy: Canary | BlueGreen, **options: Any) -> Rollout[ProcessInstance]:
        return Rollout(
            self.driver,
            "v2",
            strategy=strategy,
            router=self.router,
            readiness=Readiness(check=self.check, period=0.1, timeout=1.0, deadline=15.0),
            failure=FailurePolicy(max_failed=0),
            observers=[self.events.append],
            effect_timeout=60.0,
            **options,
        )

    def of_type(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]

    def ok_since(self, start: float) -> list[Sample]:
        return [s for s in self.load.samples if s.ok and s.at >= start]

    def failed(self) -> list[Sample]:
        return [s for s in self.load.samples if not s.ok]

    async def wait_for(self, kind: type[Event], count: int = 1) -> Any:
        """The ``count``-th event of ``kind``, once there is one."""
        with anyio.fail_after(WAIT):
            while len(self.of_type(kind)) < count:  # noqa: ASYNC110 - observers are plain calls
                await anyio.sleep(0.02)
        return self.of_type(kind)[count - 1]

    async def answers(self, start: float, count: int) -> list[Sample]:
        """Wait until ``count`` good answers started after ``start``; those answers."""
        with anyio.fail_after(WAIT):
            while len(self.ok_since(start)) < count:  # noqa: ASYNC110 - the load runs beside
                await anyio.sleep(0.05)
        return self.ok_since(start)


async def _wait_healthy(check: HTTPCheck, instance: ProcessInstance) -> None:
    with anyio.fail_after(30):
        while not (await check.check(instance)).healthy:  # noqa: ASYNC110 - a real process
            await anyio.sleep(0.05)


@contextlib.asynccontextmanager
async def balancer_for(
    fleet: list[ProcessInstance], _directory: Path, _check: HTTPCheck
) -> AsyncGenerator[tuple[WeightedRouter[Any], tuple[str, int]]]:
    async with Balancer(drain_timeout=10.0) as balancer:
        for instance in fleet:
            await balancer.attach(instance)
        yield balancer, (balancer.host, balancer.port)


def haproxy_config(directory: Path, port: int, fleet: Sequence[ProcessInstance]) -> str:
    """The harness's configuration, plus spare servers for every id the driver may launch."""
    servers = [(i.id, i.host, i.port) for i in fleet]
    text = render_config(
        socket_path=directory / "admin.sock", frontend=(LOOPBACK, port), servers=servers
    )
    # The backend is the last section: spare lines go at its end. Port 9 (discard) is never
    # used: a disabled server is in maintenance and the router sets its address on attach.
    spares = [f"    server p-{n} {LOOPBACK}:9 disabled" for n in range(len(fleet), 4 * len(fleet))]
    return text + "\n".join(spares) + "\n"


@contextlib.asynccontextmanager
async def haproxy_for(
    fleet: list[ProcessInstance], directory: Path, check: HTTPCheck
) -> AsyncGenerator[tuple[WeightedRouter[Any], tuple[str, int]]]:
    port = free_port()
    servers = [(i.id, i.host, i.port) for i in fleet]
    config = haproxy_config(directory, port, fleet)
    async with running_haproxy(directory, servers, config=config, frontend_port=port) as haproxy:
        yield haproxy.router(check=check, drain_timeout=10.0, up_timeout=10.0), haproxy.frontend


ROUTERS = {"balancer": balancer_for, "haproxy": haproxy_for}


@contextlib.asynccontextmanager
async def staged(
    kind: str, directory: Path, *, size: int = SIZE, clients: int = 8
) -> AsyncGenerator[Stage]:
    """``size`` v1 processes behind ``kind`` (a key of :data:`ROUTERS`), load through it.

    Logs and HAProxy's files go under ``directory``; ``clients`` load workers.
    """
    check = HTTPCheck("/healthz", timeout=0.8)
    async with ProcessDriver(command, grace=5.0, log_dir=directory / "logs") as driver:
        fleet = await driver.spawn(size, "v1")
        async with anyio.create_task_group() as tg:
            for instance in fleet:
                tg.start_soon(_wait_healthy, check, instance)
        async with ROUTERS[kind](fleet, directory / kind, check) as (router, frontend):
            load = LoadGenerator(*frontend, concurrency=clients, timeout=5.0, max_seconds=180)
            stage = Stage(driver=driver, router=router, load=load, fleet=fleet, check=check)
            async with anyio.create_task_group() as traffic:
                traffic.start_soon(load.run)
                await stage.answers(0.0, 20)  # the load flows before anything changes
                yield stage
                load.stop()


def share(samples: Sequence[Sample]) -> tuple[float, int, int]:
    """The percentage of v2 answers, the v2 count, the total."""
    new = sum(1 for s in samples if s.version == "v2")
    return 100.0 * new / len(samples), new, len(samples)


def app_processes() -> set[int]:
    """Pids of the demo apps this test process started (its children running the app)."""
    me = str(os.getpid())
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if parent == me and APP.encode() in cmdline and alive(int(entry.name)):
            found.add(int(entry.name))
    return found

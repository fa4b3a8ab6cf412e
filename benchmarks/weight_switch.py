# The blue-green switch by weights, on the built-in Balancer and on a real HAProxy.
#
# Two sets of N backends each (old and new) sit behind the router, old at FULL_WEIGHT, new at
# 0. A steady load of --clients HTTP clients (one request per connection, back to back) runs
# through the router. The switch is what the engine does: set_weight(new, FULL_WEIGHT) for
# every new instance, then set_weight(old, 0) for every old one (the calls of one set run
# concurrently; the second set starts once the first is done). Switching back is the reverse.
#
# Every backend notes when each request reaches it. Figures per switch, counted from t0, the
# moment the first set_weight call of the switch starts:
#   calls ms     until the last set_weight call returned;
#   last old ms  until the last request that reached the set switched away from (0 when none
#                came after t0): after it, the old set gets no new connection;
#   both ms      how long both sets received requests side by side (first request on the new
#                set to last on the old);
#   failed       requests that did not get a 200, over the whole run.
# The goal (issue 12) is "last old" under 1 s on HAProxy.
#
#     python benchmarks/weight_switch.py
#     python benchmarks/weight_switch.py --quick

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import attrs
from _report import command, machine, table, verdict
from anyio.streams.buffered import BufferedByteReceiveStream

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from haproxy_harness import http_get, require_haproxy, running_haproxy
from rolling.routers.balancer import Balancer
from rolling.typing import FULL_WEIGHT, WeightedRouter

DESCRIPTION = "Blue-green switch by weights: time until the old set gets no new request"
LOOPBACK = "127.0.0.1"
GOAL = 1.0


@attrs.define(eq=False)
class Backend:
    """An HTTP backend that answers its name and notes when each request arrives."""

    id: str
    host: str = LOOPBACK
    port: int = 0
    arrivals: list[float] = attrs.field(factory=list[float])

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        listener = await anyio.create_tcp_listener(local_host=self.host, local_port=0)
        async with listener:
            self.port = int(listener.extra(anyio.abc.SocketAttribute.local_port))  # noqa: S610 - anyio's typed attributes
            task_status.started()
            await listener.serve(self._handle)

    async def _handle(self, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            reader = BufferedByteReceiveStream(stream)
            try:
                head = await reader.receive_until(b"\r\n\r\n", 65536)
            except (anyio.IncompleteRead, anyio.DelimiterNotFound, anyio.BrokenResourceError):
                return
            if b" /healthz " not in head.split(b"\r\n", 1)[0]:
                self.arrivals.append(time.monotonic())
            body = self.id.encode()
            with contextlib.suppress(anyio.BrokenResourceError, OSError):
                await stream.send(
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                    % (len(body), body)
                )


@attrs.define
class Load:
    """Steady clients through the router's frontend."""

    frontend: tuple[str, int]
    total: int = 0
    failed: int = 0

    async def run(self, clients: int) -> None:
        async with anyio.create_task_group() as task_group:
            for _ in range(clients):
                task_group.start_soon(self._client)

    async def _client(self) -> None:
        while True:
            status, _body = await http_get(*self.frontend)
            self.total += 1
            self.failed += status != 200  # noqa: PLR2004 - HTTP OK


async def switch(
    router: WeightedRouter[Any], raise_set: list[Backend], zero_set: list[Backend], settle: float
) -> tuple[float, float, float]:
    """One switch to ``raise_set``; (calls, last old, both) in seconds from t0."""
    t0 = time.monotonic()
    async with anyio.create_task_group() as task_group:
        for backend in raise_set:
            task_group.start_soon(router.set_weight, backend, FULL_WEIGHT)
    async with anyio.create_task_group() as task_group:
        for backend in zero_set:
            task_group.start_soon(router.set_weight, backend, 0)
    calls = time.monotonic() - t0
    await anyio.sleep(settle)  # long enough for any straggler to show up
    old = [t for backend in zero_set for t in backend.arrivals if t >= t0]
    new = [t for backend in raise_set for t in backend.arrivals if t >= t0]
    last_old = max(old, default=t0) - t0
    both = max(0.0, max(old, default=t0) - min(new, default=t0))
    return calls, last_old, both


@contextlib.asynccontextmanager
async def balancer_router(
    backends: list[Backend], _directory: Path
) -> AsyncGenerator[tuple[WeightedRouter[Any], tuple[str, int]]]:
    async with Balancer() as lb:
        for backend in backends:
            await lb.attach(backend)
        yield lb, (LOOPBACK, lb.port)


@contextlib.asynccontextmanager
async def haproxy_router(
    backends: list[Backend], directory: Path
) -> AsyncGenerator[tuple[WeightedRouter[Any], tuple[str, int]]]:
    servers = [(backend.id, backend.host, backend.port) for backend in backends]
    async with running_haproxy(directory, servers) as haproxy:
        yield haproxy.router(), haproxy.frontend


Routers = Callable[
    [list[Backend], Path],
    contextlib.AbstractAsyncContextManager[tuple[WeightedRouter[Any], tuple[str, int]]],
]


async def measure(name: str, routers: Routers, size: int, args: argparse.Namespace) -> list[str]:
    old = [Backend(f"blue{i}") for i in range(size)]
    new = [Backend(f"green{i}") for i in range(size)]
    with tempfile.TemporaryDirectory(prefix=f"weight-switch-{name}-") as directory:
        async with anyio.create_task_group() as servers:
            for backend in old + new:
                await servers.start(backend.serve)
            async with routers(old + new, Path(directory)) as (router, frontend):
                for backend in new:
                    await router.set_weight(backend, 0)
                load = Load(frontend)
                started = time.monotonic()
                async with anyio.create_task_group() as clients:
                    clients.start_soon(load.run, args.clients)
                    await anyio.sleep(args.settle)
                    there: list[tuple[float, float, float]] = []
                    back: list[tuple[float, float, float]] = []
                    for _ in range(args.rounds):  # alternate, so every switch changes sets
                        there.append(await switch(router, new, old, args.settle))
                        back.append(await switch(router, old, new, args.settle))
                    clients.cancel_scope.cancel()
                rate = load.total / (time.monotonic() - started)
            servers.cancel_scope.cancel()
    rows: list[str] = [name, str(size)]
    for results in (there, back):
        calls, last_old, both = (max(r[i] for r in results) for i in range(3))
        rows += [
            f"{1000 * statistics.median(r[0] for r in results):.1f}/{1000 * calls:.1f}",
            f"{1000 * statistics.median(r[1] for r in results):.1f}/{1000 * last_old:.1f}",
            f"{1000 * both:.1f}",
        ]
    worst = max(r[1] for r in there + back)
    rows += [f"{rate:.0f}", f"{load.failed}/{load.total}", verdict(met=worst < GOAL)]
    return rows


async def run(args: argparse.Namespace) -> None:
    header = [
        "router",
        "N",
        "switch calls ms",
        "switch last old ms",
        "switch both ms",
        "back calls ms",
        "back last old ms",
        "back both ms",
        "requests/s",
        "failed/requests",
        "< 1 s",
    ]
    chosen: list[tuple[str, Routers]] = [("balancer", balancer_router)]
    if args.haproxy:
        chosen.append(("haproxy", haproxy_router))
    rows = [
        await measure(name, routers, size, args) for name, routers in chosen for size in args.sizes
    ]
    print(
        table(
            f"Switch by weights, {args.rounds} switches each way (alternating), "
            f"{args.clients} clients "
            "(median/worst; 'both' is the worst)",
            header,
            rows,
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2, 5, 10], help="N per set")
    parser.add_argument("--clients", type=int, default=8, help="steady clients (default 8)")
    parser.add_argument("--rounds", type=int, default=5, help="switches each way (default 5)")
    parser.add_argument("--settle", type=float, default=0.5, help="seconds after each switch")
    parser.add_argument("--quick", action="store_true", help="N = 2 and 5, 2 rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.rounds = [2, 5], 2
    args.haproxy = True
    try:
        require_haproxy()
    except BaseException:  # noqa: BLE001 - pytest's skip outcome: no haproxy here
        print("weight_switch: haproxy is not installed, measuring the balancer only")
        args.haproxy = False
    print(DESCRIPTION)
    print(machine())
    print(command())
    anyio.run(run, args, backend="asyncio")
    return 0


if __name__ == "__main__":
    sys.exit(main())

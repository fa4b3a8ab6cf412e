# What accepting without `loop.sock_accept` costs: connections accepted per second.
#
# The built-in Balancer and the demo app accept through rolling.routers._accept.accept (wait
# until the listening socket is readable, then a non-blocking accept(), then anyio's
# SocketStream.from_socket), because anyio's SocketListener.accept() awaits asyncio's
# sock_accept, which on CPython 3.11 can lose a connection when the accept is cancelled
# (python/cpython#153761; tests/test_accept.py shows it). This times both ways on loopback:
# --connections connections from --clients concurrent clients, each connecting and closing,
# while one task accepts and closes; the median of --rounds rounds, each in a fresh loop.
#
#     python benchmarks/accept_rate.py
#     python benchmarks/accept_rate.py --quick

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc
from _report import command, machine, table

from rolling.routers._accept import accept, socket_listeners

DESCRIPTION = "Connections accepted per second: anyio's accept() and rolling's"


async def _round(
    take: Callable[[anyio.abc.SocketListener], Awaitable[anyio.abc.SocketStream]],
    connections: int,
    clients: int,
) -> float:
    """Connections per second through ``take``, one round."""
    (listener,) = socket_listeners(await anyio.create_tcp_listener(local_host="127.0.0.1"))
    port: int = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 - anyio's typed attributes, not Django
    limit = anyio.Semaphore(clients)

    async def server() -> None:
        for _ in range(connections):
            await (await take(listener)).aclose()

    async def client() -> None:
        async with limit:
            await (await anyio.connect_tcp("127.0.0.1", port)).aclose()

    started = time.perf_counter()
    async with listener, anyio.create_task_group() as group:
        group.start_soon(server)
        for _ in range(connections):
            group.start_soon(client)
    return connections / (time.perf_counter() - started)


async def _anyio_accept(listener: anyio.abc.SocketListener) -> anyio.abc.SocketStream:
    return await listener.accept()


def main() -> None:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1,000 connections, 3 rounds")
    args = parser.parse_args()
    if args.quick:
        args.connections, args.rounds = 1000, 3
    rows = []
    for backend in ("asyncio", "trio"):
        rates: dict[str, list[float]] = {"anyio": [], "rolling": []}
        for _ in range(args.rounds):
            # Alternated, so that a change of load on the machine falls on both.
            for name, take in (("anyio", _anyio_accept), ("rolling", accept)):
                rate = anyio.run(_round, take, args.connections, args.clients, backend=backend)
                rates[name].append(rate)
        theirs, ours = (statistics.median(rates[n]) for n in ("anyio", "rolling"))
        rows.append([backend, f"{theirs:,.0f}", f"{ours:,.0f}", f"{ours / theirs:.2f}x"])
    print(machine())
    print(command())
    print(
        table(
            f"{DESCRIPTION} ({args.connections:,} connections, {args.clients} clients,"
            f" median of {args.rounds})",
            ["backend", "anyio accept()/s", "rolling accept()/s", "rolling / anyio"],
            rows,
        )
    )


if __name__ == "__main__":
    main()

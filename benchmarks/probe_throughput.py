# Health-check throughput: concurrent HTTP readiness probes of many real loopback endpoints.
#
# A server process listens on N ports of 127.0.0.1 (500 by default), each answering any request
# with "HTTP/1.1 200 OK" and closing (asyncio protocols, so the server side stays cheap). This
# process then keeps one probe in flight per endpoint, for a few seconds, with
# rolling.checks.HTTPCheck("/healthz"): every probe opens a fresh connection, sends a GET and
# reads the answer, as readiness probing does. Reported: probes per second, latency, failures.
#
# The file-descriptor soft limit is raised to the hard limit in both processes (each probe holds
# one socket; the server holds N listeners plus one socket per connection).
#
#     python benchmarks/probe_throughput.py
#     python benchmarks/probe_throughput.py --endpoints 1000 --seconds 5 --backends asyncio

from __future__ import annotations

import argparse
import asyncio
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import NamedTuple

import anyio
from _report import command, machine, table, verdict

from rolling.checks import HTTPCheck

GOAL_ENDPOINTS = 500
DESCRIPTION = "Probes per second of HTTPCheck against many loopback endpoints."
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Healthz(asyncio.Protocol):
    """Answer 200 to whatever request head arrives, then close."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.received = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # noqa: S101 - TCP only
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received += data
        if b"\r\n\r\n" in self.received and self.transport is not None:
            self.transport.write(RESPONSE)
            self.transport.close()


async def serve(count: int) -> None:
    loop = asyncio.get_running_loop()
    servers = [
        await loop.create_server(Healthz, "127.0.0.1", 0, backlog=1024) for _ in range(count)
    ]
    ports = [server.sockets[0].getsockname()[1] for server in servers]
    print(json.dumps(ports), flush=True)
    # Serve until the parent closes our stdin.
    await loop.run_in_executor(None, sys.stdin.read)
    for server in servers:
        server.close()


class Figures(NamedTuple):
    probes: int
    elapsed: float
    failures: dict[str, int]
    median: float
    p99: float


class Endpoint:
    __slots__ = ("host", "id", "port", "version")

    def __init__(self, port: int) -> None:
        self.id = f"127.0.0.1:{port}"
        self.version = "v1"
        self.host = "127.0.0.1"
        self.port = port


async def probe_all(ports: Sequence[int], seconds: float) -> Figures:
    check = HTTPCheck("/healthz", timeout=5.0)
    latencies: list[float] = []
    failures: dict[str, int] = {}
    deadline = time.perf_counter() + seconds

    async def keep_probing(endpoint: Endpoint) -> None:
        while (started := time.perf_counter()) < deadline:
            result = await check.check(endpoint)
            latencies.append(time.perf_counter() - started)
            if not result.healthy:
                failures[result.reason] = failures.get(result.reason, 0) + 1

    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for port in ports:
            tg.start_soon(keep_probing, Endpoint(port))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return Figures(
        probes=len(latencies),
        elapsed=elapsed,
        failures=failures,
        median=statistics.median(latencies),
        p99=latencies[min(len(latencies) - 1, math.ceil(len(latencies) * 0.99) - 1)],
    )


def run(args: argparse.Namespace) -> int:
    limit = raise_fd_limit()
    print(f"Probe throughput: HTTPCheck, one probe in flight per endpoint, {args.seconds} s")
    print(f"machine: {machine()}")
    print(f"command: {command()}")
    print(f"file descriptors: soft limit {limit}")
    server = subprocess.Popen(  # noqa: S603 - our own script
        [sys.executable, __file__, "--serve", str(args.endpoints)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None  # noqa: S101 - piped above
        ports = json.loads(server.stdout.readline())
        rows: list[list[object]] = []
        missed = False
        for backend in args.backends:
            print(f"  probing {len(ports)} endpoints on {backend} ...", flush=True)
            cpu = time.process_time()
            figures = anyio.run(probe_all, ports, args.seconds, backend=backend)
            cpu = time.process_time() - cpu
            rate = figures.probes / figures.elapsed
            failed = sum(figures.failures.values())
            met = len(ports) >= GOAL_ENDPOINTS and failed == 0
            missed |= not met
            rows.append(
                [
                    backend,
                    len(ports),
                    figures.probes,
                    failed,
                    f"{rate:,.0f}",
                    f"{cpu / figures.probes * 1e6:.0f}",
                    f"{figures.median * 1000:.1f}",
                    f"{figures.p99 * 1000:.1f}",
                    verdict(met=met),
                ]
            )
            if figures.failures:
                print(f"    failures: {figures.failures}")
    finally:
        if server.stdin is not None:
            server.stdin.close()
        server.wait(timeout=30)
    header = [
        "backend",
        "endpoints",
        "probes",
        "failed",
        "probes/s",
        "prober CPU µs/probe",
        "median ms",
        "p99 ms",
        f">= {GOAL_ENDPOINTS} endpoints, no failure",
    ]
    print(table("HTTP readiness probes against real loopback endpoints", header, rows))
    return 1 if missed and args.strict else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--endpoints", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--backends", nargs="+", default=["asyncio", "trio"])
    parser.add_argument("--quick", action="store_true", help="probe for 1 s per backend")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        raise_fd_limit()
        asyncio.run(serve(args.serve))
        return 0
    if args.quick:
        args.seconds = 1.0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())

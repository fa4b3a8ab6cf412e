# Health-check throughput: concurrent HTTP readiness probes of many real loopback endpoints,
# HTTPCheck's connection before and after it connects IP literals directly, beside aiohttp and
# httpx doing the same GET.
#
# A server process listens on N ports of 127.0.0.1 (500 by default), each answering any request
# with "HTTP/1.1 200 OK" and closing (a bare epoll loop, so the server's core is not what limits
# the clients: its CPU per connection is shown, and is a fifth of the cheapest client's or less).
# This process then keeps one probe in flight per endpoint, for a few seconds, with each client:
#
#   HTTPCheck, connect_tcp   rolling.checks.HTTPCheck("/healthz") with its connection opened by
#                            anyio.connect_tcp, as it was before it connected IP literals itself
#                            (Happy Eyeballs: a task group, a task, an event and a timer a probe)
#   HTTPCheck                rolling.checks.HTTPCheck("/healthz") as it is: an IP literal is
#                            connected directly and read and written on the bare socket
#   aiohttp                  one ClientSession, TCPConnector(force_close=True, limit=0): asyncio
#   httpx                    one AsyncClient, no keep-alive connections: asyncio and trio
#
# Every client does what a readiness probe does: one GET per fresh connection (no connection is
# reused; each request says "Connection: close"), the same 5 s timeout, the same concurrency (one
# request in flight per endpoint), healthy when the status is 200. Reported per client: probes
# per second, the prober's CPU per probe, latency and failures, the median of --rounds rounds
# (each round runs every row, in alternating order), and HTTPCheck's ratio after / before.
#
# Every probe leaves a socket in TIME_WAIT for 60 s (Linux), most of them on the server's ports
# (it closes first). Thousands of them left by one row slow the next (SYNs that meet an old
# 4-tuple, fuller hash tables), so before each row this waits, at most --settle seconds, until
# no TIME_WAIT socket on the server's ports is left or 70 s have passed since the last row (by
# then every one of its sockets has expired, on either side), and prints how many there were
# (read from /proc/net/tcp and tcp6). Request loops are bounded in time (--seconds) and count
# (--max-probes); every address is 127.0.0.1.
#
# The file-descriptor soft limit is raised to the hard limit in both processes (each probe holds
# one socket; the server holds N listeners plus one socket per connection).
#
#     python benchmarks/probe_throughput.py
#     python benchmarks/probe_throughput.py --rounds 1 --clients httpcheck httpcheck-connect-tcp
#     python benchmarks/probe_throughput.py --endpoints 1000 --seconds 5 --backends asyncio

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import math
import os
import resource
import select
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Generator, Sequence
from pathlib import Path
from typing import NamedTuple

import anyio
import anyio.abc
from _report import command, machine, table, verdict

from rolling.checks import HTTPCheck, _http

GOAL_ENDPOINTS = 500
GOAL_RATIO = 1.5
DESCRIPTION = "Probes per second of HTTPCheck (before and after), aiohttp and httpx, loopback."
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
TIMEOUT = 5.0
TIME_WAIT = "06"  # the state's code in /proc/net/tcp
TIME_WAIT_SECONDS = 70  # Linux keeps them 60 s (TCP_TIMEWAIT_LEN), plus its timers' slack

Probe = Callable[[int], Awaitable[str | None]]
"""Probes the endpoint on a port of 127.0.0.1; returns None when healthy, else a reason."""
Client = Callable[[], contextlib.AbstractAsyncContextManager[Probe]]


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# -- the server -----------------------------------------------------------------------------


def serve(count: int) -> None:
    """Answer 200 to whatever request head arrives on ``count`` ports, then close.

    A bare epoll loop rather than asyncio: per connection it makes the system calls and
    little else, so the server's core is not what limits the clients being measured.
    """
    listeners: dict[int, socket.socket] = {}
    for _ in range(count):
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1024)
        listener.setblocking(False)  # noqa: FBT003 - the stdlib's positional flag
        listeners[listener.fileno()] = listener
    ports = [listener.getsockname()[1] for listener in listeners.values()]
    print(json.dumps(ports), flush=True)
    poll = select.epoll()
    for fd in listeners:
        poll.register(fd, select.EPOLLIN)
    poll.register(sys.stdin.fileno(), select.EPOLLIN)  # the parent closes it when done
    connections: dict[int, tuple[socket.socket, bytearray]] = {}
    while True:
        for fd, _events in poll.poll():
            if fd == sys.stdin.fileno():
                return
            if fd in listeners:
                accept_all(listeners[fd], poll, connections)
            else:
                answer(fd, poll, connections)


def accept_all(
    listener: socket.socket,
    poll: select.epoll,
    connections: dict[int, tuple[socket.socket, bytearray]],
) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return
        conn.setblocking(False)  # noqa: FBT003 - the stdlib's positional flag
        connections[conn.fileno()] = (conn, bytearray())
        poll.register(conn.fileno(), select.EPOLLIN)


def answer(
    fd: int, poll: select.epoll, connections: dict[int, tuple[socket.socket, bytearray]]
) -> None:
    conn, received = connections[fd]
    try:
        data = conn.recv(65536)
    except BlockingIOError:
        return
    except OSError:
        data = b""
    received += data
    if data and b"\r\n\r\n" not in received:
        return  # the head is not complete yet
    poll.unregister(fd)
    del connections[fd]
    if data:
        # 67 bytes into a fresh socket's empty send buffer: sent whole, without blocking.
        with contextlib.suppress(OSError):
            conn.send(RESPONSE)
    conn.close()


# -- TIME_WAIT ------------------------------------------------------------------------------


def time_wait_count(ports: Collection[int]) -> tuple[int, int]:
    """Sockets in TIME_WAIT with one of ``ports`` as their local port, and as their peer's.

    The first are the server's: it closes first, so most of a row's end up there. The second
    are clients' that closed first, mixed with other programs' connections whose ephemeral
    port happens to be one of ``ports`` (on a busy machine, hundreds).
    """
    local = remote = 0
    for table_path in (Path("/proc/net/tcp"), Path("/proc/net/tcp6")):
        if not table_path.exists():
            continue
        for line in table_path.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != TIME_WAIT:
                continue
            mine, peer = (int(f.rsplit(":", 1)[1], 16) for f in fields[1:3])
            local += mine in ports
            remote += peer in ports and mine not in ports
    return local, remote


def settle(ports: Collection[int], limit: float, last_row_ended: float | None) -> str:
    """Wait until the server's TIME_WAIT sockets are gone, at most ``limit`` seconds.

    The wait also ends once every TIME_WAIT socket of the last row, on either side, has
    expired: Linux keeps them for 60 s (a constant of the kernel), give or take the slack of
    its timers.
    """
    started = time.monotonic()
    first, first_remote = time_wait_count(ports)
    left = first
    while left and time.monotonic() - started < limit:
        if last_row_ended is not None and time.monotonic() - last_row_ended > TIME_WAIT_SECONDS:
            break
        time.sleep(1.0)
        left, _ = time_wait_count(ports)
    waited = time.monotonic() - started
    return (
        f"{first} in TIME_WAIT on the server's ports, {first_remote} with one as the peer's;"
        f" waited {waited:.0f} s, {left} left"
    )


# -- the clients ----------------------------------------------------------------------------


async def connect_tcp(host: str, port: int) -> anyio.abc.SocketStream:
    """HTTPCheck's connection as it was before: anyio.connect_tcp for every host."""
    return await anyio.connect_tcp(host, port)


@contextlib.contextmanager
def connect_tcp_in_httpcheck() -> Generator[None]:
    # The one place HTTPCheck opens its connection, swapped for the old way for this row only:
    # everything else (request, parsing, timeout, close) is the same code.
    direct = _http.connect
    _http.connect = connect_tcp
    try:
        yield
    finally:
        _http.connect = direct


@contextlib.asynccontextmanager
async def httpcheck() -> AsyncIterator[Probe]:
    check = HTTPCheck("/healthz", timeout=TIMEOUT)

    async def probe(port: int) -> str | None:
        result = await check.check(Endpoint(port))
        return None if result.healthy else result.reason

    yield probe


@contextlib.asynccontextmanager
async def httpcheck_connect_tcp() -> AsyncIterator[Probe]:
    with connect_tcp_in_httpcheck():
        async with httpcheck() as probe:
            yield probe


@contextlib.asynccontextmanager
async def aiohttp_client() -> AsyncIterator[Probe]:
    import aiohttp  # noqa: PLC0415 - only this row needs it (installed by `nox -s bench`)

    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def probe(port: int) -> str | None:
            try:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                    return None if response.status == 200 else f"HTTP {response.status}"  # noqa: PLR2004 - OK
            except (aiohttp.ClientError, TimeoutError) as exc:
                return type(exc).__name__

        yield probe


@contextlib.asynccontextmanager
async def httpx_client() -> AsyncIterator[Probe]:
    import httpx  # noqa: PLC0415 - only these rows need it (installed by `nox -s bench`)

    # No keep-alive connection is kept, so every request opens a fresh one; trust_env=False so
    # no proxy from the environment stands between the client and the endpoint.
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
    async with httpx.AsyncClient(
        limits=limits, timeout=TIMEOUT, trust_env=False, headers={"Connection": "close"}
    ) as client:

        async def probe(port: int) -> str | None:
            try:
                response = await client.get(f"http://127.0.0.1:{port}/healthz")
            except httpx.HTTPError as exc:
                return type(exc).__name__
            return None if response.status_code == 200 else f"HTTP {response.status_code}"  # noqa: PLR2004 - OK

        yield probe


class Row(NamedTuple):
    client: str
    label: str
    backend: str
    open_client: Client


def rows_for(clients: Sequence[str], backends: Sequence[str]) -> list[Row]:
    """Each chosen client on each chosen backend it runs on (aiohttp is asyncio only)."""
    chosen: list[Row] = []
    for backend in backends:
        for name, label, open_client in (
            ("httpcheck-connect-tcp", "HTTPCheck, connect_tcp (before)", httpcheck_connect_tcp),
            ("httpcheck", "HTTPCheck, direct (after)", httpcheck),
            ("aiohttp", f"aiohttp {version('aiohttp')}", aiohttp_client),
            ("httpx", f"httpx {version('httpx')}", httpx_client),
        ):
            if name in clients and not (name == "aiohttp" and backend != "asyncio"):
                chosen.append(Row(name, label, backend, open_client))
    return chosen


def version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


# -- measuring ------------------------------------------------------------------------------


class Figures(NamedTuple):
    probes: int
    elapsed: float
    cpu: float
    server_cpu: float
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


async def probe_all(
    open_client: Client, ports: Sequence[int], seconds: float, max_probes: int
) -> Figures:
    latencies: list[float] = []
    failures: dict[str, int] = {}
    async with open_client() as probe:
        deadline = time.perf_counter() + seconds

        async def keep_probing(port: int) -> None:
            while (started := time.perf_counter()) < deadline and len(latencies) < max_probes:
                reason = await probe(port)
                latencies.append(time.perf_counter() - started)
                if reason is not None:
                    failures[reason] = failures.get(reason, 0) + 1

        cpu = time.process_time()
        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for port in ports:
                tg.start_soon(keep_probing, port)
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
    latencies.sort()
    return Figures(
        probes=len(latencies),
        elapsed=elapsed,
        cpu=cpu,
        server_cpu=0.0,  # measured by the caller
        failures=failures,
        median=statistics.median(latencies),
        p99=latencies[min(len(latencies) - 1, math.ceil(len(latencies) * 0.99) - 1)],
    )


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of process ``pid`` so far (from /proc/PID/stat)."""
    # The command name (field 2) may hold spaces; the fields after its ")" are fixed.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    args: argparse.Namespace, server: int, ports: Sequence[int], rows: Sequence[Row]
) -> list[list[Figures]]:
    """Every row ``args.rounds`` times; per row, the figures of each round."""
    results: list[list[Figures]] = [[] for _ in rows]
    last_row_ended: float | None = None
    for round_ in range(args.rounds):
        # Alternate the order so drift on this shared machine does not favour one row.
        order = list(range(len(rows)))
        if round_ % 2:
            order.reverse()
        for index in order:
            row = rows[index]
            waited = settle(ports, args.settle, last_row_ended)
            print(
                f"  round {round_ + 1}: {row.label} on {row.backend} ({waited}) ...",
                end=" ",
                flush=True,
            )
            server_cpu = cpu_seconds(server)
            figures = anyio.run(
                probe_all,
                row.open_client,
                ports,
                args.seconds,
                args.max_probes,
                backend=row.backend,
            )
            figures = figures._replace(server_cpu=cpu_seconds(server) - server_cpu)
            last_row_ended = time.monotonic()
            print(f"{figures.probes / figures.elapsed:,.0f} probes/s", flush=True)
            if figures.failures:
                print(f"    failures: {figures.failures}")
            results[index].append(figures)
    return results


def run(args: argparse.Namespace) -> int:
    limit = raise_fd_limit()
    rows = rows_for(args.clients, args.backends)
    print(
        f"Probe throughput: one GET per fresh connection, one in flight per endpoint, "
        f"{args.seconds} s per row, median of {args.rounds} round(s)"
    )
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
        results = measure(args, server.pid, ports, rows)
    finally:
        if server.stdin is not None:
            server.stdin.close()
        server.wait(timeout=30)
    print(f"  after the last row: {settle(ports, 0, None)}")
    table_rows: list[list[object]] = []
    rates: dict[tuple[str, str], float] = {}
    missed = False
    for row, runs in zip(rows, results, strict=True):
        rate = statistics.median(f.probes / f.elapsed for f in runs)
        rates[row.client, row.backend] = rate
        failed = sum(sum(f.failures.values()) for f in runs)
        missed |= failed > 0 or len(ports) < GOAL_ENDPOINTS
        table_rows.append(
            [
                row.label,
                row.backend,
                len(ports),
                f"{statistics.median(f.probes for f in runs):.0f}",
                failed,
                f"{rate:,.0f}",
                f"{statistics.median(f.cpu / f.probes for f in runs) * 1e6:.0f}",
                f"{statistics.median(f.server_cpu / f.probes for f in runs) * 1e6:.0f}",
                f"{statistics.median(f.median for f in runs) * 1000:.1f}",
                f"{statistics.median(f.p99 for f in runs) * 1000:.1f}",
                " ".join(f"{f.probes / f.elapsed:,.0f}" for f in runs),
            ]
        )
    header = [
        "client",
        "backend",
        "endpoints",
        "probes",
        "failed",
        "probes/s",
        "prober CPU µs/probe",
        "server CPU µs/probe",
        "median ms",
        "p99 ms",
        "probes/s of each round",
    ]
    print(table("HTTP readiness probes against real loopback endpoints", header, table_rows))
    ratio_rows: list[list[object]] = []
    for backend in args.backends:
        before = rates.get(("httpcheck-connect-tcp", backend))
        after = rates.get(("httpcheck", backend))
        if before is None or after is None:
            continue
        met = after / before >= GOAL_RATIO
        missed |= not met
        ratio_rows.append([backend, f"{after / before:.2f}x", verdict(met=met)])
    if ratio_rows:
        header = ["backend", "HTTPCheck probes/s, after / before", f">= {GOAL_RATIO}x"]
        print(table("HTTPCheck's direct connect against anyio.connect_tcp", header, ratio_rows))
    return 1 if missed and args.strict else 0


def main(argv: Sequence[str] | None = None) -> int:
    clients = ["httpcheck-connect-tcp", "httpcheck", "aiohttp", "httpx"]
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--endpoints", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=3.0, help="per row and round")
    parser.add_argument("--rounds", type=int, default=3, help="the median is reported")
    parser.add_argument("--max-probes", type=int, default=200_000, help="per row and round")
    parser.add_argument("--backends", nargs="+", default=["asyncio", "trio"])
    parser.add_argument("--clients", nargs="+", default=clients, choices=clients)
    parser.add_argument(
        "--settle", type=float, default=80.0, help="longest wait for TIME_WAIT to clear, s"
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 s per row, one round, no waiting for TIME_WAIT"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        raise_fd_limit()
        serve(args.serve)
        return 0
    if args.quick:
        args.seconds, args.rounds, args.settle = 1.0, 1, 0.0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())

"""A tiny HTTP/1.1 app to roll out: ``python -m rolling.demo.app --version v1 --port 8001``.

It answers, one request per connection (``Connection: close``):

* ``GET /``: ``200``, body ``hello from <version> on port <port>``, header
  ``X-Version: <version>``, after ``--latency-ms`` (default 20) so that
  requests overlap in time;
* ``GET /healthz``: ``200 ok`` once ``--startup-delay`` seconds have passed
  since it started listening, ``503`` before (and always with
  ``--never-ready``);
* ``GET /metrics``: its request counter ``demo_requests_total{version, code}``
  and latency histogram ``demo_request_duration_seconds{version}`` of
  ``GET /``, in Prometheus's text format.

``--flag-file PATH`` makes it read the boolean flag ``--flag`` (default
``new-format``) from a flagd flag file through the OpenFeature SDK's flagd
provider in file mode (``openfeature-sdk`` and ``openfeature-provider-flagd``
must be installed), once per ``GET /``, and report the value it used in an
``X-Flag: on|off`` header and in the body: the way an app picks its code path.

``--error-pct PCT`` makes it answer that share of ``GET /`` with ``500``
(spread evenly, not at random): a release that passes its readiness probe
and fails real requests.

SIGTERM or SIGINT shut it down gracefully: it stops accepting connections
(new ones are refused), lets the requests in flight finish (for at most
``--drain-timeout`` seconds, default 10) and exits with status 0. It needs
nothing but :mod:`anyio`, and logs one line per state change to stderr.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import argparse
import functools
import logging
import signal
import sys
from collections.abc import Callable, Sequence

import anyio
import anyio.abc
import attrs

from rolling.routers._accept import serve as accept_serve

__all__ = ["AppOptions", "command", "main", "serve"]

_MAX_HEAD = 16 * 1024
"""Largest request head read; a longer one gets ``431``."""

_READ_TIMEOUT = 10.0
"""Seconds a client has to send its request head."""

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}

logger = logging.getLogger("rolling.demo.app")


@attrs.frozen(kw_only=True)
class AppOptions:
    """What the app serves and how it behaves; one field per command-line option.

    Attributes:
        version: The version it reports.
        port: The port it listens on.
        host: The address it listens on.
        startup_delay: Seconds after listening until ``/healthz`` answers ``200``.
        never_ready: ``/healthz`` always answers ``503``: a bad release.
        latency_ms: Milliseconds ``GET /`` takes.
        drain_timeout: Longest wait for requests in flight after SIGTERM.
        error_pct: Percentage of ``GET /`` answered with ``500``.
        flag_file: A flagd flag file to read ``flag`` from per request, if any.
        flag: The boolean flag it reads.

    .. versionadded:: 0.1.0

    .. versionchanged:: 0.4.0
       ``flag_file`` and ``flag``.

    .. versionchanged:: 0.3.0
       ``error_pct``.
    """

    version: str
    port: int
    host: str = "127.0.0.1"
    startup_delay: float = 0.0
    never_ready: bool = False
    latency_ms: float = 20.0
    drain_timeout: float = 10.0
    error_pct: float = 0.0
    flag_file: str | None = None
    flag: str = "new-format"


def command(
    version: str,
    port: int,
    *,
    startup_delay: float = 0.0,
    never_ready: bool = False,
    latency_ms: float = 20.0,
    error_pct: float = 0.0,
    flag_file: str | None = None,
    python: str = sys.executable,
) -> list[str]:
    """The argument vector that runs this app, for :class:`~rolling.drivers.process.ProcessDriver`.

    ``functools.partial(command, startup_delay=0.3)`` is a ready-made driver command.

    .. versionadded:: 0.1.0

    .. versionchanged:: 0.4.0
       ``flag_file``.
    """
    argv = [python, "-m", "rolling.demo.app", "--version", version, "--port", str(port)]
    argv += ["--startup-delay", repr(startup_delay), "--latency-ms", repr(latency_ms)]
    if never_ready:
        argv.append("--never-ready")
    if error_pct:
        argv += ["--error-pct", repr(error_pct)]
    if flag_file is not None:
        argv += ["--flag-file", flag_file]
    return argv


_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Upper bounds of the latency histogram's buckets, in seconds (Prometheus's defaults)."""


def _flag_reader(options: AppOptions) -> Callable[[], bool] | None:
    """A function that reads the flag now, through OpenFeature (None without a flag file)."""
    if options.flag_file is None:
        return None
    # Imported here: only an app that reads flags needs the SDK (the core never does).
    from openfeature import api  # noqa: PLC0415
    from openfeature.contrib.provider.flagd import FlagdProvider  # noqa: PLC0415  # pyright: ignore[reportMissingTypeStubs]
    from openfeature.contrib.provider.flagd.config import ResolverType  # noqa: PLC0415  # pyright: ignore[reportMissingTypeStubs]

    api.set_provider(
        FlagdProvider(resolver_type=ResolverType.FILE, offline_flag_source_path=options.flag_file)
    )
    client = api.get_client()
    flag = options.flag
    return lambda: bool(client.get_boolean_value(flag, default_value=False))


@attrs.define
class _State:
    flag: Callable[[], bool] | None = None
    ready: bool = False
    served: int = 0
    codes: dict[int, int] = attrs.Factory(dict[int, int])
    buckets: list[int] = attrs.Factory(lambda: [0] * len(_BUCKETS))
    seconds: float = 0.0

    def record(self, code: int, seconds: float) -> None:
        self.codes[code] = self.codes.get(code, 0) + 1
        self.seconds += seconds
        for index, bound in enumerate(_BUCKETS):
            if seconds <= bound:
                self.buckets[index] += 1

    def exposition(self, version: str) -> str:
        label = f'version="{version}"'
        lines = [
            "# HELP demo_requests_total Requests to GET /, by status code.",
            "# TYPE demo_requests_total counter",
        ]
        lines += [
            f'demo_requests_total{{{label},code="{code}"}} {count}'
            for code, count in sorted(self.codes.items())
        ]
        lines += [
            "# HELP demo_request_duration_seconds Time to answer GET /.",
            "# TYPE demo_request_duration_seconds histogram",
        ]
        lines += [
            f'demo_request_duration_seconds_bucket{{{label},le="{bound}"}} {count}'
            for bound, count in zip(_BUCKETS, self.buckets, strict=True)
        ]
        total = sum(self.codes.values())
        lines += [
            f'demo_request_duration_seconds_bucket{{{label},le="+Inf"}} {total}',
            f"demo_request_duration_seconds_sum{{{label}}} {self.seconds}",
            f"demo_request_duration_seconds_count{{{label}}} {total}",
        ]
        return "\n".join(lines) + "\n"


async def serve(options: AppOptions) -> None:
    """Serve until SIGTERM or SIGINT, then drain the requests in flight and return.

    Raises:
        OSError: It cannot listen on ``host:port``.

    .. versionadded:: 0.1.0
    """
    state = _State(flag=_flag_reader(options))
    # The receiver is open before the port is, and stays open while draining, so a
    # signal never falls back to the default action (dying mid-request).
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        listener = await anyio.create_tcp_listener(local_host=options.host, local_port=options.port)
        handler = functools.partial(_handle, options, state)
        async with anyio.create_task_group() as connections:
            async with listener, anyio.create_task_group() as accepting:
                accepting.start_soon(accept_serve, listener, handler, connections)
                accepting.start_soon(_become_ready, options, state)
                logger.info("listening on %s:%d", options.host, options.port)
                async for signum in signals:
                    logger.info("%s: draining", signal.Signals(signum).name)
                    break
                accepting.cancel_scope.cancel()
            # The listener is closed: new connections are refused; accepted ones finish.
            connections.cancel_scope.deadline = anyio.current_time() + options.drain_timeout
        if connections.cancel_scope.cancel_called:
            logger.warning("requests still in flight after %ss were cut", options.drain_timeout)
    logger.info("stopped")


async def _become_ready(options: AppOptions, state: _State) -> None:
    if options.never_ready:
        return
    await anyio.sleep(options.startup_delay)
    state.ready = True
    logger.info("ready")


async def _handle(options: AppOptions, state: _State, stream: anyio.abc.SocketStream) -> None:
    async with stream:
        try:
            with anyio.fail_after(_READ_TIMEOUT):
                head = await _read_head(stream)
            status, body = await _answer(options, state, head)
            await stream.send(_response(options, status, body))
        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
            # The client left, broke the connection or was too slow: no one to answer.
            return


async def _read_head(stream: anyio.abc.SocketStream) -> bytes | None:
    """Return the request head, or None when it is larger than :data:`_MAX_HEAD`."""
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > _MAX_HEAD:
            return None
        data += await stream.receive()
    return data.partition(b"\r\n\r\n")[0]


def _target(head: bytes | None) -> bytes | tuple[int, str]:
    """The path a request asks for, or the error to answer it with."""
    if head is None:
        return 431, "request head too large\n"
    parts = head.split(b"\r\n", 1)[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):  # noqa: PLR2004 - method, target, version
        return 400, "bad request line\n"
    method, target = parts[0], parts[1].split(b"?", 1)[0]
    if target not in {b"/", b"/healthz", b"/metrics"}:
        return 404, "not found\n"
    if method != b"GET":
        return 405, "only GET\n"
    return target


async def _answer(options: AppOptions, state: _State, head: bytes | None) -> tuple[int, str]:
    target = _target(head)
    if isinstance(target, tuple):
        return target
    if target == b"/healthz":
        if state.ready:
            return 200, "ok\n"
        return 503, "never ready\n" if options.never_ready else "starting\n"
    if target == b"/metrics":
        return 200, state.exposition(options.version)
    started = anyio.current_time()
    await anyio.sleep(options.latency_ms / 1000)
    before, state.served = state.served, state.served + 1
    # Every request whose share of error_pct crosses a whole number fails: evenly spread.
    status = (
        500
        if int(state.served * options.error_pct / 100) > int(before * options.error_pct / 100)
        else 200
    )
    state.record(status, anyio.current_time() - started)
    if status == 500:  # noqa: PLR2004
        return 500, f"failure from {options.version} on port {options.port}\n"
    # Read once per request, as an app choosing its code path would; reported back.
    used = "" if state.flag is None else ", flag on" if state.flag() else ", flag off"
    return 200, f"hello from {options.version} on port {options.port}{used}\n"


def _flag_header(body: str) -> str:
    for used in ("on", "off"):
        if body.endswith(f", flag {used}\n"):
            return f"X-Flag: {used}\r\n"
    return ""


def _response(options: AppOptions, status: int, body: str) -> bytes:
    content = body.encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(content)}\r\n"
        f"X-Version: {options.version}\r\n"
        f"{_flag_header(body)}"
        "Connection: close\r\n"
        "\r\n"
    )
    return head.encode() + content


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rolling.demo.app", description="A tiny HTTP app to roll out."
    )
    parser.add_argument("--version", required=True, help="the version it reports")
    parser.add_argument("--port", required=True, type=_port, help="the port it listens on")
    parser.add_argument("--host", default="127.0.0.1", help="the address (default 127.0.0.1)")
    parser.add_argument(
        "--startup-delay",
        type=_non_negative,
        default=0.0,
        help="seconds until /healthz answers 200 (default 0)",
    )
    parser.add_argument("--never-ready", action="store_true", help="/healthz always answers 503")
    parser.add_argument(
        "--latency-ms",
        type=_non_negative,
        default=20.0,
        help="milliseconds GET / takes (default 20)",
    )
    parser.add_argument(
        "--error-pct",
        type=_non_negative,
        default=0.0,
        help="percentage of GET / answered with 500 (default 0)",
    )
    parser.add_argument(
        "--flag-file",
        default=None,
        help="a flagd flag file to read --flag from per request, via OpenFeature",
    )
    parser.add_argument(
        "--flag", default="new-format", help="the boolean flag to read (default new-format)"
    )
    parser.add_argument(
        "--drain-timeout",
        type=_non_negative,
        default=10.0,
        help="longest wait for requests in flight after SIGTERM (default 10)",
    )
    return parser


def _port(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 65535:  # noqa: PLR2004 - the TCP port range
        raise argparse.ArgumentTypeError(f"{value} is not a TCP port (1 to 65535)")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a number >= 0")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the app from the command line; return the exit status.

    .. versionadded:: 0.1.0
    """
    args = _parser().parse_args(argv)
    options = AppOptions(
        version=args.version,
        port=args.port,
        host=args.host,
        startup_delay=args.startup_delay,
        never_ready=args.never_ready,
        latency_ms=args.latency_ms,
        drain_timeout=args.drain_timeout,
        error_pct=args.error_pct,
        flag_file=args.flag_file,
        flag=args.flag,
    )
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s {options.version}@{options.port} %(message)s",
        stream=sys.stderr,
    )
    try:
        anyio.run(serve, options)
    except OSError as exc:
        logger.error("cannot serve on %s:%d: %s", options.host, options.port, exc)  # noqa: TRY400 - the reason is enough, no traceback
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Steady HTTP load through the balancer, one connection per request, every outcome recorded."""

from __future__ import annotations

import math

import anyio
import attrs

__all__ = ["LoadGenerator", "Sample"]

_MAX_RESPONSE = 64 * 1024


@attrs.frozen
class Sample:
    """One request.

    Attributes:
        at: Event-loop time it started.
        latency: Seconds until the whole response arrived (or the failure).
        ok: Whether it got a complete ``200`` response.
        version: The ``X-Version`` the answer carried, if any.
        error: Why it failed, if it did.
        flag: The ``X-Flag`` the answer carried (``on``/``off``), if any.
    """

    at: float
    latency: float
    ok: bool
    version: str | None
    error: str = ""
    flag: str | None = None


@attrs.define
class LoadGenerator:
    """``concurrency`` workers sending ``GET /`` to ``host:port`` until stopped.

    Bounded on purpose: it stops by itself after ``max_requests`` or
    ``max_seconds``, whichever comes first, so a stuck caller cannot turn it
    into an endless flood.
    """

    host: str
    port: int
    concurrency: int = 8
    timeout: float = 10.0
    max_requests: int = 2_000_000
    max_seconds: float = 900.0
    samples: list[Sample] = attrs.Factory(list[Sample])
    _stop: anyio.Event = attrs.Factory(anyio.Event)

    def stop(self) -> None:
        """Let in-flight requests finish and send no more."""
        self._stop.set()

    async def run(self) -> None:
        """Send requests until :meth:`stop`, or a bound, is reached."""
        with anyio.move_on_after(self.max_seconds):
            async with anyio.create_task_group() as tg:
                for _ in range(self.concurrency):
                    tg.start_soon(self._worker)

    async def _worker(self) -> None:
        while not self._stop.is_set() and len(self.samples) < self.max_requests:
            self.samples.append(await self.request())

    async def request(self) -> Sample:
        """Send one request and return what happened."""
        start = anyio.current_time()
        try:
            with anyio.fail_after(self.timeout):
                status, version, flag = await self._exchange()
        except TimeoutError:
            return Sample(
                start, anyio.current_time() - start, ok=False, version=None, error="timeout"
            )
        except (OSError, anyio.BrokenResourceError, anyio.EndOfStream) as exc:
            error = type(exc).__name__
            return Sample(start, anyio.current_time() - start, ok=False, version=None, error=error)
        latency = anyio.current_time() - start
        if status != 200:  # noqa: PLR2004 - the only good answer
            return Sample(start, latency, ok=False, version=version, error=f"HTTP {status}")
        return Sample(start, latency, ok=True, version=version, flag=flag)

    async def _exchange(self) -> tuple[int, str | None, str | None]:
        async with await anyio.connect_tcp(self.host, self.port) as stream:
            request = f"GET / HTTP/1.1\r\nHost: {self.host}\r\nConnection: close\r\n\r\n"
            await stream.send(request.encode())
            data = bytearray()
            while len(data) < _MAX_RESPONSE:
                try:
                    data += await stream.receive()
                except anyio.EndOfStream:
                    break
        return _parse(bytes(data))


def _parse(data: bytes) -> tuple[int, str | None, str | None]:
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        raise anyio.EndOfStream
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():  # noqa: PLR2004 - "HTTP/1.1 200"
        raise anyio.EndOfStream
    version = flag = None
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "x-version":
            version = value.strip()
        elif name.strip().lower() == "x-flag":
            flag = value.strip()
        elif name.strip().lower() == "content-length":
            length = int(value.strip())
    if length is not None and len(body) < length:
        raise anyio.EndOfStream  # cut short: the backend died mid-answer
    return int(parts[1]), version, flag


def percentile(values: list[float], pct: float) -> float:
    """The ``pct`` percentile (nearest rank) of ``values``, or NaN for none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]

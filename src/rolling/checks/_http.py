"""HTTPCheck: one ``GET`` over a fresh connection, judged by status and body.

The client is deliberately small: HTTP/1.1 with ``Connection: close``, one
request per connection, responses framed by ``Content-Length``, chunked
transfer encoding, or the end of the connection. Everything it reads is
bounded (a line, the head, the body), and so is the whole exchange, by
``timeout``.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Container
from typing import Any, cast

import anyio
import anyio.abc
import anyio.to_thread
import attrs
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.tls import TLSStream

from rolling import ConfigError
from rolling.net import Address, address_of, default_address, describe_connect_error, is_text
from rolling.typing import HealthResult
from rolling.validate import check_callable, check_seconds, validator

from ._connect import connect

__all__ = ["HTTPCheck"]

_MAX_BODY = 64 * 1024
"""Bytes of the body read at most; the rest is ignored (a probe needs no more)."""
_MAX_HEAD = 64 * 1024
_MAX_LINE = 8 * 1024
_STATUS_LINE = re.compile(rb"HTTP/1\.[0-9] ([0-9]{3})(?: .*)?")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_TOKEN = re.compile(r"[!-~]+")  # visible ASCII, no spaces or control characters
_NO_BODY = frozenset({204, 304})
_SWITCHING_PROTOCOLS = 101
_LOWEST_STATUS = 100
_HIGHEST_STATUS = 599


class _BadResponse(Exception):  # noqa: N818 - private; carries the reason for an unhealthy answer
    """The response cannot be read; ``args[0]`` is the reason."""


def _check_path(_instance: object, _attribute: object, value: Any) -> None:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ConfigError(
            "HTTPCheck.path",
            f"must start with '/', got {value!r}",
            'pass a path such as "/healthz"',
        )
    if not _TOKEN.fullmatch(value):
        raise ConfigError(
            "HTTPCheck.path",
            f"{value!r} has spaces, control or non-ASCII characters",
            "percent-encode them (urllib.parse.quote)",
        )


def _check_expect_status(_instance: object, _attribute: object, value: Any) -> None:
    if isinstance(value, str | bytes) or not isinstance(value, Container):
        raise ConfigError(
            "HTTPCheck.expect_status",
            f"expected a container of status codes, got {value!r}",
            "pass range(200, 300), {200} or [200, 204]",
        )
    if isinstance(value, list | tuple | set | frozenset):
        codes = cast("list[object]", list(value))  # pyright: ignore[reportUnknownArgumentType]
        if not codes or not all(_is_status(code) for code in codes):
            raise ConfigError(
                "HTTPCheck.expect_status",
                f"expected status codes (ints from {_LOWEST_STATUS} to {_HIGHEST_STATUS}),"
                f" got {value!r}",
                "pass range(200, 300), {200} or [200, 204]: ints, not strings",
            )


def _is_status(code: object) -> bool:
    return (
        isinstance(code, int)
        and not isinstance(code, bool)
        and _LOWEST_STATUS <= code <= _HIGHEST_STATUS
    )


def _check_body(_instance: object, _attribute: object, value: Any) -> None:
    if value is None or is_text(value):
        return
    pattern: object = getattr(value, "pattern", None)
    if isinstance(value, re.Pattern) and isinstance(pattern, str):
        return
    raise ConfigError(
        "HTTPCheck.body",
        f"expected a non-empty str or a compiled str regex, got {value!r}",
        'pass "ok" (a substring) or re.compile(r"status.*up")',
    )


def _check_host_header(_instance: object, _attribute: object, value: Any) -> None:
    if value is None or (isinstance(value, str) and _TOKEN.fullmatch(value)):
        return
    raise ConfigError(
        "HTTPCheck.host_header",
        f"expected a host name without spaces or control characters, got {value!r}",
        'pass "example.com" or "example.com:8080", or None for the address',
    )


def _check_tls(_instance: object, _attribute: object, value: Any) -> None:
    if isinstance(value, bool | ssl.SSLContext):
        return
    raise ConfigError(
        "HTTPCheck.tls",
        f"expected a bool or an ssl.SSLContext, got {value!r}",
        "pass True for the system's trusted certificates, or your own SSLContext",
    )


@attrs.frozen
class HTTPCheck:
    """Healthy when ``GET path`` answers with an expected status (and body).

    Each probe opens a fresh connection, sends one ``GET`` with
    ``Connection: close``, and reads the status line and headers. It then
    reads the body (at most 64 KiB; ``Content-Length``, chunked, or up to
    the end of the connection) only when ``body`` asks for it.

    Args:
        path: The path to request; it must start with ``/``.
        address: Maps an instance to the ``(host, port)`` it serves on
            (default: its ``host`` and ``port`` attributes).
        timeout: Longest the whole exchange may take, in seconds.
        expect_status: Status codes that count as healthy (any container).
        body: A substring the body must contain, or a compiled regex it
            must match somewhere (``re.search``). The body is decoded as
            UTF-8, with undecodable bytes replaced.
        host_header: The ``Host`` header; default ``host:port`` of the address.
        tls: ``True`` for HTTPS with the system's trusted certificates, or
            an :class:`ssl.SSLContext` of your own.

    Raises:
        ConfigError: An argument is invalid.

    .. versionadded:: 0.1.0
    """

    path: str = attrs.field(default="/healthz", validator=_check_path)
    address: Address | None = attrs.field(
        default=None, kw_only=True, validator=validator(check_callable, allow_none=True)
    )
    timeout: float = attrs.field(
        default=2.0, kw_only=True, validator=validator(check_seconds, allow_zero=False)
    )
    expect_status: Container[int] = attrs.field(
        default=range(200, 300), kw_only=True, validator=_check_expect_status
    )
    body: str | re.Pattern[str] | None = attrs.field(
        default=None, kw_only=True, validator=_check_body
    )
    host_header: str | None = attrs.field(default=None, kw_only=True, validator=_check_host_header)
    tls: bool | ssl.SSLContext = attrs.field(default=False, kw_only=True, validator=_check_tls)
    _contexts: list[ssl.SSLContext] = attrs.field(
        init=False, factory=list[ssl.SSLContext], eq=False, repr=False, hash=False
    )
    """The default SSLContext, built on first use (in a thread: it reads files)."""

    async def check(self, instance: Any) -> HealthResult:
        """Send one request to ``instance`` and judge the answer.

        Returns:
            Healthy (reason ``"HTTP 200"``), or unhealthy with a reason such as
            ``"HTTP 503"``, ``"body did not match 'ok'"``, ``"timed out after
            2.0s"``, ``"connection refused"`` or ``"malformed status line"``.
        """
        try:
            host, port = address_of(
                default_address if self.address is None else self.address, instance
            )
        except ValueError as exc:
            return HealthResult(healthy=False, reason=str(exc))
        context = await self._ssl_context()
        with anyio.move_on_after(self.timeout):
            return await self._probe(host, port, context)
        return HealthResult(healthy=False, reason=f"timed out after {float(self.timeout)}s")

    async def _ssl_context(self) -> ssl.SSLContext | None:
        if isinstance(self.tls, ssl.SSLContext):
            return self.tls
        if not self.tls:
            return None
        if not self._contexts:
            self._contexts.append(await anyio.to_thread.run_sync(ssl.create_default_context))
        return self._contexts[0]

    async def _probe(self, host: str, port: int, context: ssl.SSLContext | None) -> HealthResult:
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        host_header = authority if self.host_header is None else self.host_header
        try:
            stream = await _open(host, port, context, host_header)
        except (OSError, anyio.BrokenResourceError) as exc:
            return HealthResult(healthy=False, reason=describe_connect_error(_as_os_error(exc)))
        try:
            return await self._exchange(stream, host_header)
        except _BadResponse as exc:
            return HealthResult(healthy=False, reason=str(exc.args[0]))
        except (OSError, anyio.BrokenResourceError) as exc:
            return HealthResult(healthy=False, reason=_describe_broken(exc))
        finally:
            # Forcefully: a probe has its answer, and a TLS goodbye could hang.
            await anyio.aclose_forcefully(stream)

    async def _exchange(self, stream: anyio.abc.ByteStream, host_header: str) -> HealthResult:
        request = (
            f"GET {self.path} HTTP/1.1\r\n"
            f"Host: {host_header}\r\n"
            "User-Agent: rolling-httpcheck\r\n"
            "Accept: */*\r\n"
            "Connection: close\r\n"
            "\r\n"
        )
        await stream.send(request.encode("ascii"))
        reader = BufferedByteReceiveStream(stream)
        status, headers = await _read_head(reader)
        if status not in self.expect_status:
            return HealthResult(healthy=False, reason=f"HTTP {status}")
        if self.body is None:
            return HealthResult(healthy=True, reason=f"HTTP {status}")
        text = (await _read_body(reader, status, headers)).decode("utf-8", errors="replace")
        if isinstance(self.body, str):
            matched, shown = self.body in text, self.body
        else:
            matched, shown = self.body.search(text) is not None, self.body.pattern
        if not matched:
            return HealthResult(healthy=False, reason=f"body did not match {shown!r}")
        return HealthResult(healthy=True, reason=f"HTTP {status}")


async def _open(
    host: str, port: int, context: ssl.SSLContext | None, host_header: str
) -> anyio.abc.ByteStream:
    """A connection to ``host``:``port``, over TLS when there is a ``context``."""
    stream = await connect(host, port)
    if context is None:
        return stream
    try:
        return await TLSStream.wrap(
            stream,
            hostname=_hostname(host_header) or host,
            ssl_context=context,
            # Responses here end with the connection, so a server that
            # closes without a TLS close_notify is no error.
            standard_compatible=False,
        )
    except BaseException:
        # Closed on every way out (a failed handshake, the timeout, cancellation).
        await anyio.aclose_forcefully(stream)
        raise


def _hostname(authority: str) -> str:
    """The host part of ``host[:port]`` or ``[v6]:port``, for TLS server-name checks."""
    if authority.startswith("["):
        return authority[1 : authority.find("]")] if "]" in authority else authority[1:]
    return authority.split(":", 1)[0]


def _as_os_error(exc: BaseException) -> OSError:
    if isinstance(exc, OSError):
        return exc
    wrapper = OSError(str(exc) or type(exc).__name__)
    wrapper.__cause__ = exc
    return wrapper


def _describe_broken(exc: BaseException) -> str:
    reason = describe_connect_error(_as_os_error(exc))
    if reason.startswith(("TLS error", "connection refused")):
        return reason
    return "connection reset"


async def _read_line(reader: BufferedByteReceiveStream, what: str) -> bytes:
    """One line, without its CRLF (a bare LF is accepted too)."""
    try:
        line = await reader.receive_until(b"\n", _MAX_LINE)
    except anyio.DelimiterNotFound:
        raise _BadResponse(f"{what} longer than {_MAX_LINE} bytes") from None
    except anyio.IncompleteRead:
        raise _BadResponse(f"connection closed before the {what} ended") from None
    if len(line) > _MAX_LINE:  # the limit is checked per read, so a long read may pass it
        raise _BadResponse(f"{what} longer than {_MAX_LINE} bytes")
    return line.removesuffix(b"\r")


async def _read_head(reader: BufferedByteReceiveStream) -> tuple[int, dict[str, str]]:
    """The status code and headers (lower-case names) of the final response."""
    while True:
        match = _STATUS_LINE.fullmatch(await _read_line(reader, "status line"))
        if match is None:
            raise _BadResponse("malformed status line")
        status = int(match.group(1))
        headers = await _read_headers(reader)
        # 1xx answers are interim (100 Continue, 103 Early Hints); the real
        # one follows. 101 switches protocols, so nothing HTTP follows it.
        if not (100 <= status < 200) or status == _SWITCHING_PROTOCOLS:  # noqa: PLR2004 - 1xx
            return status, headers


async def _read_headers(reader: BufferedByteReceiveStream) -> dict[str, str]:
    headers: dict[str, str] = {}
    size = 0
    while line := await _read_line(reader, "headers"):
        size += len(line)
        if size > _MAX_HEAD:
            raise _BadResponse(f"headers larger than {_MAX_HEAD // 1024} KiB")
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name.decode("latin-1")):
            raise _BadResponse("malformed header line")
        key = name.decode("latin-1").lower()
        text = value.strip().decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return headers


async def _read_body(
    reader: BufferedByteReceiveStream, status: int, headers: dict[str, str]
) -> bytes:
    """Up to 64 KiB bytes of the body, framed as the headers say."""
    if status in _NO_BODY or 100 <= status < 200:  # noqa: PLR2004 - 1xx
        return b""
    coding = headers.get("transfer-encoding")
    if coding is not None:
        if coding.rsplit(",", 1)[-1].strip().lower() == "chunked":
            return await _read_chunked(reader)
        return await _read_to_end(reader)
    length = headers.get("content-length")
    if length is not None:
        return await _read_exactly(reader, min(_content_length(length), _MAX_BODY))
    return await _read_to_end(reader)


def _content_length(value: str) -> int:
    # Repeated headers were joined with commas; they must all agree.
    values = {part.strip() for part in value.split(",")}
    if len(values) != 1:
        raise _BadResponse("malformed Content-Length")
    (text,) = values
    if not text.isascii() or not text.isdigit():
        raise _BadResponse("malformed Content-Length")
    return int(text)


async def _read_exactly(reader: BufferedByteReceiveStream, size: int) -> bytes:
    try:
        return await reader.receive_exactly(size)
    except anyio.IncompleteRead:
        raise _BadResponse("connection closed before the body ended") from None


async def _read_to_end(reader: BufferedByteReceiveStream) -> bytes:
    data = bytearray()
    while len(data) < _MAX_BODY:
        try:
            data += await reader.receive(_MAX_BODY - len(data))
        except anyio.EndOfStream:
            break
    return bytes(data)


async def _read_chunked(reader: BufferedByteReceiveStream) -> bytes:
    data = bytearray()
    while len(data) < _MAX_BODY:
        line = await _read_line(reader, "chunk size")
        size_text = line.split(b";", 1)[0].strip()
        if not _CHUNK_SIZE.fullmatch(size_text):
            raise _BadResponse("malformed chunk size")
        size = int(size_text, 16)
        if size == 0:
            break  # trailers, if any, are of no interest: the connection closes
        wanted = min(size, _MAX_BODY - len(data))
        data += await _read_exactly(reader, wanted)
        if wanted < size:
            break
        if await _read_line(reader, "chunk"):
            raise _BadResponse("malformed chunk: data longer than its size")
    return bytes(data)

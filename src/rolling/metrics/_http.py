"""A small HTTP/1.1 GET client for metric providers: one request per connection.

``Connection: close``, so the response ends with the connection; it is read
up to a bound, then framed by ``Transfer-Encoding: chunked`` or
``Content-Length`` if present. The whole exchange is bounded by the
caller's timeout.
"""

from __future__ import annotations

import json
import re
import ssl
import urllib.parse
from collections.abc import Mapping
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
from anyio.streams.tls import TLSStream

__all__ = ["HTTPError", "Response", "get", "split_url"]

_MAX_RESPONSE = 16 * 1024 * 1024
_STATUS_LINE = re.compile(rb"HTTP/1\.[0-9] ([0-9]{3})(?: .*)?")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class HTTPError(Exception):
    """The exchange failed: no connection, a malformed or oversized response."""


class Response:
    """A status code, lower-cased headers, and the body."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        """The body as JSON.

        Raises:
            HTTPError: It is not JSON.
        """
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise HTTPError(f"HTTP {self.status} with a body that is not JSON: {exc}") from None


def split_url(url: str) -> tuple[str, str, int, str]:
    """``(scheme, host, port, path?query)`` of an absolute http(s) URL.

    Raises:
        ValueError: Not an absolute http or https URL.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"expected an absolute http:// or https:// URL, got {url!r}")
    port = parts.port or _DEFAULT_PORTS[parts.scheme]
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname, port, target


async def default_context(cache: list[ssl.SSLContext]) -> ssl.SSLContext:
    """The system's trusted certificates, built once (in a thread: it reads files)."""
    if not cache:
        cache.append(await anyio.to_thread.run_sync(ssl.create_default_context))
    return cache[0]


async def get(
    url: str, *, headers: Mapping[str, str] = {}, context: ssl.SSLContext | None = None
) -> Response:
    """``GET url``; over TLS with ``context`` (required for https).

    Raises:
        HTTPError: The exchange failed.
    """
    scheme, host, port, target = split_url(url)
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"GET {target} HTTP/1.1", f"Host: {authority}", "Accept: application/json, */*"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines += ["Connection: close", "", ""]
    try:
        stream: anyio.abc.ByteStream = await anyio.connect_tcp(host, port)
    except OSError as exc:
        raise HTTPError(f"cannot connect to {authority}: {exc}") from None
    try:
        if scheme == "https":
            if context is None:  # pragma: no cover - callers always pass one for https
                raise HTTPError("https needs an SSL context")
            stream = await TLSStream.wrap(
                stream, hostname=host, ssl_context=context, standard_compatible=False
            )
        await stream.send("\r\n".join(lines).encode("utf-8"))
        data = await _read_all(stream)
    except (OSError, anyio.BrokenResourceError, ssl.SSLError) as exc:
        raise HTTPError(f"{authority}: {type(exc).__name__}: {exc}") from None
    finally:
        await anyio.aclose_forcefully(stream)
    return _parse(data)


async def _read_all(stream: anyio.abc.ByteStream) -> bytes:
    data = bytearray()
    while True:
        try:
            data += await stream.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            return bytes(data)
        if len(data) > _MAX_RESPONSE:
            raise HTTPError(f"response larger than {_MAX_RESPONSE // (1024 * 1024)} MiB")


def _parse(data: bytes) -> Response:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise HTTPError("the connection closed before the response's head ended")
    status_line, *header_lines = head.split(b"\r\n")
    match = _STATUS_LINE.fullmatch(status_line)
    if match is None:
        raise HTTPError("malformed status line")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, colon, value = line.partition(b":")
        if not colon:
            raise HTTPError("malformed header line")
        headers[name.decode("latin-1").strip().lower()] = value.strip().decode("latin-1")
    if headers.get("transfer-encoding", "").lower().endswith("chunked"):
        body = _dechunk(body)
    elif "content-length" in headers:
        length = headers["content-length"]
        if not length.isdigit():
            raise HTTPError("malformed Content-Length")
        body = body[: int(length)]
    return Response(int(match.group(1)), headers, body)


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    rest = body
    while True:
        line, sep, rest = rest.partition(b"\r\n")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise HTTPError("malformed chunk size") from None
        if not sep or size == 0:
            return bytes(out)
        out += rest[:size]
        rest = rest[size + 2 :]

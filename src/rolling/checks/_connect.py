"""Opening the checks' TCP connections: directly for IP literals, through anyio otherwise.

``anyio.connect_tcp`` runs Happy Eyeballs: it opens a task group and starts
one task per address, with an event and a timer each, even when the host is
already an IP address and there is only one address to try; and anyio's
socket stream on asyncio is a transport and a protocol, set up and torn down
for each connection. For a probe, which opens a fresh connection every time,
sends one small request and reads one small answer, that machinery costs more
than the connection itself. So for an IP literal the socket is connected here,
non-blocking, and read and written directly (:class:`SocketByteStream`); host
names still go through ``anyio.connect_tcp``, which resolves them and tries
every address.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket

import anyio
import anyio.abc
import anyio.lowlevel

__all__ = ["SocketByteStream", "connect"]

_IN_PROGRESS = frozenset({errno.EINPROGRESS, errno.EWOULDBLOCK})
"""What a non-blocking ``connect`` returns while the handshake goes on (Windows: EWOULDBLOCK)."""


async def connect(host: str, port: int) -> anyio.abc.ByteStream:
    """Open a TCP connection to ``host``:``port``.

    Raises:
        OSError: The connection failed; for an IP literal, the ``OSError``
            subclass of its errno (``ConnectionRefusedError`` for a refusal),
            for a host name, anyio's error that wraps each address's.
    """
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return await anyio.connect_tcp(host, port)
    return await _connect_ip(ip, port)


async def _connect_ip(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int
) -> SocketByteStream:
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET  # noqa: PLR2004 - IPv6
    sock = socket.socket(family, socket.SOCK_STREAM)
    # The socket is ours until the stream owns it: close it on every way out (a refusal,
    # the probe's timeout, the caller's cancellation).
    try:
        return await _wrap_connected(sock, (str(ip), port))
    except BaseException:
        sock.close()
        raise


async def _wrap_connected(sock: socket.socket, address: tuple[str, int]) -> SocketByteStream:
    """Connect ``sock`` without blocking, then hand it over as a stream."""
    sock.setblocking(False)  # noqa: FBT003 - the stdlib's positional flag
    # As anyio's own connect does on both backends: requests go out at once.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    error = sock.connect_ex(address)
    if error in _IN_PROGRESS:
        await anyio.wait_writable(sock)
        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if error:
        raise OSError(error, os.strerror(error))  # the errno's subclass, as connect raises
    return SocketByteStream(sock)


class SocketByteStream(anyio.abc.ByteStream):
    """A connected non-blocking socket as an anyio byte stream, with nothing in between.

    A read or write that would block waits for the socket with
    ``anyio.wait_readable``/``wait_writable``, which are checkpoints, so the
    probe's timeout and the caller's cancellation reach it as they reach any
    anyio stream. The end of the peer's data is :class:`anyio.EndOfStream`; a
    reset is the ``OSError`` the socket raised.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock: socket.socket | None = sock

    def _open_socket(self) -> socket.socket:
        if self._sock is None:
            raise anyio.ClosedResourceError
        return self._sock

    async def receive(self, max_bytes: int = 65536) -> bytes:
        """The next bytes the peer sent; :class:`anyio.EndOfStream` once it has sent all."""
        sock = self._open_socket()
        while True:
            try:
                data = sock.recv(max_bytes)
            except BlockingIOError:
                await anyio.wait_readable(sock)
                sock = self._open_socket()
                continue
            if not data:
                raise anyio.EndOfStream
            return data

    async def send(self, item: bytes) -> None:
        """Send all of ``item``."""
        view = memoryview(item)
        while view:
            sock = self._open_socket()
            try:
                view = view[sock.send(view) :]
            except BlockingIOError:
                await anyio.wait_writable(sock)

    async def send_eof(self) -> None:
        """Send no more (the peer reads the end of the data)."""
        self._open_socket().shutdown(socket.SHUT_WR)

    async def aclose(self) -> None:
        """Close the socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        await anyio.lowlevel.checkpoint()

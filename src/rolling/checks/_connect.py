"""Opening the checks' TCP connections: directly for IP literals, through anyio otherwise.

``anyio.connect_tcp`` runs Happy Eyeballs: it opens a task group and starts
one task per address, with an event and a timer each, even when the host is
already an IP address and there is only one address to try. For a probe,
which opens a fresh connection every time and is often pointed at an IP
address, that machinery costs more than the connection itself. So for an IP
literal the socket is connected here, non-blocking, and handed to anyio once
it is connected; host names still go through ``anyio.connect_tcp``, which
resolves them and tries every address.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket

import anyio
import anyio.abc

__all__ = ["connect"]

_IN_PROGRESS = frozenset({errno.EINPROGRESS, errno.EWOULDBLOCK})
"""What a non-blocking ``connect`` returns while the handshake goes on (Windows: EWOULDBLOCK)."""


async def connect(host: str, port: int) -> anyio.abc.SocketStream:
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
) -> anyio.abc.SocketStream:
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET  # noqa: PLR2004 - IPv6
    sock = socket.socket(family, socket.SOCK_STREAM)
    # The socket is ours until anyio's stream owns it: close it on every way out (a refusal,
    # the probe's timeout, the caller's cancellation).
    try:
        return await _wrap_connected(sock, (str(ip), port))
    except BaseException:
        sock.close()
        raise


async def _wrap_connected(sock: socket.socket, address: tuple[str, int]) -> anyio.abc.SocketStream:
    """Connect ``sock`` without blocking, then hand it to anyio as a stream."""
    sock.setblocking(False)  # noqa: FBT003 - the stdlib's positional flag
    # As anyio's own connect does on both backends: requests go out at once.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    error = sock.connect_ex(address)
    if error in _IN_PROGRESS:
        await anyio.wait_writable(sock)
        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if error:
        raise OSError(error, os.strerror(error))  # the errno's subclass, as connect raises
    try:
        return await anyio.abc.SocketStream.from_socket(sock)
    except ValueError:
        # from_socket checks that the socket has a peer: a peer that reset the connection
        # since it opened has gone, and that is a failed connection, not a bad argument.
        error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) or errno.ECONNRESET
        raise OSError(error, os.strerror(error)) from None

"""Accepting connections in a way that is safe to cancel on every backend.

anyio's ``SocketListener.accept()`` awaits ``loop.sock_accept()`` on asyncio.
On CPython 3.11 that call has a race: when the accept is cancelled in the same
loop turn as a client connects, the loop still accepts the connection and then
fails to hand it over (``InvalidStateError: invalid state`` in ``_sock_accept``,
logged as "Exception in callback"). The accepted socket is leaked until the
garbage collector finds it. Stopping a listener by cancelling its accept is the
normal way to stop it, and health checks connect every few milliseconds, so
this is hit in practice. (python/cpython#153761, fixed upstream in 2026; the
3.11 releases this project supports have it.)

:func:`accept` does the same job without ``sock_accept``: it waits until the
listening socket is readable, then calls the non-blocking ``accept()`` itself,
so a cancellation either comes before the accept (the connection stays queued
for the next one) or after it (the stream is returned; the caller closes it).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
from anyio.streams.stapled import MultiListener


async def accept(listener: anyio.abc.SocketListener) -> anyio.abc.SocketStream:
    """Accept one connection from ``listener`` as a socket stream (TCP_NODELAY on).

    A connection its client reset or gave up before it was taken is skipped:
    there is nobody to serve (a health check that connects and resets does that).

    Raises:
        OSError: ``accept()`` failed (out of file descriptors, for example).
    """
    raw: socket.socket = listener.extra(anyio.abc.SocketAttribute.raw_socket)  # noqa: S610 - anyio's typed attributes, not Django
    await anyio.lowlevel.checkpoint_if_cancelled()
    while True:
        try:
            client, _address = raw.accept()
        except (BlockingIOError, InterruptedError):
            await anyio.wait_readable(raw)
            continue
        except ConnectionAbortedError:
            continue  # the client gave up while its connection was queued
        stream = await _wrapped(client)
        if stream is not None:
            return stream


async def _wrapped(client: socket.socket) -> anyio.abc.SocketStream | None:
    """``client`` as a stream, or None (and closed) when its peer has reset it already."""
    stream: anyio.abc.SocketStream | None = None
    try:
        if client.family in (socket.AF_INET, socket.AF_INET6):
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Shielded: the connection is taken; a cancellation now would drop it.
        # The caller's next checkpoint sees the cancellation, with the stream in hand.
        with anyio.CancelScope(shield=True):
            stream = await anyio.abc.SocketStream.from_socket(client)
    except (OSError, ValueError):
        # anyio refuses a socket with no peer (ValueError from getpeername's ENOTCONN):
        # the client reset it while it waited to be accepted.
        client.close()
        return None
    except BaseException:
        client.close()
        raise
    return stream


async def serve(
    listener: anyio.abc.Listener[anyio.abc.SocketStream],
    handler: Callable[[anyio.abc.SocketStream], Any],
    task_group: anyio.abc.TaskGroup | None = None,
) -> None:
    """``listener.serve(handler, task_group)``, accepting through :func:`accept`.

    ``handler`` is an async function of the connection's stream, as anyio's takes.

    ``listener`` is what ``anyio.create_tcp_listener`` returned (one socket
    listener or several); each connection is handled by ``handler`` in
    ``task_group`` (by default, a task group of this call's own).
    """
    if task_group is None:
        async with anyio.create_task_group() as own:
            await serve(listener, handler, own)
        return
    async with anyio.create_task_group() as accepting:
        for each in socket_listeners(listener):
            accepting.start_soon(_accept_forever, each, handler, task_group)


async def _accept_forever(
    listener: anyio.abc.SocketListener,
    handler: Callable[[anyio.abc.SocketStream], Any],
    task_group: anyio.abc.TaskGroup,
) -> None:
    while True:
        task_group.start_soon(handler, await accept(listener))


def socket_listeners(
    listener: anyio.abc.Listener[anyio.abc.SocketStream],
) -> list[anyio.abc.SocketListener]:
    """The socket listeners behind what ``anyio.create_tcp_listener`` returned."""
    parts = listener.listeners if isinstance(listener, MultiListener) else [listener]
    found: list[anyio.abc.SocketListener] = []
    for each in parts:
        if not isinstance(each, anyio.abc.SocketListener):
            raise TypeError(f"not a socket listener: {each!r}")
        found.append(each)
    return found

"""Accepting connections: a cancelled accept never takes a connection with it.

On CPython 3.11's asyncio, anyio's ``accept()`` could lose a connection that
arrived in the same loop turn as the cancellation (and log ``InvalidStateError``
from the loop; anyio's test runner turns that into a failure of the test).
"""

from __future__ import annotations

import socket
import struct

import anyio
import anyio.abc
import anyio.lowlevel
import pytest
from anyio.streams.stapled import MultiListener

from helpers import LOOPBACK, port_of
from rolling.routers._accept import accept, serve, socket_listeners

pytestmark = [pytest.mark.anyio, pytest.mark.real_time]


async def _listener() -> anyio.abc.SocketListener:
    (listener,) = socket_listeners(await anyio.create_tcp_listener(local_host=LOOPBACK))
    return listener


async def test_an_accept_cancelled_as_a_client_connects_never_loses_the_connection() -> None:
    """The connection is either returned by the cancelled accept or left for the next."""
    async with await _listener() as listener:
        clients: list[socket.socket] = []
        taken: list[anyio.abc.SocketStream] = []

        async def accepting() -> None:
            taken.append(await accept(listener))

        try:
            for attempt in range(20):
                async with anyio.create_task_group() as group:
                    group.start_soon(accepting)
                    await anyio.wait_all_tasks_blocked()
                    # On loopback the kernel completes the handshake at once, so the
                    # listening socket is readable when the loop next polls; the cancel
                    # comes in the turn that runs the callbacks of that poll.
                    clients.append(socket.create_connection((LOOPBACK, port_of(listener))))
                    await anyio.lowlevel.checkpoint()
                    group.cancel_scope.cancel()
                if taken:
                    stream = taken.pop()
                else:
                    with anyio.fail_after(5):  # a lost connection would wait forever
                        stream = await accept(listener)
                async with stream:
                    clients[-1].sendall(f"hello {attempt}".encode())
                    assert await stream.receive() == f"hello {attempt}".encode()
        finally:
            for each in clients:
                each.close()


async def test_a_connection_reset_before_it_is_taken_is_skipped() -> None:
    """A health check that connects and resets at once left anyio refusing the socket
    ("the socket must be connected"), which stopped the whole server."""
    async with await _listener() as listener:
        port = port_of(listener)
        gone = socket.create_connection((LOOPBACK, port))
        # Linger 0: close() sends a reset, and the queued connection has no peer any more.
        gone.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        gone.close()
        with socket.create_connection((LOOPBACK, port)) as alive:
            alive.sendall(b"still here")
            with anyio.fail_after(5):
                stream = await accept(listener)
            async with stream:
                assert await stream.receive() == b"still here"


async def test_serve_hands_every_connection_to_the_handler_with_nodelay() -> None:
    tcp = await anyio.create_tcp_listener(local_host=LOOPBACK)
    seen: list[tuple[bytes, int]] = []

    async def handler(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)  # noqa: S610 - anyio's typed attributes, not Django
            seen.append(
                (await stream.receive(), raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            )
            await stream.send(b"bye")

    async with tcp, anyio.create_task_group() as group:
        group.start_soon(serve, tcp, handler)
        for n in range(3):
            async with await anyio.connect_tcp(LOOPBACK, port_of(tcp)) as client:
                await client.send(b"%d" % n)
                assert await client.receive() == b"bye"
        group.cancel_scope.cancel()
    assert sorted(message for message, _ in seen) == [b"0", b"1", b"2"]
    assert all(nodelay for _, nodelay in seen)


class _NotASocket(anyio.abc.Listener[anyio.abc.SocketStream]):
    async def serve(self, handler: object, task_group: object = None) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        pass


async def test_socket_listeners_refuses_what_is_not_a_socket_listener() -> None:
    async with await _listener() as listener:
        assert socket_listeners(listener) == [listener]
        assert socket_listeners(MultiListener([listener, listener])) == [listener, listener]
        with pytest.raises(TypeError, match="not a socket listener"):
            socket_listeners(MultiListener([listener, _NotASocket()]))

"""The checks' direct socket stream, against a real loopback peer."""

from __future__ import annotations

import anyio
import anyio.abc
import pytest

from helpers import LOOPBACK, port_of
from rolling.checks._connect import SocketByteStream, connect

pytestmark = [pytest.mark.anyio, pytest.mark.real_time]


async def _pair() -> tuple[anyio.abc.SocketListener, SocketByteStream, anyio.abc.SocketStream]:
    listener = (await anyio.create_tcp_listener(local_host=LOOPBACK)).listeners[0]
    assert isinstance(listener, anyio.abc.SocketListener)
    ours = await connect(LOOPBACK, port_of(listener))
    assert isinstance(ours, SocketByteStream)
    theirs = await listener.accept()
    return listener, ours, theirs


async def test_a_send_larger_than_the_socket_buffers_waits_until_the_peer_reads() -> None:
    listener, ours, theirs = await _pair()
    payload = bytes(range(256)) * 40_000  # 10 MB: far more than both buffers hold
    received = bytearray()

    async def read_all() -> None:
        try:
            while True:
                received.extend(await theirs.receive())
        except anyio.EndOfStream:
            pass

    async with listener, theirs, ours, anyio.create_task_group() as tg:
        tg.start_soon(read_all)
        await ours.send(payload)
        await ours.send_eof()
    assert bytes(received) == payload


async def test_the_end_of_the_peers_data_and_a_closed_stream_are_anyio_errors() -> None:
    listener, ours, theirs = await _pair()
    async with listener:
        await theirs.send(b"last words")
        await theirs.aclose()
        assert await ours.receive() == b"last words"
        with pytest.raises(anyio.EndOfStream):
            await ours.receive()
        await ours.aclose()
        await ours.aclose()  # a second close is harmless
        with pytest.raises(anyio.ClosedResourceError):
            await ours.receive()
        with pytest.raises(anyio.ClosedResourceError):
            await ours.send(b"x")


async def test_a_receive_waits_for_data_and_is_cancellable() -> None:
    listener, ours, theirs = await _pair()
    async with listener, theirs, ours:
        with anyio.move_on_after(0.05) as scope:
            await ours.receive()
        assert scope.cancelled_caught
        await theirs.send(b"late")
        assert await ours.receive() == b"late"

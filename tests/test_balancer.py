"""The built-in TCP balancer, with real sockets on 127.0.0.1 and real time."""

from __future__ import annotations

import collections
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
import attrs
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from helpers import LOOPBACK, Node, port_of
from rolling import (
    ConfigError,
    Readiness,
    RollingError,
    Rollout,
    RolloutResult,
    RolloutStatus,
)
from rolling.checks import HTTPCheck
from rolling.routers._accept import serve as serve_connections
from rolling.routers.balancer import BackendStats, Balancer, BalancerError, BalancerStats
from rolling.typing import Router

pytestmark = [pytest.mark.anyio, pytest.mark.real_time]

Handler = Callable[[anyio.abc.SocketStream], Awaitable[None]]


@contextlib.asynccontextmanager
async def serving(handler: Handler) -> AsyncGenerator[int]:
    """Serve ``handler`` on a free loopback port; yield the port."""
    listener = await anyio.create_tcp_listener(local_host=LOOPBACK, local_port=0)
    port = port_of(listener)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(serve_connections, listener, handler)
        yield port
        tg.cancel_scope.cancel()


@contextlib.asynccontextmanager
async def nodes(*handlers: tuple[str, Handler]) -> AsyncGenerator[list[Node]]:
    """One backend server per (name, handler)."""
    async with contextlib.AsyncExitStack() as stack:
        found = [Node(name, await stack.enter_async_context(serving(h))) for name, h in handlers]
        yield found


def says(name: str) -> Handler:
    """A backend that answers every connection with its name and closes."""

    async def handler(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await stream.send(name.encode())

    return handler


def shouts(name: str) -> Handler:
    """A backend that reads to the end, then answers ``name:`` and the bytes upper-cased."""

    async def handler(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            data = await read_all(stream)
            await stream.send(f"{name}:".encode() + data.upper())

    return handler


async def read_all(stream: anyio.abc.ByteReceiveStream) -> bytes:
    data = b""
    async for chunk in stream:
        data += chunk
    return data


async def fetch(port: int, payload: bytes | None = None) -> bytes:
    """Connect, optionally send ``payload`` and half-close, then read to the end."""
    async with await anyio.connect_tcp(LOOPBACK, port) as stream:
        if payload is not None:
            await stream.send(payload)
            await stream.send_eof()
        return await read_all(stream)


async def eventually(predicate: Callable[[], bool]) -> None:
    """Wait (at most 2 s) until ``predicate()`` holds."""
    with anyio.fail_after(2):
        while not predicate():  # noqa: ASYNC110 - polls counters that have no event to wait on
            await anyio.sleep(0.01)


async def settle(lb: Balancer) -> BalancerStats:
    """The stats once every connection the balancer still holds has ended.

    A client sees the end of its connection a moment before the balancer has
    finished tearing down its side.
    """
    await eventually(lambda: lb.stats().active == 0)
    return lb.stats()


async def closed_port() -> int:
    listener = await anyio.create_tcp_listener(local_host=LOOPBACK, local_port=0)
    port = port_of(listener)
    await listener.aclose()
    return port


class Gate:
    """A backend that holds each connection until released; records when it saw one."""

    def __init__(self) -> None:
        self.connected = anyio.Event()
        self.release = anyio.Event()

    async def __call__(self, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            self.connected.set()
            await self.release.wait()
            await stream.send(b"done")


async def hangs(stream: anyio.abc.SocketStream) -> None:
    """A backend that keeps every connection open and silent."""
    async with stream:
        await anyio.sleep_forever()


async def test_is_a_router() -> None:
    assert isinstance(Balancer(), Router)


async def test_round_robin_is_exact() -> None:
    three = (("a", says("a")), ("b", says("b")), ("c", says("c")))
    async with nodes(*three) as fleet, Balancer() as lb:
        for node in fleet:
            await lb.attach(node)
        assert lb.backends == ("a", "b", "c")
        answers = [await fetch(lb.port) for _ in range(30)]
        stats = await settle(lb)
    assert collections.Counter(answers) == {b"a": 10, b"b": 10, b"c": 10}
    assert answers[:6] == [b"a", b"b", b"c", b"a", b"b", b"c"]
    assert stats.accepted == 30
    assert stats.refused == 0
    assert {key: b.total for key, b in stats.backends.items()} == {"a": 10, "b": 10, "c": 10}
    assert stats.backends["a"] == BackendStats(
        id="a", address=(LOOPBACK, fleet[0].port), attached=True, active=0, total=10, failed=0
    )


async def test_attach_is_idempotent() -> None:
    async with nodes(("a", says("a")), ("b", says("b"))) as fleet, Balancer() as lb:
        for node in [*fleet, *fleet, fleet[0]]:
            await lb.attach(node)
        assert lb.backends == ("a", "b")
        answers = [await fetch(lb.port) for _ in range(10)]
    assert collections.Counter(answers) == {b"a": 5, b"b": 5}


async def test_detached_backend_gets_no_new_connections() -> None:
    three = (("a", says("a")), ("b", says("b")), ("c", says("c")))
    async with nodes(*three) as fleet, Balancer() as lb:
        for node in fleet:
            await lb.attach(node)
        first = [await fetch(lb.port) for _ in range(3)]
        await lb.detach(fleet[1])
        assert lb.backends == ("a", "c")
        after = [await fetch(lb.port) for _ in range(20)]
        await lb.attach(fleet[1])
        again = [await fetch(lb.port) for _ in range(30)]
        stats = lb.stats()
    assert first == [b"a", b"b", b"c"]
    assert collections.Counter(after) == {b"a": 10, b"c": 10}
    assert collections.Counter(again) == {b"a": 10, b"b": 10, b"c": 10}
    assert stats.backends["b"].total == 11
    assert stats.drain_timeouts == 0


async def test_detach_waits_for_open_connections() -> None:
    gate = Gate()
    log: list[str] = []
    started = 0.0
    async with nodes(("slow", gate)) as fleet, Balancer(drain_timeout=5) as lb:
        await lb.attach(fleet[0])

        async def client() -> None:
            assert await fetch(lb.port) == b"done"
            log.append("connection closed")

        async def detach() -> None:
            await lb.detach(fleet[0])
            log.append("detached")

        async with anyio.create_task_group() as tg:
            tg.start_soon(client)
            with anyio.fail_after(2):
                await gate.connected.wait()
            assert lb.stats().backends["slow"].active == 1
            tg.start_soon(detach)
            await anyio.sleep(0.3)
            assert log == []  # the connection is open, so detach is still waiting
            assert lb.backends == ()
            started = anyio.current_time()
            gate.release.set()
        waited = anyio.current_time() - started
        stats = lb.stats()
    assert log == ["connection closed", "detached"]
    assert waited < 1
    assert stats.drain_timeouts == 0
    assert stats.backends["slow"].active == 0


async def test_detach_is_bounded_by_drain_timeout() -> None:
    async with nodes(("stuck", hangs)) as fleet, Balancer(drain_timeout=0.3) as lb:
        await lb.attach(fleet[0])
        async with await anyio.connect_tcp(LOOPBACK, lb.port):
            await eventually(lambda: lb.stats().backends["stuck"].active == 1)
            started = anyio.current_time()
            await lb.detach(fleet[0])
            waited = anyio.current_time() - started
            stats = lb.stats()
    assert 0.25 <= waited < 1
    assert stats.drain_timeouts == 1
    assert stats.backends["stuck"].active == 1
    assert stats.backends["stuck"].attached is False


async def test_reattach_ends_a_drain_early() -> None:
    gate = Gate()
    async with nodes(("slow", gate)) as fleet, Balancer(drain_timeout=5) as lb:
        await lb.attach(fleet[0])
        async with anyio.create_task_group() as tg:
            tg.start_soon(fetch, lb.port)
            with anyio.fail_after(2):
                await gate.connected.wait()
            done = anyio.Event()

            async def detach() -> None:
                await lb.detach(fleet[0])
                done.set()

            tg.start_soon(detach)
            await anyio.sleep(0.1)
            await lb.attach(fleet[0])
            with anyio.fail_after(1):
                await done.wait()
            gate.release.set()
        assert lb.stats().drain_timeouts == 0
        assert lb.backends == ("slow",)


async def test_detach_of_idle_or_unknown_instance_returns_at_once() -> None:
    async with nodes(("a", says("a"))) as fleet, Balancer(drain_timeout=5) as lb:
        with anyio.fail_after(0.5):
            await lb.detach(Node("nobody", 1))
            await lb.detach(fleet[0])  # never attached: unknown
            await lb.attach(fleet[0])
            await lb.detach(fleet[0])
            await lb.detach(fleet[0])  # twice
        assert lb.backends == ()
        assert lb.stats().drain_timeouts == 0


async def test_without_backends_clients_are_refused() -> None:
    async with Balancer() as lb:
        assert await fetch(lb.port) == b""
        assert await fetch(lb.port) == b""
        stats = lb.stats()
    assert stats.accepted == 2
    assert stats.refused == 2
    assert stats.backends == {}


async def test_failed_connect_refuses_the_client_without_retry() -> None:
    dead = Node("dead", await closed_port())
    async with nodes(("live", says("live"))) as fleet, Balancer() as lb:
        await lb.attach(dead)
        await lb.attach(fleet[0])
        answers = [await fetch(lb.port) for _ in range(4)]
        stats = await settle(lb)
    assert answers == [b"", b"live", b"", b"live"]
    assert stats.refused == 2
    assert stats.backends["dead"].failed == 2
    assert stats.backends["dead"].total == 0
    assert stats.backends["dead"].active == 0


async def test_retries_try_the_next_backend() -> None:
    dead = Node("dead", await closed_port())
    async with nodes(("live", says("live"))) as fleet, Balancer(retries=1) as lb:
        await lb.attach(dead)
        await lb.attach(fleet[0])
        answers = [await fetch(lb.port) for _ in range(4)]
        stats = lb.stats()
    assert answers == [b"live"] * 4
    assert stats.refused == 0
    assert stats.backends["live"].total == 4


async def test_retries_do_not_try_one_backend_twice() -> None:
    dead = Node("dead", await closed_port())
    async with Balancer(retries=5) as lb:
        await lb.attach(dead)
        assert await fetch(lb.port) == b""
        stats = lb.stats()
    assert stats.refused == 1
    assert stats.backends["dead"].failed == 1


async def test_client_half_close_reaches_the_backend() -> None:
    async with nodes(("a", shouts("a")), ("b", shouts("b"))) as fleet, Balancer() as lb:
        for node in fleet:
            await lb.attach(node)
        async with await anyio.connect_tcp(LOOPBACK, lb.port) as stream:
            await stream.send(b"hello ")
            await anyio.sleep(0.05)
            await stream.send(b"world")
            await stream.send_eof()
            reply = await read_all(stream)
        assert reply == b"a:HELLO WORLD"
        assert await fetch(lb.port, b"again") == b"b:AGAIN"


async def test_backend_half_close_keeps_the_client_direction_open() -> None:
    received: list[bytes] = []

    async def greets_then_listens(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await stream.send(b"ready")
            await stream.send_eof()
            received.append(await read_all(stream))

    async with nodes(("a", greets_then_listens)) as fleet, Balancer() as lb:
        await lb.attach(fleet[0])
        async with await anyio.connect_tcp(LOOPBACK, lb.port) as stream:
            assert await read_all(stream) == b"ready"
            await stream.send(b"after the backend's EOF")
            await stream.send_eof()
            await eventually(lambda: bool(received))
    assert received == [b"after the backend's EOF"]


async def test_many_concurrent_connections() -> None:
    handlers = [(name, shouts(name)) for name in ("a", "b", "c")]
    replies: dict[int, bytes] = {}
    async with nodes(*handlers) as fleet, Balancer() as lb:
        for node in fleet:
            await lb.attach(node)

        async def client(index: int) -> None:
            replies[index] = await fetch(lb.port, f"client {index}".encode())

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for index in range(200):
                    tg.start_soon(client, index)
        stats = await settle(lb)
    assert len(replies) == 200
    for index, reply in replies.items():
        name, _, body = reply.partition(b":")
        assert name in {b"a", b"b", b"c"}
        assert body == f"CLIENT {index}".encode()
    assert sorted(b.total for b in stats.backends.values()) == [66, 67, 67]
    assert stats.accepted == 200
    assert stats.refused == 0
    assert stats.active == 0


async def test_exit_stops_listening_and_cuts_connections() -> None:
    async with nodes(("stuck", hangs)) as fleet:
        with anyio.fail_after(2):
            async with Balancer() as lb:
                await lb.attach(fleet[0])
                port = lb.port
                client = await anyio.connect_tcp(LOOPBACK, port)
                await eventually(lambda: lb.stats().active == 1)
        async with client:
            with anyio.fail_after(2), contextlib.suppress(anyio.BrokenResourceError):
                assert await read_all(client) == b""
    with pytest.raises(OSError, match=r"connection attempts failed|refused"):
        await anyio.connect_tcp(LOOPBACK, port)
    await lb.detach(fleet[0])  # after exit: a no-op, nothing flows any more
    with pytest.raises(BalancerError, match="closed"):
        await lb.attach(fleet[0])


async def test_exit_when_the_block_is_cancelled() -> None:
    port = 0
    with anyio.move_on_after(0.2) as scope:
        async with Balancer() as lb:
            port = lb.port
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    with pytest.raises(OSError, match=r"connection attempts failed|refused"):
        await anyio.connect_tcp(LOOPBACK, port)


async def test_error_in_the_block_propagates() -> None:
    with pytest.raises(ZeroDivisionError):
        async with Balancer():
            _ = 1 / 0


async def test_custom_address() -> None:
    @attrs.frozen
    class Named:
        id: str
        version: str = "v1"

    async with serving(says("x")) as port:
        lb = Balancer(address=lambda i: (LOOPBACK, port if i.id == "x" else 1))
        async with lb:
            await lb.attach(Named("x"))
            assert await fetch(lb.port) == b"x"


async def test_misuse_raises_balancer_error() -> None:
    lb = Balancer()
    assert issubclass(BalancerError, RollingError)
    with pytest.raises(BalancerError, match="before the Balancer is entered"):
        await lb.attach(Node("a", 1))
    with pytest.raises(BalancerError, match="before the Balancer is entered"):
        await lb.detach(Node("a", 1))
    with pytest.raises(BalancerError, match="entered"):
        _ = lb.port
    async with lb:
        with pytest.raises(BalancerError, match="entered once"):
            await lb.__aenter__()
        with pytest.raises(BalancerError, match="cannot find the address"):
            await lb.attach(object())  # has no host and port
        with pytest.raises(BalancerError, match="not an int from 1 to 65535"):
            await lb.attach(Node("a", 0))
        assert lb.backends == ()


async def test_stats_are_frozen_snapshots() -> None:
    async with Balancer() as lb:
        stats = lb.stats()
    assert stats == BalancerStats(accepted=0, refused=0, drain_timeouts=0, active=0, backends={})
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        stats.accepted = 1  # type: ignore[misc]  # checking that it is frozen


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"host": ""}, "Balancer.host"),
        ({"port": -1}, "Balancer.port"),
        ({"port": 70000}, "Balancer.port"),
        ({"port": "80"}, "Balancer.port"),
        ({"address": "127.0.0.1:80"}, "Balancer.address"),
        ({"drain_timeout": -1}, "Balancer.drain_timeout"),
        ({"connect_timeout": 0}, "Balancer.connect_timeout"),
        ({"retries": -1}, "Balancer.retries"),
        ({"retries": 1.5}, "Balancer.retries"),
    ],
)
def test_config_errors(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Balancer(**kwargs)
    assert caught.value.field == field


def answers_http(version: str) -> Handler:
    """A backend that answers one HTTP request with its version, then closes."""

    async def handler(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            reader = BufferedByteReceiveStream(stream)
            with contextlib.suppress(anyio.IncompleteRead, anyio.BrokenResourceError):
                await reader.receive_until(b"\r\n\r\n", 65536)
                body = version.encode()
                head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                await stream.send(head + body)

    return handler


class ServerFleet:
    """An in-place driver whose instances are loopback HTTP servers (new port per version)."""

    def __init__(self, task_group: anyio.abc.TaskGroup) -> None:
        self._task_group = task_group
        self._stops: dict[str, anyio.CancelScope] = {}
        self.nodes: list[Node] = []

    async def start(self, key: str, version: str) -> Node:
        port: int = await self._task_group.start(self._serve, key, version)
        return Node(key, port, version=version)

    async def _serve(
        self, key: str, version: str, *, task_status: anyio.abc.TaskStatus[int]
    ) -> None:
        with anyio.CancelScope() as scope:
            self._stops[key] = scope
            listener = await anyio.create_tcp_listener(local_host=LOOPBACK, local_port=0)
            async with listener:
                task_status.started(port_of(listener))
                await serve_connections(listener, answers_http(version))

    async def list_instances(self) -> list[Node]:
        return list(self.nodes)

    async def replace(self, instance: Node, version: str) -> Node:
        self._stops.pop(instance.id).cancel()  # the old version stops serving at once
        new = await self.start(instance.id, version)
        self.nodes = [new if node.id == new.id else node for node in self.nodes]
        return new


async def test_rollout_behind_the_balancer_refuses_nothing() -> None:
    """Detach drains before the driver replaces, so clients never meet a stopped server."""
    replies: list[bytes] = []
    results: list[RolloutResult] = []
    lb = Balancer(drain_timeout=2)
    async with anyio.create_task_group() as servers:
        fleet = ServerFleet(servers)
        fleet.nodes = [await fleet.start(f"web-{n}", "v1") for n in range(3)]
        async with lb:
            for node in fleet.nodes:
                await lb.attach(node)
            done = anyio.Event()

            async def traffic() -> None:
                while not done.is_set():
                    reply = await fetch(lb.port, b"GET / HTTP/1.1\r\nHost: lb\r\n\r\n")
                    replies.append(reply.rpartition(b"\r\n\r\n")[2])

            readiness = Readiness(
                check=HTTPCheck("/", timeout=0.5), period=0.05, timeout=1, deadline=5
            )
            rollout = Rollout(fleet, "v2", readiness=readiness, router=lb, cleanup_timeout=2)
            async with anyio.create_task_group() as clients:
                for _ in range(3):
                    clients.start_soon(traffic)
                await anyio.sleep(0.05)
                with anyio.fail_after(10):
                    results.append(await rollout.run())
                await anyio.sleep(0.05)
                done.set()
            ports = {backend.address[1] for backend in (await settle(lb)).backends.values()}
            assert ports == {node.port for node in fleet.nodes}  # the new servers' ports
        servers.cancel_scope.cancel()
    stats = lb.stats()
    assert [result.status for result in results] == [RolloutStatus.SUCCEEDED]
    assert stats.refused == 0
    assert b"" not in replies
    assert replies[0] == b"v1"
    assert replies[-1] == b"v2"
    assert set(replies) == {b"v1", b"v2"}
    assert lb.backends == ()  # closed
    assert sorted(stats.backends) == ["web-0", "web-1", "web-2"]

"""Balancer weights: smooth weighted round robin, with real sockets and real time."""

from __future__ import annotations

import collections
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
import pytest

from helpers import LOOPBACK, Node, free_port, port_of
from rolling import ConfigError
from rolling.routers._accept import serve as serve_connections
from rolling.routers.balancer import Balancer
from rolling.typing import FULL_WEIGHT, MAX_WEIGHT, WeightedRouter

pytestmark = [pytest.mark.anyio, pytest.mark.real_time]

Handler = Callable[[anyio.abc.SocketStream], Awaitable[None]]

REQUESTS_PER_POINT = 2000
CLIENTS = 8


def says(name: str) -> Handler:
    """Answers every connection with its name, then closes."""

    async def handler(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await stream.send(name.encode())

    return handler


def echoes(name: str) -> Handler:
    """Answers every chunk it receives with ``name:`` and the chunk, until the client ends."""

    async def handler(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            async for chunk in stream:
                await stream.send(name.encode() + b":" + chunk)

    return handler


@contextlib.asynccontextmanager
async def backends(*handlers: tuple[str, Handler]) -> AsyncGenerator[list[Node]]:
    """One listening backend per ``(name, handler)``, on a free loopback port each."""
    async with contextlib.AsyncExitStack() as stack:
        listeners = [
            await stack.enter_async_context(
                await anyio.create_tcp_listener(local_host=LOOPBACK, local_port=0)
            )
            for _ in handlers
        ]
        # Entered last, so it stops serving before the listeners close.
        async with anyio.create_task_group() as task_group:
            for listener, (_name, handler) in zip(listeners, handlers, strict=True):
                task_group.start_soon(serve_connections, listener, handler)
            yield [
                Node(name, port_of(listener))
                for listener, (name, _handler) in zip(listeners, handlers, strict=True)
            ]
            task_group.cancel_scope.cancel()


async def fetch(port: int) -> bytes:
    async with await anyio.connect_tcp(LOOPBACK, port) as stream:
        data = b""
        async for chunk in stream:
            data += chunk
        return data


async def load(port: int, requests: int) -> collections.Counter[bytes]:
    """``requests`` connections through the balancer from ``CLIENTS`` steady clients."""
    answers: collections.Counter[bytes] = collections.Counter()
    left = requests

    async def client() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            answers[await fetch(port)] += 1

    async with anyio.create_task_group() as task_group:
        for _ in range(CLIENTS):
            task_group.start_soon(client)
    return answers


async def test_is_a_weighted_router() -> None:
    assert isinstance(Balancer(), WeightedRouter)


async def test_smooth_weighted_round_robin_order_is_nginx_s() -> None:
    handlers = (("a", says("a")), ("b", says("b")), ("c", says("c")))
    async with backends(*handlers) as (a, b, c), Balancer() as lb:
        for node, weight in ((a, 5), (b, 1), (c, 1)):
            await lb.attach(node)
            await lb.set_weight(node, weight)
        answers = [await fetch(lb.port) for _ in range(14)]
    # nginx's documented sequence for weights 5, 1, 1, twice over.
    assert b"".join(answers) == b"aabacaa" * 2


@pytest.mark.parametrize("share", [5, 25, 50])
async def test_canary_share_is_within_three_points(share: int) -> None:
    handlers = [(name, says(name)) for name in ("stable1", "stable2", "canary1", "canary2")]
    async with backends(*handlers) as fleet, Balancer() as lb:
        for node in fleet:
            await lb.attach(node)
        # Each stable backend at 100 - share and each canary at share: the canary set gets
        # share / 100 of all new connections.
        for node in fleet:
            await lb.set_weight(node, share if node.id.startswith("canary") else 100 - share)
        answers = await load(lb.port, REQUESTS_PER_POINT)
    total = sum(answers.values())
    canary = answers[b"canary1"] + answers[b"canary2"]
    measured = 100 * canary / total
    assert total == REQUESTS_PER_POINT, answers
    assert abs(measured - share) <= 3, (
        f"canary share {measured:.2f} % of {total} requests ({canary} to the canaries), "
        f"asked for {share} %: {dict(answers)}"
    )


async def test_weight_zero_stops_new_connections_but_keeps_open_ones() -> None:
    async with backends(("a", echoes("a")), ("b", says("b"))) as (a, b), Balancer() as lb:
        await lb.attach(a)
        await lb.set_weight(b, 0)
        await lb.attach(b)
        async with await anyio.connect_tcp(LOOPBACK, lb.port) as long_lived:
            await long_lived.send(b"before")
            assert await long_lived.receive() == b"a:before"
            await lb.set_weight(a, 0)
            await lb.set_weight(b, FULL_WEIGHT)
            after = [await fetch(lb.port) for _ in range(20)]
            # Still attached, still flowing: weight 0 is not a drain.
            assert lb.backends == ("a", "b")
            await long_lived.send(b"after")
            assert await long_lived.receive() == b"a:after"
            stats = lb.stats()
    assert after == [b"b"] * 20
    assert stats.backends["a"].weight == 0
    assert stats.backends["a"].active == 1
    assert stats.backends["a"].total == 1
    assert stats.backends["b"].weight == FULL_WEIGHT


async def test_every_backend_at_zero_refuses_clients() -> None:
    async with backends(("a", says("a"))) as (a,), Balancer() as lb:
        await lb.attach(a)
        await lb.set_weight(a, 0)
        assert await fetch(lb.port) == b""
        await lb.set_weight(a, 1)
        assert await fetch(lb.port) == b"a"
        stats = lb.stats()
    assert stats.refused == 1
    assert stats.accepted == 2


async def test_a_retry_goes_to_a_backend_not_tried_yet_even_a_light_one() -> None:
    """The weighted pick would choose the heavy dead backend again; the retry skips it."""
    dead = Node("dead", free_port())  # nothing listens there: connecting is refused
    async with backends(("live", says("live"))) as (live,), Balancer(retries=1) as lb:
        await lb.attach(dead)
        await lb.attach(live)
        await lb.set_weight(dead, 256)
        await lb.set_weight(live, 1)
        answers = [await fetch(lb.port) for _ in range(4)]
        stats = lb.stats()
    assert answers == [b"live"] * 4
    assert stats.refused == 0
    assert stats.backends["dead"].failed == 4
    assert stats.backends["live"].total == 4


async def test_retries_are_weighted_among_the_untried_and_never_reach_weight_zero() -> None:
    dead = Node("dead", free_port())
    handlers = (("a", says("a")), ("b", says("b")), ("idle", says("idle")))
    async with backends(*handlers) as (a, b, idle), Balancer(retries=2) as lb:
        for node, weight in ((dead, 200), (a, 3), (b, 1), (idle, 0)):
            await lb.attach(node)
            await lb.set_weight(node, weight)
        answers = await load(lb.port, 400)
        stats = lb.stats()
    assert answers[b""] == 0, answers
    assert answers[b"idle"] == 0, answers
    assert stats.backends["idle"].total == 0
    # a and b share the retries 3 to 1: a a clear majority, b some.
    assert answers[b"a"] + answers[b"b"] == 400
    assert 250 <= answers[b"a"] <= 350, answers


async def test_with_every_other_backend_tried_or_at_zero_the_client_is_refused() -> None:
    dead = Node("dead", free_port())
    async with backends(("idle", says("idle"))) as (idle,), Balancer(retries=3) as lb:
        await lb.attach(dead)
        await lb.attach(idle)
        await lb.set_weight(idle, 0)
        assert await fetch(lb.port) == b""
        stats = lb.stats()
    assert stats.refused == 1
    assert stats.backends["dead"].failed == 1
    assert stats.backends["idle"].total == 0


async def test_set_weight_before_attach_is_kept_for_the_attach() -> None:
    handlers = (("a", says("a")), ("b", says("b")))
    async with backends(*handlers) as (a, b):
        lb = Balancer()
        await lb.set_weight(a, 3)  # before the balancer even runs
        async with lb:
            await lb.set_weight(b, 1)
            assert lb.backends == ()
            await lb.attach(a)
            await lb.attach(b)
            answers = [await fetch(lb.port) for _ in range(8)]
            await lb.detach(a)
            await lb.attach(a)  # a detached backend keeps its weight
            again = [await fetch(lb.port) for _ in range(8)]
            stats = lb.stats()
    assert collections.Counter(answers) == {b"a": 6, b"b": 2}
    assert collections.Counter(again) == {b"a": 6, b"b": 2}
    assert stats.backends["a"].weight == 3


async def test_attached_without_a_weight_serves_at_full_weight() -> None:
    async with backends(("a", says("a")), ("b", says("b"))) as (a, b), Balancer() as lb:
        await lb.attach(a)
        await lb.attach(b)
        await lb.set_weight(b, FULL_WEIGHT // 4)
        answers = [await fetch(lb.port) for _ in range(10)]
        stats = lb.stats()
    assert stats.backends["a"].weight == FULL_WEIGHT
    assert collections.Counter(answers) == {b"a": 8, b"b": 2}


@pytest.mark.parametrize("weight", [-1, MAX_WEIGHT + 1, 1.5, True, "5", None])
async def test_bad_weight_is_a_config_error_and_changes_nothing(weight: Any) -> None:
    async with backends(("a", says("a"))) as (a,), Balancer() as lb:
        await lb.attach(a)
        with pytest.raises(ConfigError, match=r"from 0 to 256") as caught:
            await lb.set_weight(a, weight)
        assert lb.stats().backends["a"].weight == FULL_WEIGHT
    assert caught.value.field == "Balancer.set_weight.weight"


async def test_max_weight_is_accepted() -> None:
    async with backends(("a", says("a")), ("b", says("b"))) as (a, b), Balancer() as lb:
        await lb.set_weight(a, MAX_WEIGHT)
        await lb.set_weight(b, 0)
        await lb.attach(a)
        await lb.attach(b)
        assert [await fetch(lb.port) for _ in range(3)] == [b"a"] * 3


async def test_weight_set_while_detached_applies_on_reattach() -> None:
    async with backends(("a", says("a")), ("b", says("b"))) as (a, b), Balancer() as lb:
        await lb.attach(a)
        await lb.attach(b)
        await lb.detach(b)
        await lb.set_weight(b, FULL_WEIGHT)  # its weight already: no change
        await lb.set_weight(b, 3 * FULL_WEIGHT // 2)
        assert lb.backends == ("a",)
        assert [await fetch(lb.port) for _ in range(3)] == [b"a"] * 3
        await lb.attach(b)
        answers = [await fetch(lb.port) for _ in range(5)]
    # a at 100, b at 150: b, a, b, a, b over one cycle of 5.
    assert collections.Counter(answers) == {b"a": 2, b"b": 3}


async def test_set_weight_after_close_does_nothing() -> None:
    async with backends(("a", says("a"))) as (a,):
        async with Balancer() as lb:
            await lb.attach(a)
        await lb.set_weight(a, 0)
        assert lb.stats().backends["a"].weight == FULL_WEIGHT
        with pytest.raises(ConfigError):
            await lb.set_weight(a, -1)  # still checked

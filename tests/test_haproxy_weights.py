"""HAProxy router weights (``set weight``, read back): a real haproxy, and a fake socket."""

from __future__ import annotations

import collections
import contextlib
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest

from haproxy_harness import App, HAProxy, http_get, require_haproxy, running_haproxy
from helpers import Node
from rolling import ConfigError
from rolling.routers._accept import serve as serve_connections
from rolling.routers.haproxy import HAProxyError, HAProxyLookupError, HAProxyRouter
from rolling.typing import FULL_WEIGHT, MAX_WEIGHT, WeightedRouter

pytestmark = [pytest.mark.anyio, pytest.mark.real_time]

REQUESTS_PER_POINT = 2000
CLIENTS = 8
NAMES = ("stable1", "stable2", "canary1", "canary2")


@pytest.fixture
def haproxy_binary() -> str:
    """The haproxy binary (fails under CI, skips elsewhere, when there is none)."""
    return require_haproxy()


@contextlib.asynccontextmanager
async def fleet(
    directory: Path, binary: str, names: tuple[str, ...] = NAMES
) -> AsyncGenerator[HAProxy]:
    """One app per name behind one haproxy, every server UP."""
    async with anyio.create_task_group() as task_group:
        apps = [App(name) for name in names]
        for app in apps:
            await task_group.start(app.serve)
        servers = [(app.name, app.host, app.port) for app in apps]
        async with running_haproxy(directory, servers, binary=binary) as haproxy:
            yield haproxy
        task_group.cancel_scope.cancel()


async def load(haproxy: HAProxy, requests: int, path: str = "/") -> collections.Counter[str]:
    """``requests`` GETs through the frontend from ``CLIENTS`` steady clients, by answering app."""
    answers: collections.Counter[str] = collections.Counter()
    left = requests

    async def client() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            status, body = await http_get(*haproxy.frontend, path)
            answers[body.split()[0] if status == 200 else f"failed {status}"] += 1

    async with anyio.create_task_group() as task_group:
        for _ in range(CLIENTS):
            task_group.start_soon(client)
    return answers


async def weight_of(haproxy: HAProxy, server: str) -> str:
    return (await haproxy.command(f"get weight app/{server}")).strip()


def test_is_a_weighted_router() -> None:
    assert isinstance(HAProxyRouter("/run/haproxy/admin.sock"), WeightedRouter)


@pytest.mark.parametrize("share", [5, 25, 50])
async def test_canary_share_is_within_three_points(
    tmp_path: Path, haproxy_binary: str, share: int
) -> None:
    async with fleet(tmp_path, haproxy_binary) as haproxy:
        router = haproxy.router()
        for name in NAMES:
            weight = share if name.startswith("canary") else 100 - share
            await router.set_weight(Node(name, 0), weight)
        answers = await load(haproxy, REQUESTS_PER_POINT)
    total = sum(answers.values())
    canary = answers["canary1"] + answers["canary2"]
    measured = 100 * canary / total
    failed = total - sum(answers[name] for name in NAMES)
    assert failed == 0, f"{failed} of {total} requests failed: {dict(answers)}"
    assert abs(measured - share) <= 3, (
        f"canary share {measured:.2f} % of {total} requests ({canary} to the canaries), "
        f"asked for {share} %: {dict(answers)}"
    )


async def test_weight_zero_stops_new_sessions_but_keeps_open_ones(
    tmp_path: Path, haproxy_binary: str
) -> None:
    answers: collections.Counter[str] = collections.Counter()
    slow: list[tuple[int, str]] = []
    async with anyio.create_task_group() as task_group:
        apps = {name: App(name) for name in ("old", "new")}
        for app in apps.values():
            await task_group.start(app.serve)
        servers = [(app.name, app.host, app.port) for app in apps.values()]
        async with running_haproxy(tmp_path, servers, binary=haproxy_binary) as haproxy:
            router = haproxy.router()
            old, new = Node("old", apps["old"].port), Node("new", apps["new"].port)
            await router.set_weight(new, 0)

            async def long_request() -> None:
                slow.append(await http_get(*haproxy.frontend, "/slow"))

            task_group.start_soon(long_request)
            with anyio.fail_after(5):
                await apps["old"].slow_started.wait()
            # The switch: new to full weight, then old to 0.
            await router.set_weight(new, FULL_WEIGHT)
            await router.set_weight(old, 0)
            answers = await load(haproxy, 50)
            status = await router.status(old)
            assert status.sessions == 1, status  # the long request is still open on old
            assert status.status == "UP", status  # neither drained nor in maintenance
            apps["old"].release.set()
            with anyio.fail_after(5):
                while not slow:  # noqa: ASYNC110 - the request task appends when it ends
                    await anyio.sleep(0.01)
        task_group.cancel_scope.cancel()
    assert answers == {"new": 50}
    assert slow == [(200, "old v1")]


async def test_set_weight_before_attach_is_applied_by_attach(
    tmp_path: Path, haproxy_binary: str
) -> None:
    async with fleet(tmp_path, haproxy_binary, ("s1", "s2")) as haproxy:
        router = haproxy.router(address=lambda _instance: None)  # keep the configured addresses
        s1, s2 = Node("s1", 0), Node("s2", 0)
        await router.detach(s1)
        await router.detach(s2)
        await router.set_weight(s1, 30)  # taken while in maintenance, with no traffic
        assert await weight_of(haproxy, "s1") == "30 (initial 100)"
        # Someone else changes it meanwhile: attach sets the router's weight again.
        await haproxy.command("set weight app/s1 7")
        await haproxy.command("set weight app/s2 7")
        await router.attach(s1)
        await router.attach(s2)  # never given a weight: FULL_WEIGHT
        assert await weight_of(haproxy, "s1") == "30 (initial 100)"
        assert await weight_of(haproxy, "s2") == f"{FULL_WEIGHT} (initial 100)"
        assert (await router.status(s1)).up


async def test_max_and_zero_weights_apply(tmp_path: Path, haproxy_binary: str) -> None:
    async with fleet(tmp_path, haproxy_binary, ("s1", "s2")) as haproxy:
        router = haproxy.router()
        await router.set_weight(Node("s1", 0), MAX_WEIGHT)
        await router.set_weight(Node("s2", 0), 0)
        assert await weight_of(haproxy, "s1") == f"{MAX_WEIGHT} (initial 100)"
        answers = await load(haproxy, 20)
    assert answers == {"s1": 20}


async def test_unknown_server(tmp_path: Path, haproxy_binary: str) -> None:
    async with fleet(tmp_path, haproxy_binary, ("s1",)) as haproxy:
        with pytest.raises(HAProxyLookupError, match="no server 's9'"):
            await haproxy.router().set_weight(Node("s9", 0), 10)


@pytest.mark.parametrize("weight", [-1, MAX_WEIGHT + 1, 1.5, True, "5", None])
async def test_bad_weight_is_a_config_error_before_anything_is_sent(weight: Any) -> None:
    # No HAProxy behind this socket: a command sent would fail another way.
    router = HAProxyRouter("/nonexistent/admin.sock")
    with pytest.raises(ConfigError, match=r"from 0 to 256") as caught:
        await router.set_weight(Node("s1", 0), weight)
    assert caught.value.field == "HAProxyRouter.set_weight.weight"


@contextlib.asynccontextmanager
async def fake_runtime_api(directory: Path, replies: dict[str, str]) -> AsyncGenerator[list[str]]:
    """A unix socket at ``directory/admin.sock`` answering by command prefix; yields the lines."""
    listener = await anyio.create_unix_listener(directory / "admin.sock")
    lines: list[str] = []

    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            line = (await stream.receive()).decode().strip()
            lines.append(line)
            reply = next(text for prefix, text in replies.items() if line.startswith(prefix))
            await stream.send(reply.encode())

    async with listener, anyio.create_task_group() as task_group:
        task_group.start_soon(serve_connections, listener, handle)
        yield lines
        task_group.cancel_scope.cancel()


async def test_read_back_mismatch_is_an_error(tmp_path: Path) -> None:
    replies = {"set weight": "\n", "get weight": "7 (initial 1)\n\n"}
    async with fake_runtime_api(tmp_path, replies) as lines:
        router = HAProxyRouter(tmp_path / "admin.sock")
        with pytest.raises(HAProxyError, match="reports weight 7 for app/s1") as caught:
            await router.set_weight(Node("s1", 0), 25)
    assert lines == ["set weight app/s1 25", "get weight app/s1"]
    assert caught.value.command == "get weight app/s1"
    assert caught.value.reply == "7 (initial 1)"


async def test_unreadable_read_back_is_an_error(tmp_path: Path) -> None:
    replies = {"set weight": "\n", "get weight": "Unknown command.\n\n"}
    async with fake_runtime_api(tmp_path, replies):
        router = HAProxyRouter(tmp_path / "admin.sock")
        with pytest.raises(HAProxyError, match="unexpected reply to 'get weight app/s1'"):
            await router.set_weight(Node("s1", 0), 25)


async def test_refused_weight_shows_the_reply(tmp_path: Path) -> None:
    refusal = "Backend is using a static LB algorithm and only accepts weights '0%' and '100%'."
    async with fake_runtime_api(tmp_path, {"set weight": refusal + "\n\n"}) as lines:
        router = HAProxyRouter(tmp_path / "admin.sock")
        with pytest.raises(HAProxyError, match="static LB algorithm") as caught:
            await router.set_weight(Node("s1", 0), 25)
    assert lines == ["set weight app/s1 25"]
    assert caught.value.command == "set weight app/s1 25"

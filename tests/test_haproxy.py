"""The HAProxy router against a real haproxy, with real apps on loopback and real time."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import attrs
import pytest

from haproxy_harness import (
    App,
    HAProxy,
    http_get,
    render_config,
    require_haproxy,
    running_haproxy,
)
from helpers import LOOPBACK, Node, free_port
from rolling import ConfigError, Readiness, Rollout, RolloutResult, RolloutStatus
from rolling.checks import HTTPCheck, TCPCheck
from rolling.routers._accept import serve as serve_connections
from rolling.routers.haproxy import (
    HAProxyConnectionError,
    HAProxyError,
    HAProxyLookupError,
    HAProxyPermissionError,
    HAProxyRouter,
    ServerStatus,
)
from rolling.typing import Router

pytestmark = [pytest.mark.anyio, pytest.mark.real_time]

DOCS = Path(__file__).parent.parent / "docs" / "haproxy.md"


@pytest.fixture
def haproxy_binary() -> str:
    """The haproxy binary (fails under CI, skips elsewhere, when there is none)."""
    return require_haproxy()


@attrs.define(eq=False)
class Env:
    """Three apps, s1..s3, behind one haproxy."""

    haproxy: HAProxy
    apps: dict[str, App]
    task_group: anyio.abc.TaskGroup

    def node(self, name: str) -> Node:
        app = self.apps[name]
        return Node(name, app.port, version=app.version)

    async def start(self, app: App) -> App:
        await self.task_group.start(app.serve)
        return app

    async def get(self, path: str = "/") -> tuple[int, str]:
        return await http_get(*self.haproxy.frontend, path)


@contextlib.asynccontextmanager
async def environment(
    directory: Path, *, extra_global: tuple[str, ...] = (), binary: str | None = None
) -> AsyncGenerator[Env]:
    async with anyio.create_task_group() as task_group:
        apps: dict[str, App] = {}
        for name in ("s1", "s2", "s3"):
            apps[name] = App(name)
            await task_group.start(apps[name].serve)
        servers = [(name, app.host, app.port) for name, app in apps.items()]
        async with running_haproxy(
            directory, servers, extra_global=extra_global, binary=binary
        ) as haproxy:
            yield Env(haproxy, apps, task_group)
        task_group.cancel_scope.cancel()


async def eventually(predicate: Callable[[], bool], limit: float = 5.0) -> None:
    with anyio.fail_after(limit):
        while not predicate():  # noqa: ASYNC110 - polls state that has no event to wait on
            await anyio.sleep(0.01)


async def serving_names(env: Env, count: int = 9) -> set[str]:
    """Which apps answer ``count`` requests through the frontend (all must succeed)."""
    names: set[str] = set()
    for _ in range(count):
        status, body = await env.get()
        assert status == 200, body
        names.add(body.split()[0])
    return names


# -- configuration and the protocol ------------------------------------------------------------


def test_is_a_router() -> None:
    assert isinstance(HAProxyRouter("/run/haproxy/admin.sock"), Router)
    assert isinstance(HAProxyRouter(("127.0.0.1", 9999)), Router)
    assert isinstance(HAProxyRouter(Path("/run/haproxy/admin.sock")), Router)


@pytest.mark.parametrize(
    ("args", "kwargs", "field"),
    [
        ((42,), {}, "HAProxyRouter.socket"),
        (("",), {}, "HAProxyRouter.socket"),
        ((("127.0.0.1", 0),), {}, "HAProxyRouter.socket"),
        ((("127.0.0.1", 70000),), {}, "HAProxyRouter.socket"),
        ((("127.0.0.1", True),), {}, "HAProxyRouter.socket"),
        ((("", 9999),), {}, "HAProxyRouter.socket"),
        ((Path("x"),), {"server": "app/s1"}, "HAProxyRouter.server"),
        (("x",), {"address": ("127.0.0.1", 80)}, "HAProxyRouter.address"),
        (("x",), {"check": "GET /healthz"}, "HAProxyRouter.check"),
        (("x",), {"drain_timeout": -1}, "HAProxyRouter.drain_timeout"),
        (("x",), {"up_timeout": 0}, "HAProxyRouter.up_timeout"),
        (("x",), {"poll_interval": 0}, "HAProxyRouter.poll_interval"),
        (("x",), {"command_timeout": float("inf")}, "HAProxyRouter.command_timeout"),
    ],
)
def test_config_errors(args: tuple[Any, ...], kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        HAProxyRouter(*args, **kwargs)
    assert caught.value.field == field


@pytest.mark.parametrize("line", ["", "show stat\nshutdown sessions server app/s1", "a\rb"])
async def test_command_is_one_line(line: str) -> None:
    with pytest.raises(ValueError, match="one non-empty line"):
        await HAProxyRouter("/nonexistent.sock").command(line)


@pytest.mark.parametrize("names", [("app", "s1;shutdown"), ("app",), ("", "s1"), ("app", 1)])
async def test_server_names_are_checked(names: Any) -> None:
    router = HAProxyRouter("/nonexistent.sock", server=lambda _instance: names)
    with pytest.raises(HAProxyError, match="HAProxy names"):
        await router.detach(Node("s1", 8001))


@contextlib.asynccontextmanager
async def fake_runtime_api(directory: Path, replies: dict[str, str | None]) -> AsyncGenerator[str]:
    """A unix socket that answers a command starting with a key; None: never answers."""
    path = str(directory / "fake.sock")
    listener = await anyio.create_unix_listener(path)

    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            line = (await stream.receive()).decode().strip()
            for prefix, reply in replies.items():
                if line.startswith(prefix):
                    if reply is None:
                        await anyio.sleep_forever()
                    else:
                        await stream.send(reply.encode())
                    return

    async with listener, anyio.create_task_group() as task_group:
        task_group.start_soon(serve_connections, listener, handle)
        yield path
        task_group.cancel_scope.cancel()


SHOW_STAT_UP = (
    "# pxname,svname,qcur,scur,status,check_status,last_chk,addr\napp,s1,0,0,UP,L7OK,,x\n\n"
)


async def test_command_timeout(tmp_path: Path) -> None:
    async with fake_runtime_api(tmp_path, {"show": None}) as path:
        router = HAProxyRouter(path, command_timeout=0.2)
        start = time.monotonic()
        with pytest.raises(HAProxyConnectionError, match=r"did not answer 'show stat .*0\.2s"):
            await router.status(Node("s1", 8001))
        assert time.monotonic() - start < 2


async def test_refused_set_command_shows_the_reply(tmp_path: Path) -> None:
    replies: dict[str, str | None] = {
        "show stat": SHOW_STAT_UP,
        "set server": "Something went wrong.\n\n",
    }
    async with fake_runtime_api(tmp_path, replies) as path:
        with pytest.raises(HAProxyError, match="refused 'set server app/s1 state drain'") as caught:
            await HAProxyRouter(path).detach(Node("s1", 8001))
    assert caught.value.command == "set server app/s1 state drain"
    assert caught.value.reply == "Something went wrong."


async def test_unreadable_table(tmp_path: Path) -> None:
    async with fake_runtime_api(tmp_path, {"show stat": "Unknown command.\n\n"}) as path:
        with pytest.raises(HAProxyError, match="unexpected reply to 'show stat app 4 -1'"):
            await HAProxyRouter(path).status(Node("s1", 8001))


# -- against a real haproxy --------------------------------------------------------------------


async def test_status_and_tcp_socket(tmp_path: Path, haproxy_binary: str) -> None:
    tcp = free_port()
    extra = (f"stats socket ipv4@{LOOPBACK}:{tcp} level admin",)
    async with environment(tmp_path, extra_global=extra, binary=haproxy_binary) as env:
        status = await env.haproxy.router().status(env.node("s1"))
        # "* L7OK": a health check was running at that instant (HAProxy marks it so).
        status = attrs.evolve(status, check_status=status.check_status.removeprefix("* "))
        assert status == ServerStatus(
            backend="app",
            server="s1",
            status="UP",
            sessions=0,
            queued=0,
            check_status="L7OK",
            check_description="",
            address=f"{LOOPBACK}:{env.apps['s1'].port}",
        )
        assert status.up
        assert not status.in_maintenance
        over_tcp = HAProxyRouter((LOOPBACK, tcp), poll_interval=0.05)
        await over_tcp.detach(env.node("s2"))
        assert (await over_tcp.status(env.node("s2"))).status == "MAINT"
        await over_tcp.attach(env.node("s2"))
        assert await env.haproxy.status("s2") == "UP"


async def test_detach_drains_then_sets_maintenance(tmp_path: Path, haproxy_binary: str) -> None:
    async with environment(tmp_path, binary=haproxy_binary) as env:
        router = env.haproxy.router()
        slow: list[tuple[int, str]] = []
        detached = anyio.Event()
        async with anyio.create_task_group() as task_group:

            async def slow_request() -> None:
                slow.append(await env.get("/slow"))

            task_group.start_soon(slow_request)
            await eventually(lambda: any(app.slow_started.is_set() for app in env.apps.values()))
            (busy,) = [app for app in env.apps.values() if app.slow_started.is_set()]

            async def detach() -> None:
                await router.detach(env.node(busy.name))
                detached.set()

            task_group.start_soon(detach)
            # Draining: no new requests, the slow one still open, detach still waiting.
            with anyio.fail_after(5):
                while (await router.status(env.node(busy.name))).status != "DRAIN":  # noqa: ASYNC110 - HAProxy has no event to wait on
                    await anyio.sleep(0.02)
            status = await router.status(env.node(busy.name))
            assert status.sessions == 1
            assert busy.name not in await serving_names(env)
            assert not detached.is_set()
            busy.release.set()
            with anyio.fail_after(5):
                await detached.wait()
        (busy,) = [app for app in env.apps.values() if app.slow_started.is_set()]
        assert slow == [(200, f"{busy.name} v1")]
        assert await env.haproxy.status(busy.name) == "MAINT"
        assert busy.served == ["/slow"]
        assert busy.name not in await serving_names(env)
        # Detaching again keeps it out: no drain (which would end the maintenance) first.
        await router.detach(env.node(busy.name))
        assert await env.haproxy.status(busy.name) == "MAINT"
        assert busy.name not in await serving_names(env)
        assert busy.served == ["/slow"]


async def test_drain_timeout_bounds_detach(
    tmp_path: Path, haproxy_binary: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with environment(tmp_path, binary=haproxy_binary) as env:
        router = env.haproxy.router(drain_timeout=0.5)
        slow: list[tuple[int, str]] = []
        async with anyio.create_task_group() as task_group:

            async def slow_request() -> None:
                slow.append(await env.get("/slow"))

            task_group.start_soon(slow_request)
            await eventually(lambda: any(app.slow_started.is_set() for app in env.apps.values()))
            (busy,) = [app for app in env.apps.values() if app.slow_started.is_set()]
            start = time.monotonic()
            with caplog.at_level(logging.WARNING, logger="rolling.haproxy"):
                await router.detach(env.node(busy.name))
            elapsed = time.monotonic() - start
            assert 0.5 <= elapsed < 2.0
            assert await env.haproxy.status(busy.name) == "MAINT"
            # Maintenance sends no new sessions but does not cut open ones.
            busy.release.set()
        (busy,) = [app for app in env.apps.values() if app.slow_started.is_set()]
        assert slow == [(200, f"{busy.name} v1")]
    assert any(
        "1 session(s)" in record.getMessage() and "drain timeout" in record.getMessage()
        for record in caplog.records
    )


async def test_attach_waits_for_haproxy_to_report_up(tmp_path: Path, haproxy_binary: str) -> None:
    async with environment(tmp_path, binary=haproxy_binary) as env:
        router = env.haproxy.router(check=HTTPCheck("/healthz"))
        await router.detach(env.node("s1"))
        assert await env.haproxy.status("s1") == "MAINT"
        await router.attach(env.node("s1"))
        # Plain UP, not the "UP 1/2" HAProxy shows the moment a server leaves maintenance.
        status = await router.status(env.node("s1"))
        assert status.status == "UP"
        assert status.check_status == "L7OK"
        assert "s1" in await serving_names(env)
        # Attaching what is attached already changes nothing.
        await router.attach(env.node("s1"))
        assert await env.haproxy.status("s1") == "UP"


async def test_attach_fails_when_haproxy_does_not_report_up(
    tmp_path: Path, haproxy_binary: str
) -> None:
    async with environment(tmp_path, binary=haproxy_binary) as env:
        router = env.haproxy.router(check=TCPCheck(), up_timeout=1.0)
        await router.detach(env.node("s1"))
        # The port answers (TCPCheck passes) but /healthz fails HAProxy's own check:
        # HAProxy shows "UP 1/2" at once after ready, and attach must not take that for UP.
        env.apps["s1"].healthy = False
        start = time.monotonic()
        with pytest.raises(HAProxyError, match=r"did not report app/s1 UP within 1\.0s") as caught:
            await router.attach(env.node("s1"))
        assert time.monotonic() - start < 3
        assert "'DOWN'" in str(caught.value)
        assert "L7STS" in str(caught.value)
        assert type(caught.value) is HAProxyError


async def test_attach_refuses_an_instance_that_fails_its_check(
    tmp_path: Path, haproxy_binary: str
) -> None:
    async with environment(tmp_path, binary=haproxy_binary) as env:
        router = env.haproxy.router(check=HTTPCheck("/healthz", timeout=0.2), up_timeout=0.6)
        await router.detach(env.node("s1"))
        env.apps["s1"].healthy = False
        with pytest.raises(HAProxyError, match=r"s1 did not pass its health check.*HTTP 503"):
            await router.attach(env.node("s1"))
        env.apps["s1"].stop()
        with pytest.raises(HAProxyError, match="connection refused"):
            await router.attach(env.node("s1"))
        assert await env.haproxy.status("s1") == "MAINT"  # never set ready
        assert "s1" not in await serving_names(env)


async def test_attach_updates_address_and_port(tmp_path: Path, haproxy_binary: str) -> None:
    async with environment(tmp_path, binary=haproxy_binary) as env:
        router = env.haproxy.router(check=HTTPCheck("/healthz"))
        old = env.apps["s1"]
        await router.detach(env.node("s1"))
        new = await env.start(App("s1", version="v2"))
        old.stop()
        assert new.port != old.port
        # "localhost" is resolved here: HAProxy's "set server addr" takes IP addresses only.
        await router.attach(Node("s1", new.port, host="localhost", version="v2"))
        state = await env.haproxy.command("show servers state app")
        (row,) = [line.split() for line in state.splitlines() if line.startswith("3 app 1 s1 ")]
        assert row[4] == LOOPBACK
        assert row[18] == str(new.port)
        assert await env.haproxy.status("s1") == "UP"
        with anyio.fail_after(5):
            while "s1 v2" not in {(await env.get())[1] for _ in range(3)}:
                pass

        # An address function that answers None leaves HAProxy's address alone.
        def unchanged(_instance: object) -> None:
            return None

        keep = env.haproxy.router(address=unchanged)
        await keep.detach(env.node("s1"))
        await keep.attach(Node("s1", 1))
        assert (await keep.status(env.node("s1"))).address == f"{LOOPBACK}:{new.port}"


async def test_unknown_backend_or_server(tmp_path: Path, haproxy_binary: str) -> None:
    async with environment(tmp_path, binary=haproxy_binary) as env:

        def nope(instance: Node) -> tuple[str, str]:
            return ("nope", instance.id)

        no_backend = env.haproxy.router(server=nope)
        for call in (no_backend.detach, no_backend.attach, no_backend.status):
            with pytest.raises(HAProxyLookupError, match="HAProxy has no backend 'nope'"):
                await call(env.node("s1"))
        # "web" is the config's frontend, not a backend: `show stat web 4 -1` answers an empty
        # table (not "No such proxy."), yet every call says there is no such backend.
        frontend = env.haproxy.router(server=lambda instance: ("web", instance.id))

        async def weigh(node: Any) -> None:
            await frontend.set_weight(node, 50)

        calls: tuple[Callable[[Any], Awaitable[object]], ...] = (
            frontend.detach,
            frontend.attach,
            frontend.status,
            weigh,
        )
        for frontend_call in calls:
            with pytest.raises(HAProxyLookupError, match="HAProxy has no backend 'web'"):
                await frontend_call(env.node("s1"))
        router = env.haproxy.router()
        for call in (router.detach, router.attach, router.status):
            with pytest.raises(
                HAProxyLookupError, match="HAProxy has no server 's9' in backend 'app'"
            ) as caught:
                await call(Node("s9", 8009))
            assert isinstance(caught.value, LookupError)
        # Every server is untouched.
        assert {await env.haproxy.status(name) for name in env.apps} == {"UP"}


async def test_socket_not_at_level_admin(tmp_path: Path, haproxy_binary: str) -> None:
    operator = tmp_path / "operator.sock"
    extra = (f"stats socket {operator} mode 600 level operator",)
    async with environment(tmp_path, extra_global=extra, binary=haproxy_binary) as env:
        router = HAProxyRouter(operator)
        assert (await router.status(env.node("s1"))).up  # reading is allowed
        with pytest.raises(HAProxyPermissionError, match="level admin") as caught:
            await router.detach(env.node("s1"))
        assert caught.value.reply == "Permission denied"
        assert await env.haproxy.status("s1") == "UP"


_libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
NOBODY = 65534


def _as_nobody(work: Callable[[], None]) -> None:
    """Run ``work`` in a new thread whose file-system user and group are ``nobody``.

    setfsuid and setfsgid change the credentials of the calling thread only, and
    a non-zero fsuid drops root's file-system capabilities with it, so the kernel
    checks the socket's permissions as for any other user, in this thread alone.
    """
    assert _libc is not None
    errors: list[BaseException] = []

    def run() -> None:
        _libc.setfsgid(NOBODY)
        _libc.setfsuid(NOBODY)
        try:
            # Each call returns the previous id: calling again tells whether it took.
            if _libc.setfsgid(NOBODY) != NOBODY or _libc.setfsuid(NOBODY) != NOBODY:
                errors.append(OSError("setfsuid/setfsgid to nobody did not take"))
                return
            work()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)
        finally:
            _libc.setfsuid(0)
            _libc.setfsgid(0)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


async def test_socket_permission_denied(haproxy_binary: str, anyio_backend_name: str) -> None:
    # A directory anyone may enter, so the socket's own mode (660, root) is what denies.
    directory = Path(tempfile.mkdtemp(prefix="rolling-haproxy-"))
    try:
        await anyio.Path(directory).chmod(0o755)
        async with environment(directory, binary=haproxy_binary) as env:
            router = env.haproxy.router()
            node = env.node("s1")
            caught: list[HAProxyError] = []
            if os.geteuid() == 0:
                if sys.platform != "linux":
                    pytest.skip("dropping file-system rights in one thread needs Linux")

                def detach_as_nobody() -> None:
                    try:
                        anyio.run(router.detach, node, backend=anyio_backend_name)
                    except HAProxyError as exc:
                        caught.append(exc)

                await anyio.to_thread.run_sync(_as_nobody, detach_as_nobody)
            else:
                socket_path = anyio.Path(env.haproxy.socket_path)
                await socket_path.chmod(0)
                try:
                    await router.detach(node)
                except HAProxyError as exc:
                    caught.append(exc)
                finally:
                    await socket_path.chmod(0o660)
            assert len(caught) == 1
            (error,) = caught
            assert isinstance(error, HAProxyPermissionError)
            assert isinstance(error, PermissionError)
            message = str(error)
            assert f"permission denied on HAProxy's socket {env.haproxy.socket_path}" in message
            assert "run as a user that may write it" in message
            assert "mode 660 group <group> level admin" in message
            assert await env.haproxy.status("s1") == "UP"
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def test_haproxy_down(tmp_path: Path, haproxy_binary: str) -> None:
    tcp = free_port()
    extra = (f"stats socket ipv4@{LOOPBACK}:{tcp} level admin",)
    async with environment(tmp_path, extra_global=extra, binary=haproxy_binary) as env:
        await env.haproxy.stop()
        routers = [env.haproxy.router(), HAProxyRouter((LOOPBACK, tcp))]
        for router, where in zip(
            routers, [str(env.haproxy.socket_path), f"{LOOPBACK}:{tcp}"], strict=True
        ):
            for call in (router.detach, router.attach, router.status):
                with pytest.raises(HAProxyConnectionError) as caught:
                    await call(env.node("s1"))
                assert f"HAProxy is not running or not listening on {where}" in str(caught.value)
                assert isinstance(caught.value, ConnectionError)
    missing = HAProxyRouter(tmp_path / "missing.sock")
    with pytest.raises(HAProxyConnectionError, match="no such file or directory"):
        await missing.detach(Node("s1", 8001))


# -- a whole rollout behind haproxy ------------------------------------------------------------


class AppFleet:
    """An in-place driver: replace restarts an app on a NEW port with the new version."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.nodes = [env.node(name) for name in env.apps]

    async def list_instances(self) -> list[Node]:
        return list(self.nodes)

    async def replace(self, instance: Node, version: str) -> Node:
        old = self.env.apps[instance.id]
        # Started before the old one stops, so the kernel cannot hand out the old port again.
        app = await self.env.start(App(instance.id, version=version))
        old.stop()
        self.env.apps[instance.id] = app
        new = Node(instance.id, app.port, version=version)
        self.nodes = [new if node.id == new.id else node for node in self.nodes]
        return new


async def test_rollout_behind_haproxy_fails_no_request(tmp_path: Path, haproxy_binary: str) -> None:
    async with environment(tmp_path, binary=haproxy_binary) as env:
        fleet = AppFleet(env)
        old_ports = {node.id: node.port for node in fleet.nodes}
        router = env.haproxy.router(check=HTTPCheck("/healthz", timeout=0.5))
        readiness = Readiness(
            check=HTTPCheck("/healthz", timeout=0.5), period=0.05, timeout=1, deadline=5
        )
        rollout = Rollout(fleet, "v2", readiness=readiness, router=router, cleanup_timeout=5)
        replies: list[tuple[int, str]] = []
        results: list[RolloutResult] = []
        done = anyio.Event()

        async def traffic() -> None:
            for _ in range(20_000):  # bounded, whatever happens to the rollout
                if done.is_set():
                    return
                # Each request takes 50 ms, so every server nearly always has one in
                # flight: a detach that did not drain would cut some when the app stops.
                replies.append(await env.get("/delay"))

        async with anyio.create_task_group() as clients:
            for _ in range(6):
                clients.start_soon(traffic)
            await eventually(lambda: len(replies) >= 8)
            with anyio.fail_after(20):
                results.append(await rollout.run())
            await anyio.sleep(0.1)
            done.set()
        assert [result.status for result in results] == [RolloutStatus.SUCCEEDED]
        failed = [reply for reply in replies if reply[0] != 200]
        assert failed == []
        versions = [body.split()[1] for _, body in replies]
        assert versions[0] == "v1"
        assert versions[-1] == "v2"
        assert {node.version for node in fleet.nodes} == {"v2"}
        assert all(node.port != old_ports[node.id] for node in fleet.nodes)
        for _ in range(9):
            status, body = await env.get()
            assert status == 200
            assert body.endswith(" v2")
        assert {await env.haproxy.status(name) for name in env.apps} == {"UP"}


# -- the guide shows the configuration these tests run -------------------------------------------


def test_guide_shows_the_tested_config() -> None:
    config = render_config(
        socket_path="/run/haproxy/admin.sock",
        frontend=("127.0.0.1", 8080),
        servers=[("s1", "127.0.0.1", 8001), ("s2", "127.0.0.1", 8002), ("s3", "127.0.0.1", 8003)],
    )
    assert f"```text\n{config}```" in DOCS.read_text()

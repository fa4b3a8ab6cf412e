"""A real HAProxy and tiny HTTP apps behind it, for tests (no pytest fixtures, no conftest).

Everything here is a plain function or async context manager, so any test can
use it, including ones whose backends listen on network-namespace addresses::

    async with anyio.create_task_group() as tg:
        app = App("s1")
        await tg.start(app.serve)          # a loopback port of its own
        async with running_haproxy(tmp_path, [("s1", app.host, app.port)]) as haproxy:
            status, body = await http_get(*haproxy.frontend)
        tg.cancel_scope.cancel()

:func:`render_config` writes the configuration that ``docs/haproxy.md``
explains line by line (a test keeps the two identical).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import attrs
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from helpers import LOOPBACK, free_port
from rolling.routers._accept import serve as serve_connections
from rolling.routers.haproxy import HAProxyError, HAProxyRouter, ServerAddress, ServerName

__all__ = [
    "App",
    "HAProxy",
    "http_get",
    "render_config",
    "require_haproxy",
    "running_haproxy",
]

INSTALL_HINT = "install HAProxy 2.6 or later: `apt-get install -y haproxy`"


def require_haproxy() -> str:
    """The ``haproxy`` binary; without one, fail under CI (``CI=true``) and skip elsewhere."""
    found = shutil.which("haproxy") or next(
        (path for path in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if Path(path).exists()),
        None,
    )
    if found is not None:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail(f"haproxy is not installed; {INSTALL_HINT} (.ci/run does)")
    pytest.skip(f"haproxy is not installed; {INSTALL_HINT}")


def render_config(
    *,
    socket_path: str | os.PathLike[str],
    frontend: tuple[str, int],
    servers: Sequence[tuple[str, str, int]],
    backend: str = "app",
    check_path: str = "/healthz",
    extra_global: Sequence[str] = (),
) -> str:
    """The haproxy.cfg the tests run, for servers given as ``(name, host, port)``.

    ``extra_global`` lines go into the ``global`` section (another ``stats
    socket``, say); ``check_path`` is what HAProxy's ``option httpchk`` requests.
    """
    host, port = frontend
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [
        "global",
        f"    stats socket {os.fspath(socket_path)} mode 660 level admin",
        *(f"    {line}" for line in extra_global),
        "",
        "defaults",
        "    mode http",
        "    timeout connect 1s",
        "    timeout client 10s",
        "    timeout server 10s",
        "    retries 0",
        "",
        "frontend web",
        f"    bind {bind}",
        f"    default_backend {backend}",
        "",
        f"backend {backend}",
        f"    option httpchk GET {check_path}",
        "    default-server inter 200ms fall 2 rise 1 check weight 100",
        *(
            f"    server {name} [{address}]:{server_port}"
            if ":" in address
            else f"    server {name} {address}:{server_port}"
            for name, address, server_port in servers
        ),
        "",
    ]
    return "\n".join(lines)


@attrs.define(eq=False)
class HAProxy:
    """A running ``haproxy -db`` and where to reach it."""

    process: anyio.abc.Process
    config_path: Path
    socket_path: Path
    log_path: Path
    frontend: tuple[str, int]
    backend: str

    def router(
        self,
        *,
        server: ServerName | None = None,
        address: ServerAddress | None = None,
        check: Any = None,
        drain_timeout: float = 5.0,
        up_timeout: float = 5.0,
        command_timeout: float = 2.0,
    ) -> HAProxyRouter:
        """A router on this HAProxy's socket, polling fast (tests run in real time)."""
        return HAProxyRouter(
            self.socket_path,
            server=server,
            address=address,
            check=check,
            drain_timeout=drain_timeout,
            up_timeout=up_timeout,
            poll_interval=0.05,
            command_timeout=command_timeout,
        )

    async def command(self, line: str) -> str:
        """Send one Runtime API command; the reply as HAProxy wrote it."""
        return await self.router().command(line)

    async def status(self, server: str) -> str:
        """The ``show stat`` status of one server of the backend, such as ``UP``."""

        def names(name: str) -> tuple[str, str]:
            return (self.backend, name)

        return (await self.router(server=names).status(server)).status

    def log(self) -> str:
        """What haproxy wrote to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace")

    async def stop(self) -> None:
        """SIGTERM (HAProxy's hard stop), then SIGKILL after 5 s; always reaped."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            with anyio.move_on_after(5):
                await self.process.wait()
            if self.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
        await self.process.wait()


@contextlib.asynccontextmanager
async def running_haproxy(
    directory: Path,
    servers: Sequence[tuple[str, str, int]],
    *,
    backend: str = "app",
    frontend_host: str = LOOPBACK,
    frontend_port: int | None = None,
    check_path: str = "/healthz",
    extra_global: Sequence[str] = (),
    config: str | None = None,
    wait_up: bool = True,
    binary: str | None = None,
    start_timeout: float = 10.0,
) -> AsyncGenerator[HAProxy]:
    """Start ``haproxy -f <directory>/haproxy.cfg -db`` and stop it on the way out.

    The stats socket is ``<directory>/admin.sock``, the log ``<directory>/haproxy.log``
    (HAProxy's warnings: servers going up, down, into maintenance). The
    configuration is :func:`render_config`'s, or ``config`` as given (its
    ``stats socket`` must then be ``<directory>/admin.sock`` at ``level
    admin``, and it should bind ``frontend_host:frontend_port``, which is what
    :attr:`HAProxy.frontend` says). Without ``frontend_port``, a free port is
    picked. Waits until the Runtime API answers and, with ``wait_up``, until
    every server is plain UP. Leaving stops the process, shielded from
    cancellation.
    """
    executable = binary or require_haproxy()
    await anyio.Path(directory).mkdir(parents=True, exist_ok=True)
    socket_path = directory / "admin.sock"
    frontend = (frontend_host, frontend_port or free_port(frontend_host))
    config_path = directory / "haproxy.cfg"
    text = config
    if text is None:
        text = render_config(
            socket_path=socket_path,
            frontend=frontend,
            servers=servers,
            backend=backend,
            check_path=check_path,
            extra_global=extra_global,
        )
    await anyio.Path(config_path).write_text(text)
    log_path = directory / "haproxy.log"
    with log_path.open("wb") as log:
        process = await anyio.open_process(
            [executable, "-f", str(config_path), "-db"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    haproxy = HAProxy(
        process=process,
        config_path=config_path,
        socket_path=socket_path,
        log_path=log_path,
        frontend=frontend,
        backend=backend,
    )
    try:
        try:
            with anyio.fail_after(start_timeout):
                await _wait_started(haproxy)
                if wait_up:
                    for name, _host, _port in servers:
                        while await haproxy.status(name) != "UP":  # noqa: ASYNC110 - HAProxy has no event to wait on
                            await anyio.sleep(0.05)
        except TimeoutError:
            msg = f"haproxy not ready after {start_timeout}s; its log:\n{haproxy.log()}"
            raise RuntimeError(msg) from None
        yield haproxy
    finally:
        with anyio.CancelScope(shield=True):
            await haproxy.stop()
            await process.aclose()


async def _wait_started(haproxy: HAProxy) -> None:
    router = haproxy.router(command_timeout=1.0)
    while True:
        if haproxy.process.returncode is not None:
            msg = f"haproxy exited with {haproxy.process.returncode}:\n{haproxy.log()}"
            raise RuntimeError(msg)
        try:
            await router.command("show info")
        except HAProxyError:
            await anyio.sleep(0.02)
        else:
            return


@attrs.define(eq=False)
class App:
    """A tiny HTTP app: ``/healthz`` answers 200 (503 when not ``healthy``), ``/`` its name.

    ``/``, ``/delay`` and ``/slow`` answer ``"<name> <version>"``: ``/delay``
    after :attr:`delay` seconds, ``/slow`` once :attr:`release` is set
    (:attr:`slow_started` tells that one arrived). Every request closes its
    connection (``Connection: close``).
    """

    name: str
    version: str = "v1"
    host: str = LOOPBACK
    port: int = 0
    healthy: bool = True
    delay: float = 0.05
    served: list[str] = attrs.field(factory=list[str])
    """Paths answered, health checks excluded."""
    slow_started: anyio.Event = attrs.field(factory=anyio.Event)
    release: anyio.Event = attrs.field(factory=anyio.Event)
    _scope: anyio.CancelScope | None = None

    async def serve(self, *, task_status: anyio.abc.TaskStatus[int]) -> None:
        """Listen on ``host:port`` (0: a free port, kept in :attr:`port`) until :meth:`stop`."""
        with anyio.CancelScope() as scope:
            self._scope = scope
            listener = await anyio.create_tcp_listener(local_host=self.host, local_port=self.port)
            async with listener:
                self.port = int(listener.extra(anyio.abc.SocketAttribute.local_port))  # noqa: S610 - anyio's typed attributes, not Django
                task_status.started(self.port)
                await serve_connections(listener, self._handle)

    def stop(self) -> None:
        """Stop listening and cut open connections."""
        if self._scope is not None:
            self._scope.cancel()

    async def _handle(self, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            reader = BufferedByteReceiveStream(stream)
            try:
                head = await reader.receive_until(b"\r\n\r\n", 65536)
            except (anyio.IncompleteRead, anyio.DelimiterNotFound, anyio.BrokenResourceError):
                return
            parts = head.split(b"\r\n", 1)[0].split()
            path = parts[1].decode() if len(parts) > 1 else "/"
            status, body = 200, f"{self.name} {self.version}"
            if path == "/healthz":
                status, body = (200, "ok") if self.healthy else (503, "unhealthy")
            else:
                self.served.append(path)
                if path == "/slow":
                    self.slow_started.set()
                    await self.release.wait()
                elif path == "/delay":
                    await anyio.sleep(self.delay)
            reason = "OK" if status == 200 else "Service Unavailable"
            payload = body.encode()
            response = (
                f"HTTP/1.1 {status} {reason}\r\nContent-Length: {len(payload)}\r\n"
                "Content-Type: text/plain\r\nConnection: close\r\n\r\n"
            ).encode()
            with contextlib.suppress(anyio.BrokenResourceError, OSError):
                await stream.send(response + payload)


async def http_get(host: str, port: int, path: str = "/") -> tuple[int, str]:
    """One ``GET`` with ``Connection: close`` (within 5 s); the status and the body.

    A connection that fails or closes before a status line is status 0.
    """
    with anyio.fail_after(5):
        try:
            stream = await anyio.connect_tcp(host, port)
        except OSError:
            return 0, ""
        async with stream:
            request = f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
            data = bytearray()
            try:
                await stream.send(request.encode())
                async for chunk in stream:
                    data += chunk
            except (anyio.BrokenResourceError, OSError):
                return 0, ""
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    fields = head.split(b"\r\n", 1)[0].split()
    if len(fields) < 2 or not fields[1].isdigit():
        return 0, ""
    return int(fields[1]), body.decode(errors="replace")

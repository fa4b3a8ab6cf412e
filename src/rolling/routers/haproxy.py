"""A router over HAProxy's Runtime API: drain, maintenance and ready, per server.

:class:`HAProxyRouter` takes instances out of an HAProxy backend and puts them
back, by sending commands to HAProxy's Runtime API (the ``stats socket``, at
``level admin``) over a unix socket or TCP::

    router = HAProxyRouter("/run/haproxy/admin.sock", check=HTTPCheck("/healthz"))
    result = await Rollout(driver, "v2", router=router).run()

Each instance is one ``server`` line of a backend: by default server
``instance.id`` of backend ``app``; pass ``server=`` to map it otherwise.

Rules, as HAProxy 2.6 sees them:

1. :meth:`HAProxyRouter.detach` sends ``set server <b>/<s> state drain`` (no
   new sessions go to it), waits until its current and queued sessions
   (``scur`` and ``qcur`` of ``show stat``) reach zero, for at most
   ``drain_timeout`` (past it, it logs a warning and goes on), then sends
   ``set server <b>/<s> state maint``. A server already in maintenance only
   gets ``maint`` again: ``drain`` would take it *out* of maintenance.
2. :meth:`HAProxyRouter.attach` first probes the instance with ``check`` until
   it is healthy (for at most ``up_timeout``), because HAProxy counts a
   server it is told is ready as UP at once, before any check of its own. It
   then updates the server's address and port with ``set server <b>/<s> addr
   <ip> port <port>`` when they changed, sends ``set server <b>/<s> state
   ready``, and waits (for at most ``up_timeout``) until ``show stat`` says
   plain ``UP`` (or ``no check`` for a server without checks). ``UP 1/2``
   and the like do not count: that is HAProxy's "up, but not yet confirmed"
   which a server enters the moment it leaves maintenance. With ``fall N``,
   plain ``UP`` takes ``N - 1`` passing checks of HAProxy's own after
   ``ready``.
3. Every command opens its own connection, sends one line and reads the reply
   to the end (what ``echo "show stat" | socat stdio <socket>`` does), all
   within ``command_timeout``. Nothing is kept open between commands.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import csv
import ipaddress
import logging
import os
import re
import socket as _socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import anyio
import anyio.abc
import attrs

from rolling import ConfigError, RollingError
from rolling.health import as_check_function, probe_once
from rolling.net import address_of, causes_of, describe_connect_error, is_text
from rolling.validate import check_callable, check_seconds, validator

__all__ = [
    "HAProxyConnectionError",
    "HAProxyError",
    "HAProxyLookupError",
    "HAProxyPermissionError",
    "HAProxyRouter",
    "ServerAddress",
    "ServerName",
    "ServerStatus",
    "Socket",
]

logger = logging.getLogger("rolling.haproxy")

_MAX_PORT = 65535
_MAX_REPLY = 16 * 1024 * 1024
"""Bytes of one reply read at most: ``show stat`` of one backend is far smaller."""

_NAME = re.compile(r"[A-Za-z0-9_.:-]+")
"""The characters HAProxy allows in proxy and server names (and nothing the CLI parses)."""

# What HAProxy 2.6 answers when a name is unknown, by command: ``set server``,
# ``show servers state`` and ``show stat`` each have their own wording.
_NO_BACKEND = frozenset({"No such backend.", "Can't find backend.", "No such proxy."})
_NO_SERVER = "No such server."
_NOT_ADMIN = "Permission denied"

# ``set server <b>/<s> addr <ip> port <port>`` reports what it did on success,
# such as "IP changed from '10.0.0.1' to '10.0.0.2', no need to change the port
# by 'stats socket command'". Errors come in other words ("Invalid addr ...")
# or inside the same frame ("no need to change the addr, problem converting
# port ..."), so success is recognised by its exact shape.
_ADDR_CHANGED = re.compile(
    r"(?:IP changed from '[^']*' to '[^']*'|no need to change the addr), "
    r"(?:port changed from '[^']*' to '[^']*'|no need to change the port) by '[^']*'"
)

_UP_STATUSES = frozenset({"UP", "no check"})


class HAProxyError(RollingError, RuntimeError):
    """HAProxy's Runtime API refused a command, or a server did not get where it should.

    The subclasses say why more precisely; this class itself is raised when a
    command's reply is not the success HAProxy gives, when an instance never
    passes its health check before attach, and when HAProxy does not report a
    server UP within ``up_timeout``.

    Attributes:
        command: The Runtime API command concerned, when there is one.
        reply: HAProxy's reply to it, when there was one.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self, message: str, *, command: str | None = None, reply: str | None = None
    ) -> None:
        """Keep the command and reply beside the message."""
        super().__init__(message)
        self.command = command
        self.reply = reply


class HAProxyConnectionError(HAProxyError, ConnectionError):
    """HAProxy's Runtime API cannot be reached: HAProxy is down, or does not answer.

    .. versionadded:: 0.1.0
    """


class HAProxyPermissionError(HAProxyError, PermissionError):
    """The socket may not be opened by this user, or it is not at ``level admin``.

    .. versionadded:: 0.1.0
    """


class HAProxyLookupError(HAProxyError, LookupError):
    """HAProxy has no such backend, or no such server in it.

    .. versionadded:: 0.1.0
    """


@attrs.frozen(kw_only=True)
class ServerStatus:
    """One server as ``show stat`` reports it, at one moment.

    Attributes:
        backend: The backend's name.
        server: The server's name.
        status: HAProxy's status text: ``UP``, ``DOWN``, ``MAINT``, ``DRAIN``,
            ``NOLB``, ``no check``, or a transition such as ``UP 1/2`` (up,
            going down after one more failed check) or ``DOWN 1/2``.
        sessions: Current sessions on the server (``scur``).
        queued: Requests queued for this server (``qcur``).
        check_status: The last health check's status, such as ``L7OK`` or
            ``L4CON`` (empty when checks are off or the server is in
            maintenance; a leading asterisk means a check is running).
        check_description: The last check's detail, such as ``Connection refused``.
        address: The address HAProxy sends traffic to, as it shows it
            (``127.0.0.1:8001``).

    .. versionadded:: 0.1.0
    """

    backend: str
    server: str
    status: str
    sessions: int
    queued: int
    check_status: str
    check_description: str
    address: str

    @property
    def up(self) -> bool:
        """Whether HAProxy reports the server plain ``UP`` (or ``no check``)."""
        return self.status in _UP_STATUSES

    @property
    def in_maintenance(self) -> bool:
        """Whether the server is in maintenance, set here or inherited (``MAINT (via ...)``)."""
        return self.status.startswith("MAINT")


Socket = str | Path | tuple[str, int]
"""A unix socket path, or the ``(host, port)`` of a TCP ``stats socket``.

Any path-like object works (``os.fspath`` turns it into text); the annotation names
:class:`~pathlib.Path`.
"""

ServerName = Callable[[Any], tuple[str, str]]
"""Maps an instance to its ``(backend, server)`` names in HAProxy."""

ServerAddress = Callable[[Any], "tuple[str, int] | None"]
"""Maps an instance to the ``(host, port)`` HAProxy should send its traffic to.

``None`` leaves the address in HAProxy as it is.
"""


def _default_server(instance: Any) -> tuple[str, str]:
    """Server ``instance.id`` of backend ``app``."""
    return ("app", str(instance.id))


def _default_address(instance: Any) -> tuple[str, int] | None:
    """``(instance.host, instance.port)``, or None when the instance has neither."""
    host: object = getattr(instance, "host", None)
    port: object = getattr(instance, "port", None)
    if host is None and port is None:
        return None
    return (instance.host, instance.port)


def _check_socket(_instance: object, _attribute: object, value: Any) -> None:
    if isinstance(value, tuple):
        items = cast("tuple[object, ...]", value)  # isinstance cannot know the item types
        if len(items) == 2:  # noqa: PLR2004 - (host, port)
            host, port = items
            if (
                is_text(host)
                and isinstance(port, int)
                and not isinstance(port, bool)
                and 0 < port <= _MAX_PORT
            ):
                return
    # A PathLike of bytes gives bytes, which is_text turns down.
    elif isinstance(value, str | os.PathLike) and is_text(
        os.fspath(cast("str | os.PathLike[str]", value))
    ):
        return
    raise ConfigError(
        "HAProxyRouter.socket",
        f"expected a unix socket path or a (host, port) tuple, got {value!r}",
        'pass "/run/haproxy/admin.sock" or ("127.0.0.1", 9999)',
    )


def _check_health_check(_instance: object, _attribute: object, value: Any) -> None:
    if value is None or callable(getattr(value, "check", None)) or callable(value):
        return
    raise ConfigError(
        "HAProxyRouter.check",
        f"{value!r} is neither a HealthCheck nor an async function",
        "pass an object with an async check(instance) method, an async function, or None",
    )


@attrs.frozen
class HAProxyRouter:
    """A :class:`~rolling.typing.Router` that drives servers of HAProxy backends.

    It holds no connection and no state of its own: every call asks HAProxy.
    One router serves any number of backends and instances.

    Args:
        socket: HAProxy's Runtime API: the path of a unix ``stats socket``, or
            the ``(host, port)`` of a TCP one. It must be at ``level admin``.
        server: Maps an instance to its ``(backend, server)`` names (default:
            server ``instance.id`` in backend ``app``).
        address: Maps an instance to the ``(host, port)`` HAProxy should send
            it traffic on; :meth:`attach` updates the server when it differs.
            A host name is resolved where this runs (HAProxy takes IP
            addresses only); ``None`` as the answer leaves the server's
            address alone. Default: ``instance.host`` and ``instance.port``,
            or leave it alone when the instance has neither.
        check: Probed by :meth:`attach` until healthy before the server is set
            ready (a :class:`~rolling.typing.HealthCheck` or an async
            function). ``None`` skips that; :meth:`attach` still waits for
            HAProxy's own checks to report the server UP.
        drain_timeout: Longest :meth:`detach` waits for sessions to end.
        up_timeout: Longest :meth:`attach` probes ``check``, and then,
            separately, longest it waits for HAProxy to report UP.
        poll_interval: Seconds between two looks at ``show stat`` (and
            between two probes of ``check``).
        command_timeout: Longest one Runtime API command may take, from
            connecting to the end of the reply.

    Raises:
        ConfigError: An argument is invalid.

    .. versionadded:: 0.1.0
    """

    socket: Socket = attrs.field(validator=_check_socket)
    server: ServerName | None = attrs.field(
        default=None, kw_only=True, validator=validator(check_callable, allow_none=True)
    )
    address: ServerAddress | None = attrs.field(
        default=None, kw_only=True, validator=validator(check_callable, allow_none=True)
    )
    check: Any = attrs.field(default=None, kw_only=True, validator=_check_health_check)
    drain_timeout: float = attrs.field(
        default=30.0, kw_only=True, validator=validator(check_seconds)
    )
    up_timeout: float = attrs.field(
        default=30.0, kw_only=True, validator=validator(check_seconds, allow_zero=False)
    )
    poll_interval: float = attrs.field(
        default=0.2, kw_only=True, validator=validator(check_seconds, allow_zero=False)
    )
    command_timeout: float = attrs.field(
        default=5.0, kw_only=True, validator=validator(check_seconds, allow_zero=False)
    )

    # -- the Router protocol ---------------------------------------------------

    async def detach(self, instance: Any) -> None:
        """Drain the instance's server, wait for its sessions to end, then set maintenance.

        The wait is bounded by ``drain_timeout``; past it, a warning is logged
        and the server goes to maintenance anyway (HAProxy lets sessions still
        open finish; it only sends no new ones). A server in maintenance
        already is only set to maintenance again, so it stays out of traffic.

        Raises:
            HAProxyLookupError: No such backend or server.
            HAProxyPermissionError: The socket may not be opened, or is not
                at ``level admin``.
            HAProxyConnectionError: HAProxy is not running or does not answer.
            HAProxyError: HAProxy refused a command.
        """
        backend, server = self._names(instance)
        status = await self._status(backend, server)
        if status.in_maintenance:
            # Out of traffic already. "drain" would clear the maintenance and
            # let the server take traffic again for the length of the drain.
            await self._set_state(backend, server, "maint")
            return
        await self._set_state(backend, server, "drain")
        with anyio.move_on_after(self.drain_timeout):
            # Counted after the drain: sessions may have started since the look above.
            status = await self._status(backend, server)
            while status.sessions or status.queued:
                await anyio.sleep(self.poll_interval)
                status = await self._status(backend, server)
        if status.sessions or status.queued:
            logger.warning(
                "detach(%s): %s/%s still has %d session(s) and %d queued after the %ss "
                "drain timeout; setting maintenance anyway",
                instance.id,
                backend,
                server,
                status.sessions,
                status.queued,
                self.drain_timeout,
            )
        await self._set_state(backend, server, "maint")

    async def attach(self, instance: Any) -> None:
        """Check the instance, update its server's address, set it ready, wait for UP.

        Raises:
            HAProxyLookupError: No such backend or server.
            HAProxyPermissionError: The socket may not be opened, or is not
                at ``level admin``.
            HAProxyConnectionError: HAProxy is not running or does not answer.
            HAProxyError: ``check`` never passed within ``up_timeout`` (the
                server is left as it was), HAProxy refused a command, or it
                did not report the server UP within ``up_timeout``.
        """
        backend, server = self._names(instance)
        # Looked up first, so an unknown backend or server fails at once
        # rather than after the health check.
        configured = await self._configured_address(backend, server)
        target = await self._target_address(instance)
        if self.check is not None:
            await self._wait_healthy(instance, backend, server)
        if target is not None and target != configured:
            await self._set_address(backend, server, *target)
        await self._set_state(backend, server, "ready")
        await self._wait_up(backend, server)

    # -- inspection --------------------------------------------------------------

    async def status(self, instance: Any) -> ServerStatus:
        """The instance's server as ``show stat`` reports it now.

        Raises:
            HAProxyLookupError: No such backend or server.
            HAProxyPermissionError: The socket may not be opened.
            HAProxyConnectionError: HAProxy is not running or does not answer.
        """
        return await self._status(*self._names(instance))

    async def command(self, line: str) -> str:
        """Send one Runtime API command and return HAProxy's reply as it is.

        The reply is not checked: HAProxy's error messages come back as text.

        Raises:
            ValueError: ``line`` is empty or has a line break.
            HAProxyPermissionError: The socket may not be opened.
            HAProxyConnectionError: HAProxy is not running or does not answer.
        """
        if not is_text(line) or "\n" in line or "\r" in line:
            msg = f"a Runtime API command is one non-empty line, got {line!r}"
            raise ValueError(msg)
        try:
            with anyio.fail_after(self.command_timeout):
                return await self._exchange(line)
        except TimeoutError:
            raise HAProxyConnectionError(
                f"HAProxy did not answer {line!r} on {self._where()} within "
                f"{float(self.command_timeout)}s",
                command=line,
            ) from None

    # -- internals ---------------------------------------------------------------

    def _where(self) -> str:
        if isinstance(self.socket, tuple):
            host, port = self.socket
            return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return os.fspath(self.socket)

    def _names(self, instance: Any) -> tuple[str, str]:
        mapping = _default_server if self.server is None else self.server
        names: object = mapping(instance)
        if isinstance(names, tuple) and len(names) == 2:  # noqa: PLR2004 - (backend, server)
            backend, server = names  # pyright: ignore[reportUnknownVariableType] - checked below
            if (
                isinstance(backend, str)
                and isinstance(server, str)
                and _NAME.fullmatch(backend)
                and _NAME.fullmatch(server)
            ):
                return backend, server
        raise HAProxyError(
            f"server() returned {names!r} for {instance!r}: expected a (backend, server) "
            "tuple of HAProxy names (letters, digits, '-', '_', '.', ':')"
        )

    async def _target_address(self, instance: Any) -> tuple[str, int] | None:
        """The (IP, port) the instance serves on, or None to leave HAProxy's as it is."""
        mapping = _default_address if self.address is None else self.address
        try:
            found: Any = mapping(instance)
        except AttributeError as exc:
            raise HAProxyError(
                f"cannot find the address of {instance!r} ({exc}); pass address=... to map it"
            ) from None
        if found is None:
            return None
        try:
            host, port = address_of(lambda _instance: found, instance)
        except ValueError as exc:
            raise HAProxyError(str(exc)) from None
        try:
            return str(ipaddress.ip_address(host)), port
        except ValueError:
            pass  # a host name: HAProxy's "set server addr" takes IP addresses only
        try:
            resolved = await anyio.getaddrinfo(host, port, type=_socket.SOCK_STREAM)
        except OSError as exc:
            raise HAProxyError(
                f"cannot resolve {host!r}, the host of {instance!r}, to an IP address "
                f"for HAProxy: {exc}"
            ) from None
        return str(ipaddress.ip_address(resolved[0][4][0])), port

    async def _wait_healthy(self, instance: Any, backend: str, server: str) -> None:
        check = as_check_function(self.check)
        if check is None:  # pragma: no cover - only called with a check
            return
        reason = "no probe finished"
        with anyio.move_on_after(self.up_timeout):
            while True:
                result = await probe_once(check, instance, self.up_timeout)
                if result.healthy:
                    return
                reason = result.reason or "unhealthy"
                await anyio.sleep(self.poll_interval)
        raise HAProxyError(
            f"{instance.id} did not pass its health check within {float(self.up_timeout)}s "
            f"(last: {reason}), so {backend}/{server} was not set ready"
        )

    async def _wait_up(self, backend: str, server: str) -> None:
        status = await self._status(backend, server)
        with anyio.move_on_after(self.up_timeout):
            while not status.up:
                await anyio.sleep(self.poll_interval)
                status = await self._status(backend, server)
        if status.up:
            return
        check = " ".join(part for part in (status.check_status, status.check_description) if part)
        raise HAProxyError(
            f"HAProxy did not report {backend}/{server} UP within {float(self.up_timeout)}s "
            f"of setting it ready: its status is {status.status!r}"
            + (f", last check {check!r}" if check else "")
        )

    async def _run(self, line: str, backend: str, server: str | None = None) -> str:
        """Send ``line``; raise on the replies that mean an unknown name or no permission."""
        reply = (await self.command(line)).strip()
        logger.debug("%s: %r -> %r", self._where(), line, reply[:200])
        if reply in _NO_BACKEND:
            raise HAProxyLookupError(
                f"HAProxy has no backend {backend!r} (it answered {reply!r} to {line!r} on "
                f"{self._where()})",
                command=line,
                reply=reply,
            )
        if reply == _NO_SERVER:
            raise HAProxyLookupError(
                f"HAProxy has no server {server!r} in backend {backend!r} (it answered "
                f"{reply!r} to {line!r} on {self._where()})",
                command=line,
                reply=reply,
            )
        if reply == _NOT_ADMIN:
            raise HAProxyPermissionError(
                f"HAProxy refused {line!r} on {self._where()}: Permission denied. Changing "
                "servers needs the stats socket at level admin (`stats socket ... level admin` "
                "in haproxy.cfg)",
                command=line,
                reply=reply,
            )
        return reply

    async def _set_state(self, backend: str, server: str, state: str) -> None:
        line = f"set server {backend}/{server} state {state}"
        reply = await self._run(line, backend, server)
        if reply:  # success is an empty reply
            raise HAProxyError(
                f"HAProxy refused {line!r} on {self._where()}: {reply}", command=line, reply=reply
            )

    async def _set_address(self, backend: str, server: str, host: str, port: int) -> None:
        line = f"set server {backend}/{server} addr {host} port {port}"
        reply = await self._run(line, backend, server)
        if not _ADDR_CHANGED.fullmatch(reply):
            raise HAProxyError(
                f"HAProxy refused {line!r} on {self._where()}: {reply or '(empty reply)'}",
                command=line,
                reply=reply,
            )

    async def _status(self, backend: str, server: str) -> ServerStatus:
        line = f"show stat {backend} 4 -1"  # type 4: servers only; -1: every one of them
        reply = await self._run(line, backend)
        for row in _table(reply, line, delimiter=","):
            if row.get("pxname") == backend and row.get("svname") == server:
                try:
                    return ServerStatus(
                        backend=backend,
                        server=server,
                        status=row["status"],
                        sessions=int(row["scur"] or 0),
                        queued=int(row["qcur"] or 0),
                        check_status=row.get("check_status", ""),
                        check_description=row.get("last_chk", ""),
                        address=row.get("addr", ""),
                    )
                except (KeyError, ValueError) as exc:
                    raise HAProxyError(
                        f"cannot read {line!r} from {self._where()}: {exc!r} in {row!r}",
                        command=line,
                        reply=reply,
                    ) from None
        raise HAProxyLookupError(
            f"HAProxy has no server {server!r} in backend {backend!r} ({line!r} on "
            f"{self._where()} does not list it)",
            command=line,
            reply=reply,
        )

    async def _configured_address(self, backend: str, server: str) -> tuple[str, int]:
        line = f"show servers state {backend}"
        reply = await self._run(line, backend)
        for row in _table(reply, line, delimiter=" "):
            if row.get("be_name") == backend and row.get("srv_name") == server:
                try:
                    return row["srv_addr"], int(row["srv_port"])
                except (KeyError, ValueError) as exc:
                    raise HAProxyError(
                        f"cannot read {line!r} from {self._where()}: {exc!r} in {row!r}",
                        command=line,
                        reply=reply,
                    ) from None
        raise HAProxyLookupError(
            f"HAProxy has no server {server!r} in backend {backend!r} ({line!r} on "
            f"{self._where()} does not list it)",
            command=line,
            reply=reply,
        )

    async def _connect(self, line: str) -> anyio.abc.SocketStream:
        where = self._where()
        try:
            if isinstance(self.socket, tuple):
                return await anyio.connect_tcp(*self.socket)
            return await anyio.connect_unix(self.socket)
        except OSError as exc:
            causes = causes_of(exc)
            if any(isinstance(cause, PermissionError) for cause in causes):
                raise HAProxyPermissionError(
                    f"permission denied on HAProxy's socket {where}: run as a user that may "
                    "write it (and enter its directory), or let that user's group write it: "
                    f"`stats socket {where} mode 660 group <group> level admin` in haproxy.cfg",
                    command=line,
                ) from exc
            if any(
                isinstance(cause, FileNotFoundError | ConnectionRefusedError) for cause in causes
            ):
                reason = (
                    describe_connect_error(exc)
                    if isinstance(self.socket, tuple)
                    else (exc.strerror or str(exc)).lower()
                )
                raise HAProxyConnectionError(
                    f"HAProxy is not running or not listening on {where} ({reason})",
                    command=line,
                ) from exc
            raise HAProxyConnectionError(
                f"cannot reach HAProxy's Runtime API on {where}: {describe_connect_error(exc)}",
                command=line,
            ) from exc

    async def _exchange(self, line: str) -> str:
        stream = await self._connect(line)
        async with stream:
            data = bytearray()
            try:
                await stream.send(line.encode() + b"\n")
                # HAProxy answers one command, then closes the connection.
                async for chunk in stream:
                    data += chunk
                    if len(data) > _MAX_REPLY:
                        raise HAProxyError(
                            f"the reply to {line!r} from {self._where()} is larger than "
                            f"{_MAX_REPLY // (1024 * 1024)} MiB",
                            command=line,
                        )
            except (OSError, anyio.BrokenResourceError) as exc:
                raise HAProxyConnectionError(
                    f"HAProxy closed the connection on {self._where()} during {line!r}: {exc}",
                    command=line,
                ) from exc
        return data.decode("utf-8", errors="replace")


def _table(reply: str, line: str, *, delimiter: str) -> list[dict[str, str]]:
    """The rows of a Runtime API table whose header line starts with ``#``.

    ``show stat`` is CSV (``# pxname,svname,...``); ``show servers state`` is
    separated by single spaces after a version line (``1``, then ``# be_id
    be_name ...``).
    """
    lines = reply.splitlines()
    for index, text in enumerate(lines):
        if text.startswith("#"):
            header = text[1:].strip()
            rows = lines[index + 1 :]
            break
    else:
        raise HAProxyError(
            f"unexpected reply to {line!r}: {reply[:200]!r}", command=line, reply=reply
        )
    if delimiter == " ":
        names = header.split()
        return [dict(zip(names, row.split(), strict=False)) for row in rows if row.strip()]
    names = next(csv.reader([header]))
    return [dict(zip(names, row, strict=False)) for row in csv.reader(rows) if row and any(row)]

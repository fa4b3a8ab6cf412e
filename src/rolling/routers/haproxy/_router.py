"""The router itself: attach, detach and weights of HAProxy servers (see the package docs)."""

from __future__ import annotations

import ipaddress
import logging
import os
import socket as _socket
from typing import Any, cast

import anyio
import attrs

from rolling import ConfigError
from rolling.health import as_check_function, probe_once
from rolling.net import address_of, is_text
from rolling.typing import FULL_WEIGHT
from rolling.validate import check_callable, check_seconds, check_weight, validator

from ._runtime import (
    ADDR_CHANGED,
    MAX_PORT,
    NAME,
    NO_BACKEND,
    NO_SERVER,
    NOT_ADMIN,
    HAProxyConnectionError,
    HAProxyError,
    HAProxyLookupError,
    HAProxyPermissionError,
    ServerAddress,
    ServerName,
    ServerStatus,
    Socket,
    exchange,
    parse_table,
    parse_weight,
    where_of,
)

__all__ = ["HAProxyRouter"]

logger = logging.getLogger("rolling.haproxy")


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
                and 0 < port <= MAX_PORT
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

    It holds no connection, and no state of its own but the weights
    :meth:`set_weight` was given (so :meth:`attach` can apply them): every
    other call asks HAProxy. One router serves any number of backends and
    instances.

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
    .. versionchanged:: 0.4.0 :meth:`set_weight`; :meth:`attach` sets the weight.
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
    _weights: dict[tuple[str, str], int] = attrs.field(
        factory=dict[tuple[str, str], int], init=False, repr=False, eq=False
    )
    """The weight last given to each (backend, server), for :meth:`attach` to apply."""

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
        # Before "ready": the server's first new session already goes by this weight.
        await self._set_weight(backend, server, self._weights.get((backend, server), FULL_WEIGHT))
        await self._set_state(backend, server, "ready")
        await self._wait_up(backend, server)

    async def set_weight(self, instance: Any, weight: int) -> None:
        """Set the weight of the instance's server, and check that HAProxy took it.

        Sends ``set weight <b>/<s> <weight>``, then reads it back with ``get
        weight <b>/<s>``. HAProxy applies it to the next session it balances;
        a weight of 0 sends the server no new session, and the ones it has go
        on (no drain). The weight is also kept, so :meth:`attach` sets it
        again; a server in maintenance takes the weight and no traffic.

        Args:
            instance: Mapped to its server by ``server``.
            weight: An int from 0 to :data:`~rolling.typing.MAX_WEIGHT`.

        Raises:
            ConfigError: ``weight`` is not an int in that range (nothing is sent).
            HAProxyLookupError: No such backend or server.
            HAProxyPermissionError: The socket may not be opened, or is not
                at ``level admin``.
            HAProxyConnectionError: HAProxy is not running or does not answer.
            HAProxyError: HAProxy refused the weight (a backend of a static
                balance algorithm takes only 0 and its configured weight), or
                read it back as another number.
        """
        check_weight("HAProxyRouter.set_weight.weight", weight)
        backend, server = self._names(instance)
        await self._set_weight(backend, server, weight)
        self._weights[backend, server] = weight

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
                return await exchange(self.socket, line)
        except TimeoutError:
            raise HAProxyConnectionError(
                f"HAProxy did not answer {line!r} on {where_of(self.socket)} within "
                f"{float(self.command_timeout)}s",
                command=line,
            ) from None

    # -- internals ---------------------------------------------------------------

    def _names(self, instance: Any) -> tuple[str, str]:
        mapping = _default_server if self.server is None else self.server
        names: object = mapping(instance)
        if isinstance(names, tuple) and len(names) == 2:  # noqa: PLR2004 - (backend, server)
            backend, server = names  # pyright: ignore[reportUnknownVariableType] - checked below
            if (
                isinstance(backend, str)
                and isinstance(server, str)
                and NAME.fullmatch(backend)
                and NAME.fullmatch(server)
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
        logger.debug("%s: %r -> %r", where_of(self.socket), line, reply[:200])
        if reply in NO_BACKEND:
            raise HAProxyLookupError(
                f"HAProxy has no backend {backend!r} (it answered {reply!r} to {line!r} on "
                f"{where_of(self.socket)})",
                command=line,
                reply=reply,
            )
        if reply == NO_SERVER:
            raise HAProxyLookupError(
                f"HAProxy has no server {server!r} in backend {backend!r} (it answered "
                f"{reply!r} to {line!r} on {where_of(self.socket)})",
                command=line,
                reply=reply,
            )
        if reply == NOT_ADMIN:
            raise HAProxyPermissionError(
                f"HAProxy refused {line!r} on {where_of(self.socket)}: Permission denied. Changing "
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
                f"HAProxy refused {line!r} on {where_of(self.socket)}: {reply}",
                command=line,
                reply=reply,
            )

    async def _set_weight(self, backend: str, server: str, weight: int) -> None:
        line = f"set weight {backend}/{server} {weight}"
        reply = await self._run(line, backend, server)
        if reply:  # success is an empty reply
            raise HAProxyError(
                f"HAProxy refused {line!r} on {where_of(self.socket)}: {reply}",
                command=line,
                reply=reply,
            )
        check = f"get weight {backend}/{server}"
        answer = await self._run(check, backend, server)
        now = parse_weight(answer, check)
        if now != weight:
            raise HAProxyError(
                f"HAProxy reports weight {now} for {backend}/{server} after {line!r} on "
                f"{where_of(self.socket)} (it answered {answer!r} to {check!r}); was another "
                "client changing it?",
                command=check,
                reply=answer,
            )

    async def _set_address(self, backend: str, server: str, host: str, port: int) -> None:
        line = f"set server {backend}/{server} addr {host} port {port}"
        reply = await self._run(line, backend, server)
        if not ADDR_CHANGED.fullmatch(reply):
            raise HAProxyError(
                f"HAProxy refused {line!r} on {where_of(self.socket)}: {reply or '(empty reply)'}",
                command=line,
                reply=reply,
            )

    async def _status(self, backend: str, server: str) -> ServerStatus:
        line = f"show stat {backend} 4 -1"  # type 4: servers only; -1: every one of them
        reply = await self._run(line, backend)
        for row in parse_table(reply, line, delimiter=","):
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
                        f"cannot read {line!r} from {where_of(self.socket)}: {exc!r} in {row!r}",
                        command=line,
                        reply=reply,
                    ) from None
        # `show stat` answers an empty table, not "No such proxy.", for a proxy that has no
        # servers, such as a frontend: ask again in a way that tells a missing backend.
        await self._require_backend(backend)
        raise HAProxyLookupError(
            f"HAProxy has no server {server!r} in backend {backend!r} ({line!r} on "
            f"{where_of(self.socket)} does not list it)",
            command=line,
            reply=reply,
        )

    async def _require_backend(self, backend: str) -> None:
        """Raise HAProxyLookupError when HAProxy has no backend of this name.

        ``show servers state`` answers "Can't find backend." for a name that is
        no backend, a frontend's included.
        """
        line = f"show servers state {backend}"
        reply = await self._run(line, backend)
        parse_table(reply, line, delimiter=" ")  # anything but a table is an error

    async def _configured_address(self, backend: str, server: str) -> tuple[str, int]:
        line = f"show servers state {backend}"
        reply = await self._run(line, backend)
        for row in parse_table(reply, line, delimiter=" "):
            if row.get("be_name") == backend and row.get("srv_name") == server:
                try:
                    return row["srv_addr"], int(row["srv_port"])
                except (KeyError, ValueError) as exc:
                    raise HAProxyError(
                        f"cannot read {line!r} from {where_of(self.socket)}: {exc!r} in {row!r}",
                        command=line,
                        reply=reply,
                    ) from None
        raise HAProxyLookupError(
            f"HAProxy has no server {server!r} in backend {backend!r} ({line!r} on "
            f"{where_of(self.socket)} does not list it)",
            command=line,
            reply=reply,
        )

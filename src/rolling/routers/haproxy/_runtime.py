"""HAProxy's Runtime API as the router speaks it: errors, replies, one command per connection.

Private to :mod:`rolling.routers.haproxy`, which re-exports the public names.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import attrs

from rolling import RollingError
from rolling.net import causes_of, describe_connect_error

__all__ = [
    "ADDR_CHANGED",
    "MAX_PORT",
    "NAME",
    "NOT_ADMIN",
    "NO_BACKEND",
    "NO_SERVER",
    "HAProxyConnectionError",
    "HAProxyError",
    "HAProxyLookupError",
    "HAProxyPermissionError",
    "ServerAddress",
    "ServerName",
    "ServerStatus",
    "Socket",
    "exchange",
    "parse_table",
    "parse_weight",
    "where_of",
]

MAX_PORT = 65535
MAX_REPLY = 16 * 1024 * 1024
"""Bytes of one reply read at most: ``show stat`` of one backend is far smaller."""

NAME = re.compile(r"[A-Za-z0-9_.:-]+")
"""The characters HAProxy allows in proxy and server names (and nothing the CLI parses)."""

# What HAProxy 2.6 answers when a name is unknown, by command: ``set server``,
# ``show servers state`` and ``show stat`` each have their own wording.
NO_BACKEND = frozenset({"No such backend.", "Can't find backend.", "No such proxy."})
NO_SERVER = "No such server."
NOT_ADMIN = "Permission denied"

# ``set server <b>/<s> addr <ip> port <port>`` reports what it did on success,
# such as "IP changed from '10.0.0.1' to '10.0.0.2', no need to change the port
# by 'stats socket command'". Errors come in other words ("Invalid addr ...")
# or inside the same frame ("no need to change the addr, problem converting
# port ..."), so success is recognised by its exact shape.
ADDR_CHANGED = re.compile(
    r"(?:IP changed from '[^']*' to '[^']*'|no need to change the addr), "
    r"(?:port changed from '[^']*' to '[^']*'|no need to change the port) by '[^']*'"
)

UP_STATUSES = frozenset({"UP", "no check"})


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
        return self.status in UP_STATUSES

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


_WEIGHT_REPLY = re.compile(r"(\d+) \(initial (\d+)\)")
"""What ``get weight <b>/<s>`` answers: the current weight, then the configured one."""


def parse_weight(reply: str, line: str) -> int:
    """The current weight in a ``get weight`` reply, such as ``"100 (initial 1)"``.

    Raises:
        HAProxyError: The reply has another shape.
    """
    found = _WEIGHT_REPLY.fullmatch(reply.strip())
    if found is None:
        raise HAProxyError(
            f"unexpected reply to {line!r}: {reply[:200]!r}", command=line, reply=reply
        )
    return int(found.group(1))


def where_of(socket: Socket) -> str:
    """The socket as people write it: a path, ``host:port`` or ``[v6]:port``."""
    if isinstance(socket, tuple):
        host, port = socket
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return os.fspath(socket)


async def _connect(socket: Socket, line: str) -> anyio.abc.SocketStream:
    where = where_of(socket)
    try:
        if isinstance(socket, tuple):
            return await anyio.connect_tcp(*socket)
        return await anyio.connect_unix(socket)
    except OSError as exc:
        causes = causes_of(exc)
        if any(isinstance(cause, PermissionError) for cause in causes):
            raise HAProxyPermissionError(
                f"permission denied on HAProxy's socket {where}: run as a user that may "
                "write it (and enter its directory), or let that user's group write it: "
                f"`stats socket {where} mode 660 group <group> level admin` in haproxy.cfg",
                command=line,
            ) from exc
        if any(isinstance(cause, FileNotFoundError | ConnectionRefusedError) for cause in causes):
            reason = (
                describe_connect_error(exc)
                if isinstance(socket, tuple)
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


async def exchange(socket: Socket, line: str) -> str:
    """Send one command line on a connection of its own; HAProxy's reply, read to the end."""
    stream = await _connect(socket, line)
    async with stream:
        data = bytearray()
        try:
            await stream.send(line.encode() + b"\n")
            # HAProxy answers one command, then closes the connection.
            async for chunk in stream:
                data += chunk
                if len(data) > MAX_REPLY:
                    raise HAProxyError(
                        f"the reply to {line!r} from {where_of(socket)} is larger than "
                        f"{MAX_REPLY // (1024 * 1024)} MiB",
                        command=line,
                    )
        except (OSError, anyio.BrokenResourceError) as exc:
            raise HAProxyConnectionError(
                f"HAProxy closed the connection on {where_of(socket)} during {line!r}: {exc}",
                command=line,
            ) from exc
    return data.decode("utf-8", errors="replace")


def parse_table(reply: str, line: str, *, delimiter: str) -> list[dict[str, str]]:
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

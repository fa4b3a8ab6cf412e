"""Opening and closing asyncssh connections, and reading the files trust depends on."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import anyio
import asyncssh

from rolling import ConfigError

from ._errors import SSHError

__all__ = [
    "ABORT_WAIT",
    "close_connection",
    "collected_text",
    "load_client_keys",
    "read_known_hosts",
    "require_asyncio",
]

_CLOSE_WAIT: Final = 5.0
"""Seconds a closing connection has to say goodbye before it is aborted."""

ABORT_WAIT: Final = 1.0
"""Seconds to wait for an aborted connection to finish closing."""


def collected_text(value: object) -> str:
    """Output asyncssh collected: a str with ``encoding`` set, or None when there was none."""
    return value if isinstance(value, str) else ""


def require_asyncio() -> None:
    """Raise ConfigError unless this task runs on asyncio, the only loop asyncssh supports."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        running = False
    else:
        running = asyncio.current_task() is not None
    if not running:
        raise ConfigError(
            "SSHDriver",
            "asyncssh runs on asyncio only, and this task runs on another event loop (trio?)",
            'run the program on asyncio, such as anyio.run(main, backend="asyncio")',
        )


def read_known_hosts(path: Path) -> tuple[asyncssh.SSHKnownHosts, bool]:
    """The keys in the known hosts file at ``path``, and whether the file exists."""
    path = path.expanduser()
    try:
        text, exists = path.read_text(encoding="utf-8"), True
    except FileNotFoundError:
        # No file: no host is trusted through it (and none is learnt on first use).
        text, exists = "", False
    except (OSError, UnicodeDecodeError) as exc:
        raise SSHError(f"cannot read known_hosts {path}: {exc}") from exc
    try:
        return asyncssh.import_known_hosts(text), exists
    except (ValueError, asyncssh.Error) as exc:
        raise SSHError(f"cannot parse known_hosts {path}: {exc}") from exc


def load_client_keys(paths: Sequence[str]) -> Sequence[asyncssh.SSHKeyPair]:
    try:
        return asyncssh.load_keypairs(list(paths))
    except (OSError, ValueError, asyncssh.Error) as exc:
        raise SSHError(f"cannot load client_keys {paths}: {exc}") from exc


async def close_connection(connection: asyncssh.SSHClientConnection) -> None:
    """Close ``connection`` cleanly within :data:`_CLOSE_WAIT` seconds, else abort it."""
    connection.close()
    with anyio.CancelScope(shield=True):
        with anyio.move_on_after(_CLOSE_WAIT):
            await connection.wait_closed()
            return
        connection.abort()
        with anyio.move_on_after(ABORT_WAIT):
            await connection.wait_closed()

"""Where a networked instance listens, shared by the built-in routers and checks.

The contract: an instance served on the network has ``host: str`` and
``port: int`` attributes. Routers and checks take an optional ``address``
callable for instances that keep their address elsewhere.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

__all__ = ["Address", "address_of", "default_address", "describe_connect_error", "is_text"]

Address = Callable[[Any], tuple[str, int]]
"""Maps an instance to the ``(host, port)`` it serves on."""

_MAX_PORT = 65535


def is_text(value: object) -> bool:
    """Whether ``value`` is a non-empty str (a check mypy cannot call redundant)."""
    return isinstance(value, str) and bool(value)


def default_address(instance: Any) -> tuple[str, int]:
    """Read ``instance.host`` and ``instance.port``."""
    return (instance.host, instance.port)


def address_of(address: Address, instance: object) -> tuple[str, int]:
    """Call ``address`` on ``instance`` and check that it gave a usable ``(host, port)``.

    Raises:
        ValueError: The callable failed or returned something else; the message
            says what, for the caller to re-raise or report.
    """
    try:
        result: object = address(instance)
    except AttributeError as exc:
        msg = f"cannot find the address of {instance!r} ({exc}); pass address=... to map it"
        raise ValueError(msg) from exc
    if not isinstance(result, tuple) or len(result) != 2:  # noqa: PLR2004 - (host, port)
        msg = f"address() returned {result!r} for {instance!r}, not a (host, port) tuple"
        raise ValueError(msg)
    host, port = result  # pyright: ignore[reportUnknownVariableType] - checked just below
    if not isinstance(host, str) or not host:
        msg = f"address() returned host {host!r} for {instance!r}, not a non-empty str"
        raise ValueError(msg)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port <= _MAX_PORT:
        msg = f"address() returned port {port!r} for {instance!r}, not an int from 1 to 65535"
        raise ValueError(msg)
    return host, port


def _causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and everything it wraps: causes, contexts and group members."""
    seen: list[BaseException] = []
    pending = [exc]
    while pending:
        current = pending.pop()
        if any(current is known for known in seen):
            continue
        seen.append(current)
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)  # pyright: ignore[reportUnknownMemberType, reportUnknownArgumentType] - members are BaseExceptions
        pending.extend(
            linked for linked in (current.__cause__, current.__context__) if linked is not None
        )
    return seen


def describe_connect_error(exc: OSError) -> str:
    """A short reason for a failed connection, such as ``"connection refused"``.

    anyio reports a failed ``connect_tcp`` as one ``OSError`` that wraps the
    error of every address it tried, so look through the wrapped ones.
    """
    causes = _causes(exc)
    for cause in causes:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
    for cause in causes:
        if isinstance(cause, ssl.SSLError):
            return f"TLS error: {cause.reason or cause}"
    for cause in causes:
        if isinstance(cause, OSError) and cause.strerror:
            return f"connection failed: {cause.strerror.lower()}"
    return f"connection failed: {exc}"

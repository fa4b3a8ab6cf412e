"""Network helpers for adapter authors: where an instance listens, and why a connection failed.

The built-in routers and checks use these; a third-party router or check can
too, so that it reads addresses and reports errors the way ours do.

The contract: an instance served on the network has ``host: str`` and
``port: int`` attributes. Routers and checks take an optional ``address``
callable (an :data:`Address`) for instances that keep their address
elsewhere, and check what it returns with :func:`address_of`::

    from rolling.net import Address, address_of, default_address, describe_connect_error

    class PortCheck:
        def __init__(self, address: Address | None = None) -> None:
            self._address = default_address if address is None else address

        async def check(self, instance: object) -> rolling.HealthResult:
            try:
                host, port = address_of(self._address, instance)
            except ValueError as exc:
                return rolling.HealthResult(healthy=False, reason=str(exc))
            try:
                stream = await anyio.connect_tcp(host, port)
            except OSError as exc:
                return rolling.HealthResult(healthy=False, reason=describe_connect_error(exc))
            await stream.aclose()
            return rolling.HealthResult(healthy=True)

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

__all__ = [
    "Address",
    "address_of",
    "causes_of",
    "default_address",
    "describe_connect_error",
    "is_text",
]

Address = Callable[[Any], tuple[str, int]]
"""Maps an instance to the ``(host, port)`` it serves on (:func:`default_address` reads both)."""

_MAX_PORT = 65535


def is_text(value: object) -> bool:
    """Whether ``value`` is a non-empty str.

    Handy in validators of values typed ``str``: there, ``isinstance(value, str)``
    is what mypy calls redundant, and a call is not.
    """
    return isinstance(value, str) and bool(value)


def default_address(instance: Any) -> tuple[str, int]:
    """Read ``instance.host`` and ``instance.port``: the default :data:`Address`.

    Raises:
        AttributeError: The instance has no ``host`` or no ``port``
            (:func:`address_of` turns that into a ``ValueError`` that says what to do).
    """
    return (instance.host, instance.port)


def address_of(address: Address, instance: object) -> tuple[str, int]:
    """Call ``address`` on ``instance`` and check that it gave a usable ``(host, port)``.

    Args:
        address: The mapping, such as :func:`default_address` or one a user passed.
        instance: The instance to look up.

    Returns:
        A non-empty host and a port from 1 to 65535.

    Raises:
        ValueError: The callable failed (any :class:`Exception` it raised, such
            as the ``AttributeError`` of an instance without ``host``, is the
            ``__cause__``) or returned something else; the message says what,
            for the caller to re-raise or report.
    """
    try:
        result: object = address(instance)
    except Exception as exc:  # whatever the callable raised, as documented
        msg = (
            f"cannot find the address of {instance!r} ({type(exc).__name__}: {exc});"
            " pass address=... to map it"
        )
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


def causes_of(exc: BaseException) -> list[BaseException]:
    """``exc`` and everything it wraps: its causes, contexts and exception group members.

    Each exception is listed once, ``exc`` first; cycles are safe. The order is
    depth first, each exception before what it wraps: a group's members in
    their order, then its ``__cause__``, then its ``__context__``, each with
    what it wraps in turn. So anyio's failed ``connect_tcp``, an ``OSError``
    caused by a group of one error per address tried, lists the addresses'
    errors in the order they were tried. Use it to look for the error that
    matters inside what a library wrapped, say any :class:`PermissionError`
    behind a failed connection::

        if any(isinstance(cause, PermissionError) for cause in causes_of(exc)):
            ...
    """
    seen: list[BaseException] = []
    pending = [exc]
    while pending:
        current = pending.pop()
        if any(current is known for known in seen):
            continue
        seen.append(current)
        wrapped: list[BaseException] = []
        if isinstance(current, BaseExceptionGroup):
            wrapped.extend(current.exceptions)  # pyright: ignore[reportUnknownMemberType, reportUnknownArgumentType] - members are BaseExceptions
        wrapped.extend(
            linked for linked in (current.__cause__, current.__context__) if linked is not None
        )
        pending.extend(reversed(wrapped))  # a stack: the first wrapped is taken next
    return seen


def describe_connect_error(exc: OSError) -> str:
    """A short reason for a failed connection, such as ``"connection refused"``.

    anyio reports a failed ``connect_tcp`` as one ``OSError`` that wraps the
    error of every address it tried, so this looks through the wrapped ones
    (:func:`causes_of`): a refused connection first, then a TLS error, then
    the first OS error with a message, in :func:`causes_of`'s order (for
    anyio's group, the first address tried).
    """
    causes = causes_of(exc)
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

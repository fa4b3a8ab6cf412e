"""TCPCheck: healthy when a TCP connection opens."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.abc
import attrs

from rolling.net import Address, address_of, default_address, describe_connect_error
from rolling.typing import HealthResult
from rolling.validate import check_callable, check_seconds, validator

from ._connect import connect

__all__ = ["TCPCheck"]


@attrs.frozen(kw_only=True)
class TCPCheck:
    """Healthy when a TCP connection to the instance opens within ``timeout``.

    The connection is closed again at once; nothing is sent.

    Args:
        address: Maps an instance to the ``(host, port)`` it serves on
            (default: its ``host`` and ``port`` attributes).
        timeout: Longest the connection may take to open, in seconds.

    .. versionadded:: 0.1.0
    """

    address: Address | None = attrs.field(
        default=None, validator=validator(check_callable, allow_none=True)
    )
    timeout: float = attrs.field(default=1.0, validator=validator(check_seconds, allow_zero=False))

    async def check(self, instance: Any) -> HealthResult:
        """Try to connect to ``instance`` once.

        Returns:
            Healthy, or unhealthy with a reason such as ``"connection refused"``
            or ``"timed out after 1.0s"``.
        """
        try:
            host, port = address_of(
                default_address if self.address is None else self.address, instance
            )
        except ValueError as exc:
            return HealthResult(healthy=False, reason=str(exc))
        stream: anyio.abc.ByteStream | None = None
        with anyio.move_on_after(self.timeout):
            try:
                stream = await connect(host, port)
            except OSError as exc:
                return HealthResult(healthy=False, reason=describe_connect_error(exc))
        if stream is None:
            return HealthResult(healthy=False, reason=f"timed out after {float(self.timeout)}s")
        # Closed outside the time limit: the answer is already known.
        await stream.aclose()
        return HealthResult(healthy=True)

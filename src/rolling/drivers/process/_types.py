"""The process driver's instance type, command type and error."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs

from rolling import RollingError

__all__ = ["Command", "ProcessDriverError", "ProcessInstance"]

Command = Callable[[str, int], Sequence[str]]
"""Builds the argv of one process from the version and the port it must serve on."""


class ProcessDriverError(RollingError, RuntimeError):
    """A :class:`ProcessDriver` was misused, or a process could not be started.

    .. versionadded:: 0.1.0
    """


@attrs.frozen(kw_only=True)
class ProcessInstance:
    """One process of a :class:`ProcessDriver` fleet, as it was when handed out.

    Attributes:
        id: Identifier, unique in the fleet (``"p-0"``, ``"p-1"``, ...); kept
            when the instance is replaced.
        version: The version the process was started with.
        host: The address the process is expected to serve on.
        port: The port the process serves on; kept when the instance is replaced.
        pid: The process id; a replaced instance gets a new one.

    .. versionadded:: 0.1.0
    """

    id: str
    version: str
    host: str = "127.0.0.1"
    port: int
    pid: int

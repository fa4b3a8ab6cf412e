"""The Docker driver's errors, and the one place Docker API failures are turned into them."""

from __future__ import annotations

from typing import Final

import aiodocker
import aiohttp

from rolling import RollingError
from rolling.net import causes_of

__all__ = [
    "ContainerExitedError",
    "ContainerNotFoundError",
    "DockerAPIError",
    "DockerDriverError",
    "EnginePermissionError",
    "EngineUnreachableError",
    "ImageNotFoundError",
    "NameConflictError",
    "PortInUseError",
    "engine_error",
]

_NOT_CONNECTED: Final = 900
"""The status aiodocker gives a request that never reached the engine."""
_NOT_FOUND: Final = 404
_CONFLICT: Final = 409


class DockerDriverError(RollingError, RuntimeError):
    """Root of the Docker driver's errors; raised as such when the driver is misused.

    .. versionadded:: 0.2.0
    """


class EngineUnreachableError(DockerDriverError, ConnectionError):
    """The container engine's API did not answer: no socket, nothing listening, or it went away.

    .. versionadded:: 0.2.0
    """


class EnginePermissionError(DockerDriverError, PermissionError):
    """The API socket exists but this process may not use it (add the user to its group).

    .. versionadded:: 0.2.0
    """


class ImageNotFoundError(DockerDriverError, LookupError):
    """An image is not on the engine and could not (or, by the pull policy, may not) be pulled.

    .. versionadded:: 0.2.0
    """


class ContainerNotFoundError(DockerDriverError, LookupError):
    """A container of the fleet no longer exists.

    .. versionadded:: 0.2.0
    """


class NameConflictError(DockerDriverError):
    """A container name is taken by a container the driver did not expect.

    .. versionadded:: 0.2.0
    """


class PortInUseError(DockerDriverError, OSError):
    """A port the container publishes is taken on the host.

    .. versionadded:: 0.2.0
    """


class DockerAPIError(DockerDriverError):
    """Any other error the engine answered with.

    Attributes:
        status: The HTTP status of the answer.

    .. versionadded:: 0.2.0
    """

    def __init__(self, message: str, *, status: int) -> None:
        """Keep ``status`` beside the message."""
        self.status = status
        super().__init__(message)


class ContainerExitedError(DockerDriverError):
    """A container stopped while it was starting (its program exited or crashed).

    Attributes:
        name: The container's name.
        exit_code: The exit status of its main process.
        logs: The last lines it wrote (standard output and error, interleaved).

    .. versionadded:: 0.2.0
    """

    def __init__(self, *, name: str, exit_code: int, logs: str) -> None:
        """Build the message from the parts."""
        self.name = name
        self.exit_code = exit_code
        self.logs = logs
        super().__init__(describe_exit(name, exit_code, logs))


def describe_exit(name: str, exit_code: int, logs: str) -> str:
    """The reason given for a container that is not running: its exit code and log tail."""
    tail = logs.strip()
    return f"container {name} exited with code {exit_code}; " + (
        f"last log lines:\n{tail}" if tail else "it wrote no log lines"
    )


def engine_error(  # noqa: C901, PLR0911 - one flat table of cases reads best
    exc: BaseException, action: str, url: str
) -> DockerDriverError:
    """The :class:`DockerDriverError` for a failed API call; ``action`` says what was tried.

    The engine's own message is kept in every case; the class says what kind
    of failure it was, so callers (and users' ``except`` clauses) can tell a
    daemon that is down from a name that is taken.
    """
    if isinstance(exc, DockerDriverError):
        return exc
    where = f"the container engine at {url}"
    if isinstance(exc, TimeoutError):
        return EngineUnreachableError(f"{action}: {where} did not answer in time")
    if isinstance(exc, aiohttp.ClientError | ConnectionError) or (
        isinstance(exc, aiodocker.DockerError) and exc.status == _NOT_CONNECTED
    ):
        if any(isinstance(cause, PermissionError) for cause in causes_of(exc)):
            return EnginePermissionError(
                f"{action}: permission denied on {where}; run as a user allowed to use its"
                " socket (for Docker, a member of the docker group)"
            )
        detail = exc.message if isinstance(exc, aiodocker.DockerError) else repr(exc)
        return EngineUnreachableError(f"{action}: cannot reach {where}: {detail}")
    if not isinstance(exc, aiodocker.DockerError):
        return DockerDriverError(f"{action}: {type(exc).__name__}: {exc}")
    message = str(exc.message)
    lowered = message.lower()
    if exc.status == _NOT_FOUND and "image" in lowered:
        return ImageNotFoundError(f"{action}: {message}")
    if exc.status == _NOT_FOUND:
        return ContainerNotFoundError(f"{action}: {message}")
    if "address already in use" in lowered or "port is already allocated" in lowered:
        return PortInUseError(f"{action}: {message}")
    # Docker answers a taken name with 409, Podman with 500: read the message too.
    if exc.status == _CONFLICT or "already in use" in lowered:
        return NameConflictError(f"{action}: {message}")
    if "permission denied" in lowered:
        return EnginePermissionError(f"{action}: {message}")
    return DockerAPIError(
        f"{action}: the engine answered {exc.status}: {message}", status=exc.status
    )

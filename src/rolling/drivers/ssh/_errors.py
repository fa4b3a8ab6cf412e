"""The SSH driver's errors."""

from __future__ import annotations

from typing import Final

from rolling import RollingError

__all__ = ["SSHCommandError", "SSHConnectError", "SSHError", "SSHHostKeyError"]

_ERROR_TAIL: Final = 500
"""Characters of stderr quoted in an :class:`SSHCommandError` message."""


class SSHError(RollingError, RuntimeError):
    """Root of the SSH driver's errors; raised as such when the driver is misused.

    .. versionadded:: 0.1.0
    """


class SSHConnectError(SSHError):
    """A host could not be reached, or refused to let the driver in.

    Attributes:
        host: The host's name (its instance id).
        address: The address and port tried, as ``address:port``.
        phase: The command the connection was for (``probe``, ``stop``, ...).
        reason: What went wrong.

    .. versionadded:: 0.1.0
    """

    def __init__(self, *, host: str, address: str, phase: str, reason: str) -> None:
        """Build the message from the parts."""
        self.host = host
        self.address = address
        self.phase = phase
        self.reason = reason
        super().__init__(f"{host} ({address}): cannot connect for {phase}: {reason}")


class SSHHostKeyError(SSHConnectError):
    """A host's key could not be verified: the connection was refused before any command ran.

    .. versionadded:: 0.1.0
    """


class SSHCommandError(SSHError):
    """A command failed: it exited non-zero, timed out or lost its connection.

    Also raised when ``probe`` prints no version, or not the one just deployed.

    Attributes:
        host: The host's name (its instance id).
        phase: ``probe``, ``stop``, ``deploy`` or ``start``.
        command: The command, with secrets redacted.
        exit_status: Its exit status, or None when it did not finish.
        stderr: The end of its standard error, with secrets redacted.
        reason: What went wrong, in a few words.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        *,
        host: str,
        phase: str,
        command: str,
        exit_status: int | None,
        stderr: str,
        reason: str,
    ) -> None:
        """Build the message from the parts; ``stderr``'s end is quoted in it."""
        self.host = host
        self.phase = phase
        self.command = command
        self.exit_status = exit_status
        self.stderr = stderr
        self.reason = reason
        message = f"{host}: {phase} {reason}"
        tail = stderr.strip()[-_ERROR_TAIL:]
        if tail:
            message += f"; stderr: {tail}"
        super().__init__(message)

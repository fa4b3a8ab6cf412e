"""What an SSH driver reports: an event per command, and counters."""

from __future__ import annotations

import attrs

from rolling.events import Event

__all__ = ["CommandFinished", "SSHStatistics"]


@attrs.frozen(kw_only=True)
class CommandFinished(Event):
    """One command an :class:`SSHDriver` ran on a host ended (or was cut short).

    ``at`` is when it ended; it started ``duration`` seconds earlier. Output is
    decoded as UTF-8 (undecodable bytes replaced), secrets are redacted, and
    each stream is cut to its last 4096 characters.

    Attributes:
        host: The host's name (its instance id).
        address: The address the command ran on.
        phase: ``probe``, ``stop``, ``deploy`` or ``start``.
        command: The command as sent, with secrets redacted.
        exit_status: Its exit status (``-1`` when a signal ended it), or None
            when it did not finish: it timed out or its connection was lost.
        exit_signal: The name of the signal that ended it, if one did.
        stdout: What it printed on standard output.
        stderr: What it printed on standard error.
        duration: Seconds from sending the command to its end.
        error: Why it did not finish; empty when it did.

    .. versionadded:: 0.1.0
    """

    host: str
    address: str
    phase: str
    command: str
    exit_status: int | None
    exit_signal: str | None = None
    stdout: str
    stderr: str
    duration: float
    error: str = ""

    @property
    def ok(self) -> bool:
        """Whether the command finished with exit status 0."""
        return self.exit_status == 0


@attrs.frozen(kw_only=True)
class SSHStatistics:
    """Counters of an :class:`SSHDriver`, since it was entered.

    Attributes:
        connections_opened: SSH connections opened, reconnections included.
        connections_open: SSH connections open now.
        commands_run: Commands sent to a host (finished or not).
        commands_running: Commands running now.

    .. versionadded:: 0.1.0
    """

    connections_opened: int
    connections_open: int
    commands_run: int
    commands_running: int

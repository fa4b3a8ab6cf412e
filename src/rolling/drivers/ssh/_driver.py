"""The SSH driver: connections, commands and their results."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Self

import anyio
import anyio.lowlevel
import anyio.to_thread
import asyncssh
import attrs

from rolling import ConfigError
from rolling.typing import Observer
from rolling.validate import check_int, check_seconds

from ._config import (
    CONTROL,
    SSHCommands,
    SSHHost,
    SSHInstance,
    check_client_keys,
    check_fields,
    check_host_keys,
    check_hosts,
    check_observers,
    check_version,
    compile_redactions,
    field_values,
    redacted,
    shown,
)
from ._connection import (
    ABORT_WAIT,
    close_connection,
    collected_text,
    load_client_keys,
    read_known_hosts,
    require_asyncio,
)
from ._errors import SSHCommandError, SSHConnectError, SSHError, SSHHostKeyError
from ._reports import CommandFinished, SSHStatistics
from ._template import render

__all__ = ["SSHDriver"]

logger = logging.getLogger("rolling.drivers.ssh")

_DEFAULT_KNOWN_HOSTS: Final = Path("~", ".ssh", "known_hosts")
"""Where host keys are looked up unless ``known_hosts`` says otherwise (``~`` is expanded)."""

_KEEPALIVE: Final = 15.0
"""Seconds between keepalives on an idle connection: a dead peer is noticed within ~4 of these."""

_NO_KEYS: Final[Sequence[asyncssh.SSHKey]] = ()


@attrs.define(eq=False)
class _Link:
    """The driver's side of one host: its trust settings and its connection, if open."""

    host: SSHHost
    pinned: asyncssh.SSHKey | None
    lock: anyio.Lock | None = None
    connection: asyncssh.SSHClientConnection | None = None


class SSHDriver:
    """Updates hosts in place over SSH, one shell command per phase.

    Use it as ``async with SSHDriver(...) as driver:``; leaving the block
    closes every connection. Connections are opened on first use, one per
    host, and reused by every command after.

    ``replace(instance, version)`` runs ``stop`` (if set), ``deploy`` and
    ``start`` (if set) in that order, stopping at the first that fails, then
    ``probe``, which must print ``version``. ``list_instances()`` runs
    ``probe`` on every host at once (within ``concurrency``).

    Host keys are always verified unless ``insecure_no_host_key_check`` is
    set: a host's key must be pinned in ``host_keys`` or listed in the
    ``known_hosts`` file, else the connection is refused before any command
    runs (:class:`SSHHostKeyError`). Keys are never learnt on first use.

    Args:
        hosts: The fleet, in inventory order; names must be unique.
        commands: What to run in each phase.
        known_hosts: An OpenSSH ``known_hosts`` file to verify host keys with
            (hashed names are fine; ``~`` is expanded). It is read when the
            driver is entered; a missing file holds no keys. None reads no
            file: then every host needs a key in ``host_keys``. None never
            turns verification off.
        host_keys: Host name to its public key, in OpenSSH form
            (``"ssh-ed25519 AAAA..."``, as in ``/etc/ssh/ssh_host_*.pub``).
            A pinned host is verified against that key only.
        insecure_no_host_key_check: Accept any host key. Anyone who can
            intercept the traffic can then impersonate a host, and read every
            command and secret sent to it. For throw-away test hosts only;
            the driver logs a warning when entered with it.
        client_keys: Private key files to log in with; None lets asyncssh use
            the SSH agent and the default ``~/.ssh/id_*`` keys.
        concurrency: Most commands running at once, over all hosts.
        connect_timeout: Seconds to connect and log in to a host.
        command_timeout: Seconds one command may run. A command that times
            out is reported failed and its connection dropped (the command
            itself may go on running on the host).
        redact: Secrets to hide in events and errors: a ``str`` is matched
            literally, an :class:`re.Pattern` as a regular expression; each
            match becomes ``***`` in commands, stdout and stderr.
        observers: Called with each :class:`CommandFinished` event. Pass the
            same callables to ``Rollout(observers=...)`` to see the commands
            and the rollout in one stream.

    Raises:
        ConfigError: An argument is invalid, a template uses a field some
            host lacks, or a pinned key cannot be read.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        hosts: Sequence[SSHHost],
        commands: SSHCommands,
        *,
        known_hosts: str | Path | None = _DEFAULT_KNOWN_HOSTS,
        host_keys: Mapping[str, str] | None = None,
        insecure_no_host_key_check: bool = False,
        client_keys: Sequence[str | Path] | None = None,
        concurrency: int = 10,
        connect_timeout: float = 10.0,
        command_timeout: float = 60.0,
        redact: Sequence[str | re.Pattern[str]] = (),
        observers: Sequence[Observer] = (),
    ) -> None:
        """Check the settings; nothing connects before the driver is entered."""
        self._hosts = check_hosts(hosts)
        if not isinstance(commands, SSHCommands):
            raise ConfigError(
                "SSHDriver.commands",
                f"expected SSHCommands, got {commands!r}",
                'pass SSHCommands(probe="cat VERSION", deploy="...")',
            )
        self._commands = commands
        check_fields(commands, self._hosts)
        if not isinstance(insecure_no_host_key_check, bool):
            raise ConfigError(
                "SSHDriver.insecure_no_host_key_check",
                f"expected a bool, got {insecure_no_host_key_check!r}",
                "pass True only for throw-away test hosts",
            )
        if known_hosts is not None and not isinstance(known_hosts, str | Path):
            raise ConfigError(
                "SSHDriver.known_hosts",
                f"expected a path or None, got {known_hosts!r}",
                'pass "~/.ssh/known_hosts" or None (then pin every key in host_keys)',
            )
        pinned = check_host_keys(host_keys, self._hosts, insecure=insecure_no_host_key_check)
        check_int("SSHDriver.concurrency", concurrency, minimum=1)
        check_seconds("SSHDriver.connect_timeout", connect_timeout, allow_zero=False)
        check_seconds("SSHDriver.command_timeout", command_timeout, allow_zero=False)
        check_client_keys(client_keys)
        check_observers(observers)
        self._known_hosts = None if known_hosts is None else Path(known_hosts)
        self._insecure = insecure_no_host_key_check
        self._client_key_paths = (
            None if client_keys is None else [str(Path(k).expanduser()) for k in client_keys]
        )
        self._concurrency = concurrency
        self._connect_timeout = float(connect_timeout)
        self._command_timeout = float(command_timeout)
        self._redactions = compile_redactions(redact)
        self._observers = tuple(observers)
        self._links = {host.name: _Link(host, pinned.get(host.name)) for host in self._hosts}
        self._state: Literal["new", "open", "closed"] = "new"
        self._trusted: asyncssh.SSHKnownHosts | None = None
        self._known_hosts_exist = False
        self._client_keys: Sequence[asyncssh.SSHKeyPair] | None = None
        self._limiter: anyio.CapacityLimiter | None = None
        self._opened = 0
        self._commands_run = 0
        self._running = 0

    # ---------------------------------------------------------------- context

    @property
    def hosts(self) -> tuple[SSHHost, ...]:
        """The fleet, in inventory order."""
        return self._hosts

    async def __aenter__(self) -> Self:
        """Check the event loop, read the known hosts and client keys; connect nothing yet.

        Raises:
            ConfigError: The running event loop is not asyncio.
            SSHError: The driver was entered before, or the known hosts file or
                a client key cannot be read.
        """
        require_asyncio()
        if self._state != "new":
            raise SSHError("an SSHDriver can be entered only once; build a new one")
        if self._insecure:
            logger.warning(
                "host key verification is OFF (insecure_no_host_key_check=True): anyone who can"
                " intercept the traffic to %s can impersonate it and read every command sent",
                ", ".join(host.name for host in self._hosts),
            )
        elif self._known_hosts is not None and any(
            link.pinned is None for link in self._links.values()
        ):
            self._trusted, self._known_hosts_exist = await anyio.to_thread.run_sync(
                read_known_hosts, self._known_hosts
            )
        if self._client_key_paths is not None:
            self._client_keys = await anyio.to_thread.run_sync(
                load_client_keys, self._client_key_paths
            )
        self._limiter = anyio.CapacityLimiter(self._concurrency)
        for link in self._links.values():
            link.lock = anyio.Lock()
        self._state = "open"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close every connection (see :meth:`aclose`)."""
        await self.aclose()

    async def aclose(self) -> None:
        """Close every connection, shielded from cancellation; calling it again does nothing.

        Each connection gets a few seconds to close cleanly, then is aborted.
        """
        if self._state == "closed":
            await anyio.lowlevel.checkpoint()
            return
        self._state = "closed"
        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as tg:
                for link in self._links.values():
                    if link.connection is not None:
                        tg.start_soon(close_connection, link.connection)
                        link.connection = None

    def statistics(self) -> SSHStatistics:
        """Counters of connections and commands since the driver was entered."""
        return SSHStatistics(
            connections_opened=self._opened,
            connections_open=sum(
                link.connection is not None and not link.connection.is_closed()
                for link in self._links.values()
            ),
            commands_run=self._commands_run,
            commands_running=self._running,
        )

    # ------------------------------------------------------------ the protocol

    async def list_instances(self) -> Sequence[SSHInstance]:
        """Run ``probe`` on every host at once and return the fleet, in host order.

        Every host is probed even when one fails.

        Raises:
            SSHError: A probe failed (:class:`SSHCommandError`) or a host could
                not be reached (:class:`SSHConnectError`); the error of the
                first such host is raised, with the others in its notes.
        """
        self._check_open("list_instances")
        found: dict[str, SSHInstance] = {}
        failed: dict[str, SSHError] = {}

        async def probe(link: _Link) -> None:
            try:
                found[link.host.name] = await self._probe(link)
            except SSHError as exc:
                failed[link.host.name] = exc

        async with anyio.create_task_group() as tg:
            for link in self._links.values():
                tg.start_soon(probe, link)
        errors = [failed[host.name] for host in self._hosts if host.name in failed]
        if errors:
            first = errors[0]
            for other in errors[1:]:
                first.add_note(f"also: {other}")
            raise first
        return [found[host.name] for host in self._hosts]

    async def replace(self, instance: SSHInstance, version: str) -> SSHInstance:
        """Run ``stop``, ``deploy`` and ``start`` on the host, then confirm with ``probe``.

        The first command that fails ends the attempt; what ran stays done.
        Cancelling the call stops waiting at once and drops nothing on the
        host: a command already sent runs to its end there.

        Raises:
            ConfigError: ``version`` is empty, has surrounding whitespace or
                control characters (a probe could never print it back).
            SSHError: The driver is not open, or the instance is not one of
                its hosts.
            SSHCommandError: A command failed, timed out or lost its
                connection, or ``probe`` printed another version.
            SSHConnectError: The host could not be reached.
        """
        self._check_open("replace")
        check_version(version)
        given: object = instance
        link = self._links.get(given.id) if isinstance(given, SSHInstance) else None
        if link is None:
            raise SSHError(f"{instance!r} is not one of this driver's hosts")
        commands = self._commands
        if commands.stop is not None:
            await self._run(link, "stop", commands.stop, instance.version)
        await self._run(link, "deploy", commands.deploy, version)
        if commands.start is not None:
            await self._run(link, "start", commands.start, version)
        updated = await self._probe(link)
        if updated.version != version:
            raise SSHCommandError(
                host=link.host.name,
                phase="probe",
                command=self._redact(render(commands.probe, field_values(link.host, ""))),
                exit_status=0,
                stderr="",
                reason=self._redact(
                    f"printed version {updated.version!r} after the update, not {version!r}"
                ),
            )
        return updated

    # ----------------------------------------------------------------- helpers

    def _check_open(self, action: str) -> None:
        if self._state == "new":
            raise SSHError(
                f"{action}() needs an open driver: use `async with SSHDriver(...) as driver:`"
            )
        if self._state == "closed":
            raise SSHError(f"cannot {action}(): the driver is closed")

    def _redact(self, text: str) -> str:
        return redacted(text, self._redactions)

    def _shown(self, text: str) -> str:
        """``text`` redacted, then cut to its last 4096 characters."""
        return shown(text, self._redactions)

    async def _probe(self, link: _Link) -> SSHInstance:
        stdout = await self._run(link, "probe", self._commands.probe, "")
        version = stdout.strip()
        host = link.host
        if not version or CONTROL.search(version):
            raise SSHCommandError(
                host=host.name,
                phase="probe",
                command=self._redact(render(self._commands.probe, field_values(host, ""))),
                exit_status=0,
                stderr="",
                reason=self._redact(f"printed {version!r}; it must print the version, on one line"),
            )
        return SSHInstance(
            id=host.name,
            version=version,
            host=host.address,
            port=host.app_port,
            labels=host.labels,
        )

    async def _connection(self, link: _Link, phase: str) -> asyncssh.SSHClientConnection:
        """The host's open connection, opened now if there is none (one opener at a time)."""
        assert link.lock is not None  # noqa: S101 - set when the driver is entered
        async with link.lock:
            connection = link.connection
            if connection is not None and not connection.is_closed():
                return connection
            if connection is not None:
                link.connection = None
                await close_connection(connection)
            connection = await self._connect(link, phase)
            self._opened += 1
            if self._state == "closed":
                # The driver closed while this connection was being made: it must not stay.
                await close_connection(connection)
                raise SSHError(f"the driver closed while connecting to {link.host.name}")
            link.connection = connection
            return connection

    async def _connect(self, link: _Link, phase: str) -> asyncssh.SSHClientConnection:
        host = link.host
        options: dict[str, Any] = {
            "username": host.username,
            "known_hosts": self._trust(link),
            "keepalive_interval": _KEEPALIVE,
        }
        if self._client_keys is not None:
            options["client_keys"] = self._client_keys
        where = f"{host.address}:{host.port}"

        def failure(kind: type[SSHConnectError], reason: str) -> SSHConnectError:
            return kind(host=host.name, address=where, phase=phase, reason=self._redact(reason))

        try:
            with anyio.fail_after(self._connect_timeout):
                return await asyncssh.connect(host.address, host.port, **options)
        except TimeoutError:
            raise failure(
                SSHConnectError, f"no answer within connect_timeout={self._connect_timeout:g}s"
            ) from None
        except asyncssh.HostKeyNotVerifiable as exc:
            raise failure(SSHHostKeyError, self._host_key_advice(link, exc.reason)) from exc
        except asyncssh.PermissionDenied as exc:
            raise failure(
                SSHConnectError,
                f"authentication as {host.username!r} failed ({exc.reason}); check client_keys",
            ) from exc
        except (OSError, asyncssh.Error) as exc:
            raise failure(SSHConnectError, f"{type(exc).__name__}: {exc}") from exc

    def _trust(self, link: _Link) -> object:
        """What asyncssh verifies the host's key against (None means nothing, on purpose)."""
        if self._insecure:
            return None
        if link.pinned is not None:
            return ([link.pinned], _NO_KEYS, _NO_KEYS)
        if self._trusted is None:
            return (_NO_KEYS, _NO_KEYS, _NO_KEYS)  # no file, no pinned key: nothing is trusted
        return self._trusted

    def _host_key_advice(self, link: _Link, reason: str) -> str:
        name = link.host.name
        if link.pinned is not None:
            where = f"the key pinned in host_keys[{name!r}]"
        elif self._known_hosts is None:
            where = "no key (known_hosts=None and no host_keys entry)"
        else:
            where = f"the keys in {self._known_hosts}"
            if not self._known_hosts_exist:
                where += " (no such file)"
        return (
            f"host key verification failed ({reason}); it was checked against {where}."
            f" Get the host's key out of band (its /etc/ssh/ssh_host_*.pub) and add it to"
            f" known_hosts, or pin it with host_keys={{{name!r}: 'ssh-ed25519 AAAA...'}}"
        )

    async def _drop(self, link: _Link, connection: asyncssh.SSHClientConnection) -> None:
        """Abort ``connection`` (a broken or stuck one) so that the next command reconnects."""
        if link.connection is connection:
            link.connection = None
        connection.abort()
        with anyio.CancelScope(shield=True), anyio.move_on_after(ABORT_WAIT):
            await connection.wait_closed()

    async def _run(self, link: _Link, phase: str, template: str, version: str) -> str:
        """Run one phase's command on the host; return its stdout, or raise SSHError."""
        host = link.host
        shown = self._redact(command := render(template, field_values(host, version)))
        assert self._limiter is not None  # noqa: S101 - set when the driver is entered
        async with self._limiter:
            connection = await self._connection(link, phase)
            started = anyio.current_time()
            self._commands_run += 1
            self._running += 1
            process: asyncssh.SSHClientProcess[str] | None = None
            completed: asyncssh.SSHCompletedProcess | None = None
            cause: BaseException | None = None
            try:
                with anyio.fail_after(self._command_timeout):
                    process = await connection.create_process(
                        command, stdin=asyncssh.DEVNULL, encoding="utf-8", errors="replace"
                    )
                    completed = await process.wait()
            except TimeoutError:
                reason = f"timed out after command_timeout={self._command_timeout:g}s"
            except (OSError, asyncssh.Error) as exc:
                reason, cause = f"lost its connection ({type(exc).__name__}: {exc})", exc
            except BaseException:
                # Cancelled from outside: stop waiting, close the channel so that nothing
                # lingers on the connection, and let the cancellation through.
                if process is not None:
                    process.close()
                raise
            else:
                reason = ""
                if completed.exit_status is None and completed.exit_signal is None:
                    reason = "ended without an exit status: its connection was lost"
            finally:
                self._running -= 1
            if completed is not None and not reason:
                return self._judge(link, phase, shown, started, completed)
            # Timed out or lost: the connection may be dead (a cut link looks like a hang).
            await self._drop(link, connection)
            stdout, stderr = ("", "") if process is None else process.collect_output()
            reason = self._redact(reason)
            self._finish(
                link,
                phase,
                shown,
                started,
                exit_status=None,
                stdout=collected_text(stdout),
                stderr=collected_text(stderr),
                error=reason,
            )
            raise SSHCommandError(
                host=host.name,
                phase=phase,
                command=shown,
                exit_status=None,
                stderr=self._shown(collected_text(stderr)),
                reason=reason,
            ) from cause

    def _judge(
        self,
        link: _Link,
        phase: str,
        shown: str,
        started: float,
        completed: asyncssh.SSHCompletedProcess,
    ) -> str:
        """Report a command that finished; return its stdout if it exited 0, else raise."""
        signal = None if completed.exit_signal is None else completed.exit_signal[0]
        stdout, stderr = collected_text(completed.stdout), collected_text(completed.stderr)
        self._finish(
            link,
            phase,
            shown,
            started,
            exit_status=completed.exit_status,
            exit_signal=signal,
            stdout=stdout,
            stderr=stderr,
        )
        if completed.exit_status == 0:
            return stdout
        raise SSHCommandError(
            host=link.host.name,
            phase=phase,
            command=shown,
            exit_status=completed.exit_status,
            stderr=self._shown(stderr),
            reason=(
                f"was killed by signal {signal}"
                if signal is not None
                else f"exited with status {completed.exit_status}"
            ),
        )

    def _finish(
        self,
        link: _Link,
        phase: str,
        command: str,
        started: float,
        *,
        exit_status: int | None,
        stdout: str,
        stderr: str,
        exit_signal: str | None = None,
        error: str = "",
    ) -> None:
        now = anyio.current_time()
        event = CommandFinished(
            at=now,
            wall=time.time(),
            host=link.host.name,
            address=link.host.address,
            phase=phase,
            command=command,
            exit_status=exit_status,
            exit_signal=exit_signal,
            stdout=self._shown(stdout),
            stderr=self._shown(stderr),
            duration=now - started,
            error=error,
        )
        for observer in self._observers:
            observer(event)

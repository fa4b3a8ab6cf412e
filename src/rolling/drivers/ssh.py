"""A driver for hosts reached over SSH, with one shell command per phase.

:class:`SSHDriver` is a :class:`~rolling.typing.Driver`: ``replace`` updates a
host in place by running the ``stop``, ``deploy`` and ``start`` commands on it,
then the ``probe`` command to confirm the version it now runs::

    hosts = [
        SSHHost(name="web-1", address="10.0.0.11", app_port=8000, labels={"zone": "a"}),
        SSHHost(name="web-2", address="10.0.0.12", app_port=8000, labels={"zone": "b"}),
    ]
    commands = SSHCommands(
        probe="cat /srv/app/VERSION",
        stop="systemctl stop app",
        deploy="/srv/app/fetch {version} && printf %s {version} > /srv/app/VERSION",
        start="systemctl start app",
    )
    events = rolling.LoggingObserver()
    async with SSHDriver(hosts, commands, observers=[events]) as driver:
        result = await rolling.Rollout(driver, "v2", readiness=..., observers=[events]).run()

Rules the driver keeps:

* every value substituted into a command (``{version}``, ``{id}``, ``{host}``,
  ``{port}`` and label keys) is quoted with ``shlex.quote``, and templates
  that put a field inside quotes, or ask for a field that does not exist, are
  refused when they are built: no version string or host field can inject
  shell;
* host keys are verified, against ``~/.ssh/known_hosts`` by default or keys
  pinned per host; turning verification off takes an argument named
  ``insecure_no_host_key_check``;
* one connection per host, opened on first use and reused by every command
  after; at most ``concurrency`` commands run at once; every connection
  attempt and every command has a time limit, and a command that times out or
  loses its connection drops that connection, so the next command reconnects;
* every command that ran reports a :class:`CommandFinished` event, with its
  exit status and output, secrets redacted.

asyncssh runs on asyncio only, so this driver does too: entering it from trio
raises :class:`~rolling.ConfigError`. It needs the ``ssh`` extra:
``pip install 'rolling[ssh]'``.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import asyncio
import logging
import re
import shlex
import string
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, Final, Literal, Self, cast

import anyio
import anyio.lowlevel
import anyio.to_thread
import asyncssh
import attrs

from rolling import ConfigError, RollingError
from rolling.events import Event
from rolling.validate import check_callable, check_int, check_seconds, validator

__all__ = [
    "CommandFinished",
    "SSHCommandError",
    "SSHCommands",
    "SSHConnectError",
    "SSHDriver",
    "SSHError",
    "SSHHost",
    "SSHHostKeyError",
    "SSHInstance",
    "SSHStatistics",
]

logger = logging.getLogger("rolling.drivers.ssh")

_DEFAULT_KNOWN_HOSTS: Final = Path("~", ".ssh", "known_hosts")
"""Where host keys are looked up unless ``known_hosts`` says otherwise (``~`` is expanded)."""

_OUTPUT_LIMIT: Final = 4096
"""Characters of each command's stdout and stderr kept in events and errors (the end is kept)."""

_ERROR_TAIL: Final = 500
"""Characters of stderr quoted in an :class:`SSHCommandError` message."""

_CLOSE_WAIT: Final = 5.0
"""Seconds a closing connection has to say goodbye before it is aborted."""

_ABORT_WAIT: Final = 1.0
"""Seconds to wait for an aborted connection to finish closing."""

_KEEPALIVE: Final = 15.0
"""Seconds between keepalives on an idle connection: a dead peer is noticed within ~4 of these."""

_REDACTED: Final = "***"

_BUILTIN_FIELDS: Final = frozenset({"version", "id", "host", "port"})
_PORT_RANGE: Final = range(1, 65536)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# --------------------------------------------------------------------------- errors


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


# --------------------------------------------------------------------- value objects


def _check_text(field: str, value: object, fix: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(field, f"expected a non-empty str, got {value!r}", fix)


def _check_port(field: str, value: object, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value not in _PORT_RANGE:
        raise ConfigError(
            field,
            f"expected a TCP port from 1 to 65535, got {value!r}",
            "pass an int such as 22" + (" or None" if allow_none else ""),
        )


def _no_labels() -> Mapping[str, str]:
    return MappingProxyType({})


def _frozen_labels(value: Mapping[str, str]) -> Mapping[str, str]:
    """Copy ``value`` into a read-only mapping of str to str, or raise ConfigError."""
    return MappingProxyType(_checked_labels(value))


def _checked_labels(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ConfigError(
            "labels", f"expected a mapping of str to str, got {value!r}", 'pass {"zone": "a"}'
        )
    items = cast("Mapping[object, object]", value)
    for key, item in items.items():
        if not isinstance(key, str) or not key or not isinstance(item, str):
            raise ConfigError(
                "labels",
                f"expected non-empty str keys and str values, got {key!r}: {item!r}",
                'pass {"zone": "a"}',
            )
    return {str(k): str(v) for k, v in items.items()}


@attrs.frozen(kw_only=True)
class SSHHost:
    """One host of an :class:`SSHDriver` fleet: where to reach it and what it serves.

    Attributes:
        name: The instance id, unique in the fleet (``"web-1"``).
        address: The IP address or DNS name to connect to. Host keys are
            looked up under it (as ``[address]:port`` when the port is not 22).
        port: The SSH port.
        username: The user to log in as.
        app_port: The port the application serves on, reported as
            :attr:`SSHInstance.port` for health checks and routers; None when
            it serves none.
        labels: Free-form facts about the host (zone, rack, role), available
            to key functions as ``instance.labels`` and to command templates
            as ``{key}``.

    .. versionadded:: 0.1.0
    """

    name: str = attrs.field(validator=validator(_check_text, fix='pass an id such as "web-1"'))
    address: str = attrs.field(
        validator=validator(_check_text, fix='pass an IP address such as "10.0.0.11"')
    )
    port: int = attrs.field(default=22, validator=validator(_check_port))
    username: str = attrs.field(
        default="root", validator=validator(_check_text, fix='pass a user name such as "deploy"')
    )
    app_port: int | None = attrs.field(
        default=None, validator=validator(_check_port, allow_none=True)
    )
    labels: Mapping[str, str] = attrs.field(
        factory=_no_labels, converter=_frozen_labels, hash=False
    )


@attrs.frozen(kw_only=True)
class SSHInstance:
    """One host of an :class:`SSHDriver` fleet, as it was when handed out.

    Attributes:
        id: The host's name; kept when the instance is replaced.
        version: The version its ``probe`` command printed.
        host: The address the driver connects to (and the application serves on).
        port: The port the application serves on (:attr:`SSHHost.app_port`).
        labels: The host's labels.

    .. versionadded:: 0.1.0
    """

    id: str
    version: str
    host: str
    port: int | None
    labels: Mapping[str, str] = attrs.field(
        factory=_no_labels, converter=_frozen_labels, hash=False
    )


_FIELD_FIX = "use {version}, {id}, {host}, {port} or a label key, as a bare shell word"

_HEREDOC = re.compile(r"(?<!<)<<(?!<)")
"""A here-document operator (``<<`` or ``<<-``, not the here-string ``<<<``)."""


_CLOSERS: Final = {"'": "'", '"': '"', "$'": "'", "`": "`"}
"""The character that ends each quoting context."""


@attrs.define
class _ShellState:
    """Enough of a POSIX shell lexer's state to tell whether a field would stand as a bare word.

    A field's value is quoted with ``shlex.quote``, which makes it one word
    in unquoted context only: inside double quotes or backticks its quotes are
    literal characters or re-parsed; after ``$`` it becomes ANSI-C quoting;
    after a backslash its opening quote is escaped; in a here-document body it
    is expanded unquoted. Templates that would do any of that are refused.
    """

    contexts: list[str] = attrs.Factory(list[str])
    """Open quoting contexts, innermost last: ``'``, ``"``, ``$'`` or a backtick."""
    escaped: bool = False
    """The text so far ends in an unescaped backslash."""
    dollar: bool = False
    """The text so far ends in an unescaped ``$``."""
    seen: str = ""
    """The literal text so far."""

    def feed(self, text: str) -> None:
        """Advance over literal template text."""
        self.seen += text
        for char in text:
            self._step(char)

    def _step(self, char: str) -> None:
        if self.escaped:
            self.escaped = self.dollar = False
            return
        dollar, self.dollar = self.dollar, False
        context = self.contexts[-1] if self.contexts else None
        if context is not None and char == _CLOSERS[context]:
            self.contexts.pop()
        elif context == "'":
            return  # nothing is special inside single quotes
        elif char == "\\":
            self.escaped = True
        elif context is None and char in {"'", '"', "`"}:
            self.contexts.append("$'" if dollar and char == "'" else char)
        elif context == '"' and char == "`":
            self.contexts.append(char)
        elif context is None and char == "$":
            self.dollar = True

    def problem(self) -> str | None:
        """Why a field cannot stand here, or None when it can."""
        if self.contexts:
            kind = {"'": "single quotes", '"': "double quotes", "$'": "$'...' quotes"}
            return "is inside " + kind.get(self.contexts[-1], "backticks")
        if self.escaped:
            return "follows a backslash, which would escape its opening quote"
        if self.dollar:
            return "follows a $, which would turn its quotes into $'...' quoting"
        if _HEREDOC.search(self.seen):
            return "follows a here-document operator (<<), whose body is expanded unquoted"
        return None


def _template_fields(field: str, template: object) -> frozenset[str]:
    """Check one command template and return the names of the fields it uses.

    A field must be a bare name (no index, attribute, conversion or format spec:
    those would act on the quoted value and could break its quoting), and must
    stand as a bare shell word (see :class:`_ShellState`).
    """
    if not isinstance(template, str) or not template.strip():
        raise ConfigError(field, f"expected a non-empty command, got {template!r}", _FIELD_FIX)
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(
            field,
            f"{template!r} is not a valid template ({exc})",
            "write a literal brace as {{ or }}",
        ) from None
    names: set[str] = set()
    state = _ShellState()
    for literal, name, spec, conversion in parsed:
        state.feed(literal)
        if name is None:
            continue
        if not name.isidentifier():
            raise ConfigError(field, f"field {{{name}}} in {template!r} is not a name", _FIELD_FIX)
        if spec or conversion:
            raise ConfigError(
                field,
                f"field {{{name}}} in {template!r} has a conversion or format spec",
                "write the field bare, such as {version}: the value is substituted as it is",
            )
        problem = state.problem()
        if problem is not None:
            raise ConfigError(
                field,
                f"field {{{name}}} in {template!r} {problem}",
                "write the field as a bare word (its value is quoted for the shell already),"
                " such as printf %s {version} > VERSION",
            )
        state.feed("x")  # the quoted value: one plain word, whatever it holds
        names.add(name)
    if state.contexts:
        raise ConfigError(
            field,
            f"{template!r} has an unterminated {state.contexts[-1]} quote",
            "close every quote in the command",
        )
    return frozenset(names)


def _check_template(
    field: str, value: object, *, probe: bool = False, optional: bool = False
) -> None:
    if value is None and optional:
        return
    if "version" in _template_fields(field, value) and probe:
        raise ConfigError(
            field,
            f"{value!r} uses {{version}}, which the probe is there to find out",
            'print the version the host runs, such as "cat /srv/app/VERSION"',
        )


@attrs.frozen(kw_only=True)
class SSHCommands:
    """The shell commands an :class:`SSHDriver` runs on a host, one per phase.

    Each is a template: ``{version}``, ``{id}`` (the host's name), ``{host}``
    (its address), ``{port}`` (its ``app_port``) and ``{<label>}`` (any label
    key every host has) are replaced by their values, each quoted with
    ``shlex.quote``, so a value always stays one shell word whatever it
    holds. Write fields bare, outside quotes (``printf %s {version}``, never
    ``"{version}"``), and do not hand them to ``eval``, ``sh -c`` or a here
    document, which would parse the value as code again. ``{{`` and ``}}`` are
    literal braces.

    Attributes:
        probe: Prints the version the host runs, on stdout (surrounding
            whitespace is ignored), and exits 0; say
            ``cat /srv/app/VERSION``. It cannot use ``{version}``.
        deploy: Puts ``{version}`` on the host, say
            ``/srv/app/install {version}``.
        stop: Stops the application before ``deploy``, or None. Its
            ``{version}`` is the version being stopped.
        start: Starts the application after ``deploy``, or None. Its
            ``{version}`` is the version just deployed.

    Raises:
        ConfigError: A template is empty or malformed, uses a field in a way
            that could break its quoting, or ``probe`` uses ``{version}``.

    .. versionadded:: 0.1.0
    """

    probe: str = attrs.field(validator=validator(_check_template, probe=True))
    deploy: str = attrs.field(validator=validator(_check_template))
    stop: str | None = attrs.field(
        default=None, validator=validator(_check_template, optional=True)
    )
    start: str | None = attrs.field(
        default=None, validator=validator(_check_template, optional=True)
    )

    def templates(self) -> dict[str, str]:
        """The phases that have a command, in the order ``replace`` runs them, probe first."""
        phases = {
            "probe": self.probe,
            "stop": self.stop,
            "deploy": self.deploy,
            "start": self.start,
        }
        return {phase: template for phase, template in phases.items() if template is not None}


def _render(template: str, values: Mapping[str, str]) -> str:
    """Substitute ``values`` into ``template``, each quoted with ``shlex.quote``.

    Raises:
        KeyError: The template uses a field ``values`` lacks.
    """
    parts: list[str] = []
    for literal, name, _spec, _conversion in string.Formatter().parse(template):
        parts.append(literal)
        if name is not None:
            parts.append(shlex.quote(values[name]))
    return "".join(parts)


# --------------------------------------------------------------------------- events


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


# --------------------------------------------------------------------------- driver


@attrs.define(eq=False)
class _Link:
    """The driver's side of one host: its trust settings and its connection, if open."""

    host: SSHHost
    pinned: asyncssh.SSHKey | None
    lock: anyio.Lock | None = None
    connection: asyncssh.SSHClientConnection | None = None


def _compile_redactions(patterns: object) -> tuple[re.Pattern[str], ...]:
    field = "SSHDriver.redact"
    fix = 'pass secrets as str (matched literally) or re.compile(r"token=\\S+")'
    if isinstance(patterns, str | bytes) or not isinstance(patterns, Iterable):
        raise ConfigError(field, f"expected a sequence of str or patterns, got {patterns!r}", fix)
    compiled: list[re.Pattern[str]] = []
    for item in patterns:  # pyright: ignore[reportUnknownVariableType] - checked item by item
        if isinstance(item, str) and item:
            compiled.append(re.compile(re.escape(item)))
        elif isinstance(item, re.Pattern) and isinstance(
            item.pattern,  # pyright: ignore[reportUnknownMemberType] - a pattern of str or bytes
            str,
        ):
            pattern = cast("re.Pattern[str]", item)
            if pattern.search("") is not None:
                raise ConfigError(field, f"{pattern.pattern!r} matches the empty string", fix)
            compiled.append(pattern)
        else:
            raise ConfigError(
                field, f"expected a non-empty str or a str pattern, got {item!r}", fix
            )
    return tuple(compiled)


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
        observers: Sequence[Callable[[Event], object]] = (),
    ) -> None:
        """Check the settings; nothing connects before the driver is entered."""
        self._hosts = self._check_hosts(hosts)
        if not isinstance(commands, SSHCommands):
            raise ConfigError(
                "SSHDriver.commands",
                f"expected SSHCommands, got {commands!r}",
                'pass SSHCommands(probe="cat VERSION", deploy="...")',
            )
        self._commands = commands
        self._check_fields(commands, self._hosts)
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
        pinned = self._check_host_keys(host_keys, self._hosts, insecure=insecure_no_host_key_check)
        check_int("SSHDriver.concurrency", concurrency, minimum=1)
        check_seconds("SSHDriver.connect_timeout", connect_timeout, allow_zero=False)
        check_seconds("SSHDriver.command_timeout", command_timeout, allow_zero=False)
        _check_client_keys(client_keys)
        _check_observers(observers)
        self._known_hosts = None if known_hosts is None else Path(known_hosts)
        self._insecure = insecure_no_host_key_check
        self._client_key_paths = (
            None if client_keys is None else [str(Path(k).expanduser()) for k in client_keys]
        )
        self._concurrency = concurrency
        self._connect_timeout = float(connect_timeout)
        self._command_timeout = float(command_timeout)
        self._redactions = _compile_redactions(redact)
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

    @staticmethod
    def _check_hosts(hosts: object) -> tuple[SSHHost, ...]:
        if isinstance(hosts, str | bytes) or not isinstance(hosts, Sequence):
            raise ConfigError(
                "SSHDriver.hosts", f"expected a sequence of SSHHost, got {hosts!r}", _HOSTS_FIX
            )
        checked: list[SSHHost] = []
        for host in hosts:  # pyright: ignore[reportUnknownVariableType] - checked item by item
            if not isinstance(host, SSHHost):
                raise ConfigError("SSHDriver.hosts", f"expected SSHHost, got {host!r}", _HOSTS_FIX)
            if any(known.name == host.name for known in checked):
                raise ConfigError(
                    "SSHDriver.hosts",
                    f"two hosts are named {host.name!r}",
                    "give every host a unique name: it is the instance id",
                )
            checked.append(host)
        if not checked:
            raise ConfigError("SSHDriver.hosts", "no hosts", _HOSTS_FIX)
        return tuple(checked)

    @staticmethod
    def _check_fields(commands: SSHCommands, hosts: Sequence[SSHHost]) -> None:
        for phase, template in commands.templates().items():
            field = f"SSHCommands.{phase}"
            for name in sorted(_template_fields(field, template) - _BUILTIN_FIELDS):
                lacking = [host.name for host in hosts if name not in host.labels]
                if lacking:
                    raise ConfigError(
                        field,
                        f"unknown field {{{name}}} in {template!r}: host {lacking[0]!r}"
                        f" has no label {name!r}",
                        f"{_FIELD_FIX}; give every host that label",
                    )
            if "port" in _template_fields(field, template):
                portless = [host.name for host in hosts if host.app_port is None]
                if portless:
                    raise ConfigError(
                        field,
                        f"{template!r} uses {{port}}, and host {portless[0]!r} has no app_port",
                        "set SSHHost.app_port on every host",
                    )

    @staticmethod
    def _check_host_keys(
        host_keys: object, hosts: Sequence[SSHHost], *, insecure: bool
    ) -> dict[str, asyncssh.SSHKey]:
        field = "SSHDriver.host_keys"
        if host_keys is None:
            return {}
        if insecure:
            raise ConfigError(
                field,
                "host keys are pinned and insecure_no_host_key_check is set too",
                "pin the keys and leave insecure_no_host_key_check False",
            )
        if not isinstance(host_keys, Mapping):
            raise ConfigError(
                field,
                f"expected a mapping of host name to public key, got {host_keys!r}",
                'pass {"web-1": "ssh-ed25519 AAAA..."}',
            )
        names = {host.name for host in hosts}
        pinned: dict[str, asyncssh.SSHKey] = {}
        for name, key in host_keys.items():  # pyright: ignore[reportUnknownVariableType] - checked just below
            if name not in names:
                raise ConfigError(
                    field, f"{name!r} is not the name of a host", "key host_keys by SSHHost.name"
                )
            if not isinstance(key, str):
                raise ConfigError(
                    field, f"the key of {name!r} is {key!r}, not a str", "pass the .pub line"
                )
            try:
                pinned[name] = asyncssh.import_public_key(key)
            except (asyncssh.KeyImportError, ValueError) as exc:
                raise ConfigError(
                    field,
                    f"cannot read the key of {name!r} ({exc})",
                    'pass an OpenSSH public key line, such as "ssh-ed25519 AAAA..."',
                ) from None
        return pinned

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
        _require_asyncio()
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
                _read_known_hosts, self._known_hosts
            )
        if self._client_key_paths is not None:
            self._client_keys = await anyio.to_thread.run_sync(
                _load_client_keys, self._client_key_paths
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
                        tg.start_soon(_close, link.connection)
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
        _check_version(version)
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
                command=self._redact(_render(commands.probe, self._values(link.host, ""))),
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

    @staticmethod
    def _values(host: SSHHost, version: str) -> dict[str, str]:
        values = dict(host.labels)
        values.update(
            version=version,
            id=host.name,
            host=host.address,
            port="" if host.app_port is None else str(host.app_port),
        )
        return values

    def _redact(self, text: str) -> str:
        for pattern in self._redactions:
            text = pattern.sub(_REDACTED, text)
        return text

    def _shown(self, text: str) -> str:
        """``text`` redacted, then cut to its last 4096 characters."""
        text = self._redact(text)
        if len(text) > _OUTPUT_LIMIT:
            cut = len(text) - _OUTPUT_LIMIT
            text = f"[... {cut} characters cut]\n" + text[cut:]
        return text

    async def _probe(self, link: _Link) -> SSHInstance:
        stdout = await self._run(link, "probe", self._commands.probe, "")
        version = stdout.strip()
        host = link.host
        if not version or _CONTROL.search(version):
            raise SSHCommandError(
                host=host.name,
                phase="probe",
                command=self._redact(_render(self._commands.probe, self._values(host, ""))),
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
                await _close(connection)
            connection = await self._connect(link, phase)
            self._opened += 1
            if self._state == "closed":
                # The driver closed while this connection was being made: it must not stay.
                await _close(connection)
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
        with anyio.CancelScope(shield=True), anyio.move_on_after(_ABORT_WAIT):
            await connection.wait_closed()

    async def _run(self, link: _Link, phase: str, template: str, version: str) -> str:
        """Run one phase's command on the host; return its stdout, or raise SSHError."""
        host = link.host
        shown = self._redact(command := _render(template, self._values(host, version)))
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
                stdout=_text(stdout),
                stderr=_text(stderr),
                error=reason,
            )
            raise SSHCommandError(
                host=host.name,
                phase=phase,
                command=shown,
                exit_status=None,
                stderr=self._shown(_text(stderr)),
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
        stdout, stderr = _text(completed.stdout), _text(completed.stderr)
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


_NO_KEYS: Final[Sequence[asyncssh.SSHKey]] = ()

_HOSTS_FIX = 'pass [SSHHost(name="web-1", address="10.0.0.11"), ...]'


def _check_client_keys(value: object) -> None:
    if value is None:
        return
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        ok = False
    else:
        items = cast("Sequence[object]", value)
        ok = all(isinstance(item, str | Path) for item in items)
    if not ok:
        raise ConfigError(
            "SSHDriver.client_keys",
            f"expected a sequence of paths, got {value!r}",
            'pass ["~/.ssh/id_ed25519"] or None',
        )


def _check_observers(value: object) -> None:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ConfigError(
            "SSHDriver.observers",
            f"expected a sequence of callables, got {value!r}",
            "pass [rolling.LoggingObserver()]",
        )
    for observer in cast("Iterable[object]", value):
        check_callable("SSHDriver.observers", observer)


def _check_version(version: object) -> None:
    field = "SSHDriver.replace.version"
    if not isinstance(version, str) or not version or version != version.strip():
        raise ConfigError(
            field,
            f"expected a non-empty str without surrounding whitespace, got {version!r}",
            'pass "v2", say',
        )
    if _CONTROL.search(version):
        raise ConfigError(
            field,
            f"{version!r} has control characters",
            "pass a version that a probe can print back on one line",
        )


def _text(value: object) -> str:
    """Output asyncssh collected: a str with ``encoding`` set, or None when there was none."""
    return value if isinstance(value, str) else ""


def _require_asyncio() -> None:
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


def _read_known_hosts(path: Path) -> tuple[asyncssh.SSHKnownHosts, bool]:
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


def _load_client_keys(paths: Sequence[str]) -> Sequence[asyncssh.SSHKeyPair]:
    try:
        return asyncssh.load_keypairs(list(paths))
    except (OSError, ValueError, asyncssh.Error) as exc:
        raise SSHError(f"cannot load client_keys {paths}: {exc}") from exc


async def _close(connection: asyncssh.SSHClientConnection) -> None:
    """Close ``connection`` cleanly within :data:`_CLOSE_WAIT` seconds, else abort it."""
    connection.close()
    with anyio.CancelScope(shield=True):
        with anyio.move_on_after(_CLOSE_WAIT):
            await connection.wait_closed()
            return
        connection.abort()
        with anyio.move_on_after(_ABORT_WAIT):
            await connection.wait_closed()

"""What an SSH driver is given: hosts, command templates and the checks of its arguments.

Everything here is checked when it is built and raises :class:`~rolling.ConfigError`
naming the field; nothing connects.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Final, cast

import asyncssh
import attrs

from rolling import ConfigError
from rolling.validate import check_callable, validator

from ._template import (
    BUILTIN_FIELDS,
    CONTROL,
    FIELD_FIX,
    check_template,
    check_value,
    template_fields,
)

__all__ = [
    "CONTROL",
    "SSHCommands",
    "SSHHost",
    "SSHInstance",
    "check_client_keys",
    "check_fields",
    "check_host_keys",
    "check_hosts",
    "check_observers",
    "check_version",
    "compile_redactions",
    "field_values",
    "redacted",
    "shown",
]

_PORT_RANGE: Final = range(1, 65536)

_OUTPUT_LIMIT: Final = 4096
"""Characters of each command's stdout and stderr kept in events and errors (the end is kept)."""

_REDACTED: Final = "***"

_HOSTS_FIX: Final = 'pass [SSHHost(name="web-1", address="10.0.0.11"), ...]'


def _check_text(field: str, value: object, fix: str, *, substituted: bool = False) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(field, f"expected a non-empty str, got {value!r}", fix)
    if substituted:  # a command template's field: see _template
        check_value(field, value, fix)


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


def _frozen_labels(value: object) -> Mapping[str, str]:
    """A read-only copy of a mapping (which the validator then checks); anything else as it is."""
    if isinstance(value, Mapping):
        return MappingProxyType(dict(cast("Mapping[str, str]", value)))
    return cast("Mapping[str, str]", value)  # for _check_labels to refuse, naming the field


def _check_labels(field: str, value: object) -> None:
    fix = 'pass {"zone": "a"}'
    if not isinstance(value, Mapping):
        raise ConfigError(field, f"expected a mapping of str to str, got {value!r}", fix)
    items = cast("Mapping[object, object]", value)
    for key, item in items.items():
        if not isinstance(key, str) or not key or not isinstance(item, str):
            raise ConfigError(
                field, f"expected non-empty str keys and str values, got {key!r}: {item!r}", fix
            )
        if CONTROL.search(item):
            raise ConfigError(
                field,
                f"the value of label {key!r}, {item!r}, has control characters (a newline, say),"
                " which no value put into a command may hold",
                'pass label values on one line, such as {"zone": "a"}',
            )


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

    ``name``, ``address`` and the label values go into commands, so none may
    hold a control character (a newline, say): :class:`~rolling.ConfigError`.

    .. versionadded:: 0.1.0
    """

    name: str = attrs.field(
        validator=validator(_check_text, fix='pass an id such as "web-1"', substituted=True)
    )
    address: str = attrs.field(
        validator=validator(
            _check_text, fix='pass an IP address such as "10.0.0.11"', substituted=True
        )
    )
    port: int = attrs.field(default=22, validator=validator(_check_port))
    username: str = attrs.field(
        default="root", validator=validator(_check_text, fix='pass a user name such as "deploy"')
    )
    app_port: int | None = attrs.field(
        default=None, validator=validator(_check_port, allow_none=True)
    )
    labels: Mapping[str, str] = attrs.field(
        factory=_no_labels,
        converter=_frozen_labels,
        validator=validator(_check_labels),
        hash=False,
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
        factory=_no_labels,
        converter=_frozen_labels,
        validator=validator(_check_labels),
        hash=False,
    )


@attrs.frozen(kw_only=True)
class SSHCommands:
    """The shell commands an :class:`SSHDriver` runs on a host, one per phase.

    Each is a template: ``{version}``, ``{id}`` (the host's name), ``{host}``
    (its address), ``{port}`` (its ``app_port``) and ``{<label>}`` (any label
    key every host has) are replaced by their values, each quoted with
    ``shlex.quote``, so a value always stays one shell word whatever it
    holds. Write fields bare, outside quotes (``printf %s {version}``, never
    ``"{version}"``), outside comments, ``$(...)`` and arithmetic, and do not
    hand them to ``eval``, ``let``, ``[[ ... ]]``, ``declare`` and the other
    builtins that evaluate their arguments, nor to ``sh -c`` or a here
    document, which would parse the value as code again. The checks are
    listed in the SSH guide (docs/ssh.md, "Security: where a field may
    stand"). ``{{`` and ``}}`` are literal braces.

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
        ConfigError: A template is empty or malformed, uses a field where
            the check is not sure the shell reads it as one plain word, or
            ``probe`` uses ``{version}``.

    .. versionadded:: 0.1.0
    """

    probe: str = attrs.field(validator=validator(check_template, probe=True))
    deploy: str = attrs.field(validator=validator(check_template))
    stop: str | None = attrs.field(default=None, validator=validator(check_template, optional=True))
    start: str | None = attrs.field(
        default=None, validator=validator(check_template, optional=True)
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


def check_hosts(hosts: object) -> tuple[SSHHost, ...]:
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


def check_fields(commands: SSHCommands, hosts: Sequence[SSHHost]) -> None:
    for phase, template in commands.templates().items():
        field = f"SSHCommands.{phase}"
        for name in sorted(template_fields(field, template) - BUILTIN_FIELDS):
            lacking = [host.name for host in hosts if name not in host.labels]
            if lacking:
                raise ConfigError(
                    field,
                    f"unknown field {{{name}}} in {template!r}: host {lacking[0]!r}"
                    f" has no label {name!r}",
                    f"{FIELD_FIX}; give every host that label",
                )
        if "port" in template_fields(field, template):
            portless = [host.name for host in hosts if host.app_port is None]
            if portless:
                raise ConfigError(
                    field,
                    f"{template!r} uses {{port}}, and host {portless[0]!r} has no app_port",
                    "set SSHHost.app_port on every host",
                )


def check_host_keys(
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


def field_values(host: SSHHost, version: str) -> dict[str, str]:
    values = dict(host.labels)
    values.update(
        version=version,
        id=host.name,
        host=host.address,
        port="" if host.app_port is None else str(host.app_port),
    )
    return values


def compile_redactions(patterns: object) -> tuple[re.Pattern[str], ...]:
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


def redacted(text: str, patterns: Sequence[re.Pattern[str]]) -> str:
    """``text`` with every match of ``patterns`` replaced by ``***``."""
    for pattern in patterns:
        text = pattern.sub(_REDACTED, text)
    return text


def shown(text: str, patterns: Sequence[re.Pattern[str]]) -> str:
    """``text`` redacted, then cut to its last 4096 characters."""
    text = redacted(text, patterns)
    if len(text) > _OUTPUT_LIMIT:
        cut = len(text) - _OUTPUT_LIMIT
        text = f"[... {cut} characters cut]\n" + text[cut:]
    return text


def check_client_keys(value: object) -> None:
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


def check_observers(value: object) -> None:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ConfigError(
            "SSHDriver.observers",
            f"expected a sequence of callables, got {value!r}",
            "pass [rolling.LoggingObserver()]",
        )
    for observer in cast("Iterable[object]", value):
        check_callable("SSHDriver.observers", observer)


def check_version(version: object) -> None:
    field = "SSHDriver.replace.version"
    if not isinstance(version, str) or not version or version != version.strip():
        raise ConfigError(
            field,
            f"expected a non-empty str without surrounding whitespace, got {version!r}",
            'pass "v2", say',
        )
    if CONTROL.search(version):
        raise ConfigError(
            field,
            f"{version!r} has control characters",
            "pass a version that a probe can print back on one line",
        )

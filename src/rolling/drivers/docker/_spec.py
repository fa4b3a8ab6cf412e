"""What a new container copies from the one it replaces: pure functions over inspect answers.

Rules (the guide, docs/containers.md, lists them for users):

* the new container gets the *settings the user gave* the old one, not what
  its image supplied: an environment variable, label, command, entry point,
  working directory, user, stop signal or HEALTHCHECK whose value equals the
  old image's default is left out, so that the new image's default applies;
  what an engine reports when nothing was set counts as unset (Podman reports
  a working directory of ``/`` and a stop signal of ``15``, SIGTERM, for a
  container whose image sets neither), signals compare by number, and a
  HEALTHCHECK compares with the engine's defaults filled in;
* Podman's Docker-compatible image inspect has no ``Config.Healthcheck``: the
  image's HEALTHCHECK is then read from the top-level ``Healthcheck`` of its
  own (libpod) image inspect, which the driver merges in, or from
  ``ContainerConfig``; when none of them says, a container's HEALTHCHECK is
  taken for the image's and not copied;
* from the host configuration, only the keys in :data:`HOST_KEYS` are copied
  (ports, volumes, restart policy, resources, network, init, ...); the rest
  are engine-specific read-backs that another engine, or even the same one,
  may refuse on create;
* published ports keep their host port, so an instance keeps its address
  across an in-place replace;
* the driver's labels (version, rollout) and the user's overrides come last
  and win.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from typing import Any, Final

__all__ = [
    "HOST_KEYS",
    "IMAGE_DEFAULTED",
    "Body",
    "address",
    "merge",
    "new_body",
    "published",
    "section",
    "with_ports",
]

Body = dict[str, Any]
"""A container create body, as the Engine API takes it."""

IMAGE_DEFAULTED: Final = (
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "User",
    "StopSignal",
    "Healthcheck",
)
"""``Config`` keys copied only when they differ from the old image's default."""

COPIED: Final = ("ExposedPorts", "Tty", "OpenStdin", "StopTimeout", "Hostname", "Domainname")
"""``Config`` keys copied as they are (when set)."""

HOST_KEYS: Final = (
    "Binds",
    "Mounts",
    "PortBindings",
    "PublishAllPorts",
    "RestartPolicy",
    "NetworkMode",
    "Init",
    "Memory",
    "MemoryReservation",
    "NanoCpus",
    "CpuShares",
    "CpuQuota",
    "CpuPeriod",
    "CapAdd",
    "CapDrop",
    "Privileged",
    "ReadonlyRootfs",
    "Tmpfs",
    "Dns",
    "DnsSearch",
    "ExtraHosts",
    "LogConfig",
    "Sysctls",
    "ShmSize",
)
"""``HostConfig`` keys a new container copies from the one it replaces."""

_UNSET: Final[tuple[object, ...]] = (None, "", [], {})
"""What an inspect answer has for a setting nobody set."""

_HEALTHCHECK_DEFAULTS: Final = {
    "Interval": 30_000_000_000,
    "Timeout": 30_000_000_000,
    "Retries": 3,
    "StartPeriod": 0,
    "StartInterval": 0,
}
"""What Docker and Podman use for a HEALTHCHECK field left out or zero (times in nanoseconds)."""

_ENGINE_ENV: Final = ("HOSTNAME", "container")
"""Variables the engine sets in every container itself (Podman adds ``container=podman``)."""


def _env_map(entries: object) -> dict[str, str]:
    result: dict[str, str] = {}
    if isinstance(entries, list):
        for entry in entries:  # pyright: ignore[reportUnknownVariableType] - JSON
            if isinstance(entry, str):
                name, _, value = entry.partition("=")
                result[name] = value
    return result


def _dict(value: object) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}  # pyright: ignore[reportUnknownArgumentType] - JSON


def _signal_number(value: object) -> int | str:
    """A stop signal as a number (``15``, ``"15"``, ``"SIGTERM"``, ``"term"`` are all 15).

    An unset one is SIGTERM, the engines' default; a name this platform does not
    know is returned upper-cased, to compare as text.
    """
    if value in _UNSET:
        return int(signal.SIGTERM)
    text = str(value).strip().upper()
    if text.isdigit():
        return int(text)
    name = text if text.startswith("SIG") else "SIG" + text
    try:
        return int(signal.Signals[name])
    except KeyError:
        return name


def _signal_name(value: object) -> object:
    """A stop signal to create a container with: a number reported back becomes its name."""
    number = _signal_number(value)
    if isinstance(number, int):
        try:
            return signal.Signals(number).name
        except ValueError:
            return str(number)
    return value


def _workdir(value: object) -> str:
    """A working directory as compared: unset, ``""`` and ``"/"`` are all the root."""
    return str(value or "").rstrip("/") or "/"


def _healthcheck(value: object) -> dict[str, Any] | None:
    """A HEALTHCHECK as compared: None when unset, else with the engine's defaults filled in."""
    check = _dict(value)
    if not check:
        return None
    return {
        **check,
        **{key: check.get(key) or default for key, default in _HEALTHCHECK_DEFAULTS.items()},
    }


_UNKNOWN: Final = object()
"""An image HEALTHCHECK the inspect answer does not say."""


def _image_healthcheck(image: Mapping[str, Any], *, podman: bool) -> object:
    """The old image's HEALTHCHECK: its value, None when it has none, or :data:`_UNKNOWN`.

    Docker's image inspect has ``Config.Healthcheck`` exactly when the image has
    one. Podman's Docker-compatible answer never has it; Podman's own (libpod)
    image inspect has a top-level ``Healthcheck``, which the driver merges in
    (with a None value when the image has none). An older build may leave it
    under ``ContainerConfig``.
    """
    config = _dict(image.get("Config"))
    if config.get("Healthcheck") not in _UNSET:
        return config["Healthcheck"]
    if "Healthcheck" in image:
        return image["Healthcheck"]
    built = _dict(image.get("ContainerConfig")).get("Healthcheck")
    if built not in _UNSET:
        return built
    return _UNKNOWN if podman else None


def _differs(key: str, value: object, default: object) -> bool:
    """Whether ``value``, a container's ``Config[key]``, differs from its image's default."""
    if key == "WorkingDir":
        return _workdir(value) != _workdir(default)
    if key == "StopSignal":
        return _signal_number(value) != _signal_number(default)
    if key == "Healthcheck":
        return _healthcheck(value) != _healthcheck(default)
    return value not in _UNSET and value != default


def section(info: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    """``info[key1][key2]...`` of an inspect answer, or an empty dict where one is missing."""
    current: dict[str, Any] = dict(info)
    for key in keys:
        current = _dict(current.get(key))
    return current


def new_body(
    old: Mapping[str, Any],
    old_image: Mapping[str, Any],
    *,
    image: str,
    labels: Mapping[str, str],
    env: Mapping[str, str],
    overrides: Mapping[str, Any],
    podman: bool = False,
) -> Body:
    """The create body of a container like ``old`` (its inspect answer) running ``image``.

    Args:
        old: ``GET /containers/{id}/json`` of the container copied.
        old_image: ``GET /images/{id}/json`` of the image ``old`` runs, whose
            defaults are left out; on Podman, with the top-level
            ``Healthcheck`` of ``GET /libpod/images/{id}/json`` merged in
            (None when the image has none).
        image: The new container's image.
        labels: Labels to set on top of the copied ones (the driver's).
        env: Variables to set on top of the copied ones (the user's).
        overrides: Create-body keys to set last; ``HostConfig`` is merged key
            by key, anything else replaces the copied value.
        podman: Whether the engine is Podman, whose Docker-compatible image
            inspect does not report a HEALTHCHECK: without the libpod one
            merged in, the container's HEALTHCHECK is taken for the image's.
    """
    config = _dict(old.get("Config"))
    defaults = _dict(old_image.get("Config"))
    image_healthcheck = _image_healthcheck(old_image, podman=podman)
    body: Body = {"Image": image}
    for key in IMAGE_DEFAULTED:
        value = config.get(key)
        if value in _UNSET:
            continue
        if key == "Healthcheck":
            if image_healthcheck is _UNKNOWN or not _differs(key, value, image_healthcheck):
                continue
        elif not _differs(key, value, defaults.get(key)):
            continue
        body[key] = _signal_name(value) if key == "StopSignal" else value
    for key in COPIED:
        value = config.get(key)
        if value not in (None, "", [], {}, False, 0):
            body[key] = value
    if config.get("Hostname") == str(old.get("Id", ""))[:12]:
        body.pop("Hostname", None)  # the engine's default: the new container gets its own
    image_env = _env_map(defaults.get("Env"))
    variables = {
        name: value
        for name, value in _env_map(config.get("Env")).items()
        if name not in _ENGINE_ENV and image_env.get(name) != value
    }
    variables.update(env)
    if variables:
        body["Env"] = [f"{name}={value}" for name, value in variables.items()]
    image_labels = _dict(defaults.get("Labels"))
    body["Labels"] = {
        **{k: v for k, v in _dict(config.get("Labels")).items() if image_labels.get(k) != v},
        **labels,
    }
    host = _dict(old.get("HostConfig"))
    body["HostConfig"] = {key: host[key] for key in HOST_KEYS if host.get(key) not in (None, "")}
    return merge(body, overrides)


def merge(body: Body, overrides: Mapping[str, Any]) -> Body:
    """``body`` with ``overrides`` on top; ``HostConfig`` and ``Labels`` merge key by key."""
    result = dict(body)
    for key, value in overrides.items():
        if key in {"HostConfig", "Labels"} and isinstance(value, Mapping):
            result[key] = {**_dict(result.get(key)), **value}
        else:
            result[key] = value
    return result


def published(info: Mapping[str, Any]) -> dict[str, list[tuple[str, int]]]:
    """Per container port (``"8080/tcp"``), the ``(host IP, host port)`` pairs it is published on.

    Read from the running container's network settings when there are any, else
    from the ports it asked for (a stopped container on Docker has none of the
    former); a binding the engine has not given a port yet is left out.
    """
    network = _dict(_dict(info.get("NetworkSettings")).get("Ports"))
    asked = _dict(_dict(info.get("HostConfig")).get("PortBindings"))
    source = network if any(network.values()) else asked
    result: dict[str, list[tuple[str, int]]] = {}
    for container_port, bindings in source.items():
        pairs: list[tuple[str, int]] = []
        for binding in bindings if isinstance(bindings, list) else []:  # pyright: ignore[reportUnknownVariableType] - JSON
            entry = _dict(binding)  # pyright: ignore[reportUnknownArgumentType] - JSON
            port = str(entry.get("HostPort") or "")
            if port.isdigit() and int(port) > 0:
                pairs.append((str(entry.get("HostIp") or ""), int(port)))
        if pairs:
            result[str(container_port)] = pairs
    return result


def address(
    ports: Mapping[str, list[tuple[str, int]]], port: str | None, default_host: str
) -> tuple[str, int] | None:
    """The address an instance is reached at: where ``port`` (or the only port) is published.

    Returns None when nothing is published, or when several ports are and none
    was named. A binding on every interface (empty or ``0.0.0.0``) is reached
    at ``default_host``.
    """
    if port is None:
        if len(ports) != 1:
            return None
        port = next(iter(ports))
    pairs = ports.get(port)
    if not pairs:
        return None
    host, number = pairs[0]
    if host in {"", "0.0.0.0", "::"}:  # noqa: S104 - reading a binding, not binding
        host = default_host
    return host, number


def with_ports(body: Body, ports: Mapping[str, list[tuple[str, int]]]) -> Body:
    """``body`` publishing exactly ``ports`` (container port -> host IP and port pairs)."""
    result = dict(body)
    host = _dict(result.get("HostConfig"))
    host["PortBindings"] = {
        container_port: [{"HostIp": ip, "HostPort": str(number)} for ip, number in pairs]
        for container_port, pairs in ports.items()
    }
    result["HostConfig"] = host
    exposed = _dict(result.get("ExposedPorts"))
    for container_port in ports:
        exposed.setdefault(container_port, {})
    if exposed:
        result["ExposedPorts"] = exposed
    return result

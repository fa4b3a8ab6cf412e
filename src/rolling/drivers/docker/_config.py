"""Checks of DockerDriver's arguments: a bad value is a ConfigError naming the field and fix."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rolling import ConfigError

__all__ = ["container_port", "selector_pairs", "str_mapping", "text_or_none"]


def selector_pairs(selector: object) -> list[str]:
    fix = 'pass "app=web" or {"app": "web"}'
    if isinstance(selector, str):
        pairs = [selector]
    elif isinstance(selector, Mapping):
        pairs = [f"{k}={v}" for k, v in selector.items()]  # pyright: ignore[reportUnknownVariableType] - checked below
    else:
        raise ConfigError(
            "DockerDriver.selector", f"expected a str or a mapping, got {selector!r}", fix
        )
    for pair in pairs:
        key = pair.partition("=")[0]
        if not key or any(c.isspace() for c in pair) or "," in pair:
            raise ConfigError("DockerDriver.selector", f"{pair!r} is not a label selector", fix)
    if not pairs:
        raise ConfigError(
            "DockerDriver.selector", "it is empty: it would select every container", fix
        )
    return pairs


def text_or_none(field: str, value: object, fix: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(field, f"expected a non-empty str or None, got {value!r}", fix)
    return value


def str_mapping(field: str, value: object, values: type = str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, values)
        for k, v in value.items()  # pyright: ignore[reportUnknownVariableType] - checked here
    ):
        raise ConfigError(
            field, f"expected a mapping of str to {values.__name__}, got {value!r}", "pass a dict"
        )
    return value  # pyright: ignore[reportUnknownVariableType] - checked just above


def container_port(port: object) -> str | None:
    fix = 'pass 8080 or "8080/tcp", or None'
    if port is None:
        return None
    if isinstance(port, int) and not isinstance(port, bool) and 0 < port <= 65535:  # noqa: PLR2004 - the largest port
        return f"{port}/tcp"
    if isinstance(port, str):
        number, _, protocol = port.partition("/")
        if number.isdigit() and 0 < int(number) <= 65535 and protocol in {"", "tcp", "udp", "sctp"}:  # noqa: PLR2004 - the largest port
            return f"{number}/{protocol or 'tcp'}"
    raise ConfigError("DockerDriver.port", f"{port!r} is not a container port", fix)

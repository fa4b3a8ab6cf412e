"""Finding plugins in the installed distributions' entry points, and building them."""

from __future__ import annotations

import contextvars
import difflib
import importlib.metadata
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from rolling import ConfigError

__all__ = ["GROUPS", "Plugin", "build", "installed", "load", "planning"]

GROUPS: tuple[str, ...] = (
    "rolling.checks",
    "rolling.drivers",
    "rolling.metrics",
    "rolling.routers",
)
"""The entry-point groups rolling reads, sorted."""


_PLANNING: contextvars.ContextVar[bool] = contextvars.ContextVar("rolling_planning", default=False)


def planning(*, set_to: bool | None = None) -> bool:
    """Whether the plugins are entered only to look (``rolling plan``), not to change anything.

    A plugin that changes the fleet when it is entered (the ``process``
    driver starts its first fleet there) must not while this is true. The
    command line sets it before it plans; ``planning(set_to=True)`` sets it
    for the current context (tasks started from it inherit it) and returns
    the new value.

    .. versionadded:: 0.2.0
    """
    if set_to is not None:
        _PLANNING.set(set_to)
    return _PLANNING.get()


@attrs.frozen(kw_only=True)
class Plugin:
    """One installed plugin: an entry point in one of ``GROUPS``.

    Attributes:
        group: Its entry-point group, such as ``"rolling.drivers"``.
        name: The name a rollout file calls it by.
        value: Where its factory is, as ``module:attribute``.
        distribution: The distribution (package) that registers it, or ``""``
            when importlib.metadata cannot tell.
        version: That distribution's version, or ``""``.

    .. versionadded:: 0.2.0
    """

    group: str
    name: str
    value: str
    distribution: str
    version: str


def _check_group(group: str) -> None:
    if group not in GROUPS:
        raise ConfigError(
            "plugin group", f"unknown group {group!r}", "use one of: " + ", ".join(GROUPS)
        )


def installed(group: str | None = None) -> list[Plugin]:
    """Every installed plugin, or those of one group, sorted by group and name.

    Raises:
        ConfigError: ``group`` is not one of ``GROUPS``.
    """
    groups = GROUPS if group is None else (group,)
    found: list[Plugin] = []
    for name in groups:
        _check_group(name)
        for entry in importlib.metadata.entry_points(group=name):
            dist = entry.dist
            found.append(
                Plugin(
                    group=name,
                    name=entry.name,
                    value=entry.value,
                    distribution="" if dist is None else dist.name,
                    version="" if dist is None else dist.version,
                )
            )
    return sorted(found, key=lambda p: (p.group, p.name, p.distribution))


def _kind(group: str) -> str:
    return group.removeprefix("rolling.").removesuffix("s")


def load(group: str, name: str) -> Callable[..., Any]:
    """Import the factory of the plugin ``name`` in ``group``.

    Raises:
        ConfigError: No such plugin, two distributions register the name, it
            fails to import, or its object is not callable.
    """
    _check_group(group)
    entries = [e for e in importlib.metadata.entry_points(group=group) if e.name == name]
    if not entries:
        names = sorted({e.name for e in importlib.metadata.entry_points(group=group)})
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(
            "plugin",
            f"no {_kind(group)} plugin named {name!r} is installed (group {group})",
            f"{hint}use one of: {', '.join(names) or 'none'}, or install the package that"
            " provides it (`rolling plugins` lists what is installed)",
        )
    if len({e.value for e in entries}) > 1:
        # The packages by name, which is what the fix (uninstalling one) needs.
        where = ", ".join(
            sorted(
                e.value if e.dist is None else f"{e.value} (package {e.dist.name} {e.dist.version})"
                for e in entries
            )
        )
        raise ConfigError(
            "plugin",
            f"{len(entries)} installed packages register the {_kind(group)} {name!r}: {where}",
            "uninstall all but one of them",
        )
    entry = entries[0]
    try:
        factory: object = entry.load()
    except ImportError as exc:
        raise ConfigError(
            "plugin",
            f"the {_kind(group)} {name!r} ({entry.value}) cannot be imported: {exc}",
            "install what it needs (for a built-in, its extra, such as `pip install"
            " 'rolling[ssh]'`)",
        ) from exc
    except Exception as exc:
        # A module that raises as it is imported, an attribute it does not have, or a value
        # that is no `module:attribute`: still an error that names the plugin, not a traceback.
        raise ConfigError(
            "plugin",
            f"the {_kind(group)} {name!r} ({entry.value}) cannot be loaded:"
            f" {type(exc).__name__}: {exc}",
            "fix the entry point (`module:attribute`, with no quotes in entry_points.txt) or"
            " the package that registers it",
        ) from exc
    if not callable(factory):
        raise ConfigError(
            "plugin",
            f"the {_kind(group)} {name!r} ({entry.value}) is not callable",
            "an entry point must name a factory: a callable that returns the plugin",
        )
    return factory


def build(group: str, name: str, settings: Mapping[str, Any]) -> Any:
    """Load the plugin ``name`` of ``group`` and call its factory with ``settings``.

    The settings are checked against the factory's signature first, so an
    unknown or missing key is reported by name.

    Raises:
        ConfigError: As :func:`load`, or a setting is unknown, missing or
            refused by the factory. Its ``field`` is the setting's key when
            known.
    """
    factory = load(group, name)
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # some builtins have none: let the call decide
        signature = None
    if signature is not None:
        params = signature.parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        accepted = sorted(
            p.name
            for p in params.values()
            if p.kind in {inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD}
        )
        if not takes_any:
            for key in settings:
                if key not in accepted:
                    close = difflib.get_close_matches(key, accepted, n=1)
                    hint = f"did you mean {close[0]!r}? " if close else ""
                    raise ConfigError(
                        key,
                        f"is not a setting of the {_kind(group)} {name!r}",
                        f"{hint}its settings are: {', '.join(accepted) or 'none'}",
                    )
        for param in params.values():
            required = param.default is inspect.Parameter.empty and param.kind in {
                inspect.Parameter.KEYWORD_ONLY,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
            }
            if required and param.name not in settings:
                raise ConfigError(
                    param.name,
                    f"is required by the {_kind(group)} {name!r}",
                    f"add {param.name} = ... to its table",
                )
    try:
        return factory(**settings)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            name, f"the {_kind(group)} refused its settings: {exc}", "check its documentation"
        ) from exc

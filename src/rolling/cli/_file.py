"""Rollout files: TOML that names plugins and sets the rollout, checked before anything runs.

There is no second schema here: every table becomes the library's own value
object (``[readiness]`` is :class:`rolling.Readiness`, ``[failure]`` is
:class:`rolling.FailurePolicy`, ...) or a plugin factory's call, and their
validators decide. This module only knows which table maps to which class,
and turns their :class:`~rolling.ConfigError` into one that names the file,
the line (where a plain ``key = value`` line or a ``[table]`` header holds
it) and the key.

``${NAME}`` in any string is replaced by the environment variable ``NAME``
(``$${`` writes a literal ``${``), in every table, the plugin names included.
The values substituted are secrets: every message has them replaced by ``***``,
so none is printed.
"""

from __future__ import annotations

import inspect
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

import attrs

from rolling import Advance as AdvanceStep
from rolling import (
    ConfigError,
    Readiness,
    Rollout,
    Step,
)
from rolling.plugins import build
from rolling.routers.balancer import Balancer
from rolling.testing import SimulatedFleet

from ._analysis_file import AnalysisReader
from ._policy_file import PolicyReader
from ._strategy_file import StrategyReader

__all__ = [
    "FILE_SCHEMA",
    "PluginSpec",
    "RolloutFile",
    "RolloutFileError",
    "checkable",
    "control_path",
    "load_file",
]

FILE_SCHEMA = 1
"""The rollout file format's version; a file may say ``schema = 1``."""

_TOP_KEYS = (
    "analysis",
    "check",
    "cleanup_timeout",
    "control",
    "driver",
    "effect_timeout",
    "failure",
    "journal",
    "metrics",
    "order",
    "progress_deadline",
    "readiness",
    "rollback",
    "router",
    "schema",
    "seed",
    "steps",
    "strategy",
    "waves",
)
_ENV = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)\}")
_KEY_LINE = re.compile(r'^\s*("?)([A-Za-z0-9_-]+)\1\s*=')
_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.-]+)\s*\]\]?")

Where = tuple[str | int, ...]
"""A table's place in the file: ``("readiness",)``, ``("steps", 2)``."""


class RolloutFileError(ConfigError):
    """A rollout file is invalid: names the file, the line where known, the key and the fix.

    Attributes:
        path: The file.
        line: 1-based line, or None when the key is not on a line of its own.
    """

    def __init__(self, path: Path, line: int | None, field: str, problem: str, fix: str) -> None:
        super().__init__(field, problem, fix)
        self.path = path
        self.line = line
        where = f"{path}:{line}" if line is not None else str(path)
        # ConfigError's own message, prefixed by where it is.
        self.args = (f"{where}: {field}: {problem}; {fix}",)


@attrs.frozen(kw_only=True)
class PluginSpec:
    """A plugin as the file names it, and the object its factory built."""

    group: str
    name: str
    settings: Mapping[str, Any]
    built: Any


@attrs.frozen(kw_only=True)
class RolloutFile:
    """A checked rollout file: the plugins, built, and the :class:`rolling.Rollout` options.

    Attributes:
        path: The file.
        driver: The driver plugin.
        router: The router plugin, if any.
        check: The readiness check plugin, if any.
        options: Keyword arguments for ``Rollout(driver, target, ...)``,
            except the driver, router and journal.
        journal: The journal file, if any.
        control: The control socket's path.
        secrets: Values substituted from the environment, to keep out of output.
    """

    path: Path
    driver: PluginSpec
    router: PluginSpec | None
    check: PluginSpec | None
    options: Mapping[str, Any]
    journal: Path | None
    control: Path
    secrets: tuple[str, ...]

    def redact(self, text: str) -> str:
        """``text`` with every secret from the environment hidden."""
        return _redact(text, self.secrets)


def _redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


class _Locator:
    """Lines of ``key = value`` and ``[table]`` headers, found by scanning the text.

    tomllib gives no positions; a plain scan finds what most files write.
    Dotted keys and inline tables are not followed: their keys have no line.
    """

    def __init__(self, text: str) -> None:
        self.lines: dict[tuple[Where, str | None], int] = {}
        current: Where = ()
        counts: dict[str, int] = {}
        for number, line in enumerate(text.splitlines(), start=1):
            header = _HEADER.match(line)
            if header:
                name = header.group(2)
                if header.group(1) == "[[":
                    index = counts.get(name, 0)
                    counts[name] = index + 1
                    current = (*name.split("."), index)
                else:
                    current = tuple(name.split("."))
                self.lines.setdefault((current, None), number)
                continue
            key = _KEY_LINE.match(line)
            if key:
                self.lines.setdefault((current, key.group(2)), number)

    def line(self, where: Where, key: str | None) -> int | None:
        """The line of ``where``/``key``, or of the nearest key or table that holds it.

        A key inside an inline table (``errors = { code = "5.." }``) is on the line of
        the key that holds the table; a table's own name is its ``[table]`` header.
        """
        path = (*where, *([key] if key is not None else []))
        for end in range(len(path), 0, -1):
            last = path[end - 1]
            found = self.lines.get((path[:end], None))
            if isinstance(last, str):
                found = self.lines.get((path[: end - 1], last), found)
            if found is not None:
                return found
        return None


class _Loader:
    # Readers of the parts that have their own module; made by load(), which has the data.
    analyses: AnalysisReader
    strategies: StrategyReader

    def __init__(self, path: Path, text: str, env: Mapping[str, str]) -> None:
        self.path = path
        self.locator = _Locator(text)
        self.env = env
        self.secrets: list[str] = []

    def error(self, where: Where, key: str | None, problem: str, fix: str) -> RolloutFileError:
        field = ".".join(str(part) for part in (*where, *([key] if key else [])))
        secrets = tuple(self.secrets)
        return RolloutFileError(
            self.path,
            self.locator.line(where, key),
            field or "(file)",
            _redact(problem, secrets),
            _redact(fix, secrets),
        )

    def from_config_error(self, where: Where, exc: ConfigError) -> RolloutFileError:
        """``exc`` at ``where``.

        A library validator names its field ``Class.key`` (or ``Class.method.key``): the
        key is the last part. A plugin names the key as the file writes it, a dotted path
        into an inline table included (``errors.code``).
        """
        parts = [part.split("[", 1)[0] for part in exc.field.split(".")]
        if parts[0][:1].isupper():
            parts = parts[-1:]
        path = tuple(part for part in parts if part)
        key = path[-1] if path else None
        return self.error((*where, *path[:-1]), key, exc.problem, exc.fix)

    # -- values --------------------------------------------------------------------

    def substitute(self, value: Any, where: Where, key: str | None) -> Any:
        if isinstance(value, str):

            def replace(match: re.Match[str]) -> str:
                if match.group(1):  # $${NAME}: a literal ${NAME}
                    return "${" + match.group(2) + "}"
                name = match.group(2)
                if name not in self.env:
                    raise self.error(
                        where,
                        key,
                        f"the environment variable {name} is not set",
                        f"export {name} before running, or write the value instead of ${{{name}}}",
                    )
                secret = self.env[name]
                if secret:
                    self.secrets.append(secret)
                return secret

            return _ENV.sub(replace, value)
        inside: Where = where if key is None else (*where, key)
        if isinstance(value, dict):
            table = cast("dict[str, Any]", value)
            return {k: self.substitute(v, inside, k) for k, v in table.items()}
        if isinstance(value, list):
            return [
                self.substitute(v, (*inside, i), None) if isinstance(v, dict) else
                self.substitute(v, where, key)
                for i, v in enumerate(cast("list[object]", value))
            ]  # fmt: skip
        return value

    def table(self, data: Mapping[str, Any], key: str) -> dict[str, Any] | None:
        value = data.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.error(
                (), key, f"expected a table, got {type(value).__name__}", f"write [{key}] ..."
            )
        return dict(cast("dict[str, Any]", value))

    def construct(
        self,
        where: Where,
        factory: Callable[..., Any],
        table: Mapping[str, Any],
        *,
        elsewhere: tuple[str, ...] = (),
    ) -> Any:
        """``factory(**table)``, its keys checked against its signature first.

        ``elsewhere``: arguments the file gives in a table of their own (``[check]`` for
        ``Readiness.check``), not offered as keys of this one.
        """
        params = [
            param
            for param in inspect.signature(factory).parameters.values()
            if param.kind in {param.KEYWORD_ONLY, param.POSITIONAL_OR_KEYWORD}
        ]
        accepted = [param.name for param in params if param.name not in elsewhere]
        for key in table:
            if key not in accepted and key not in elsewhere:
                raise self.error(
                    where,
                    key,
                    "is not a known key here",
                    "use one of: " + ", ".join(accepted) if accepted else "remove it",
                )
        for param in params:  # named here, not as Python's "missing 1 required argument"
            if param.default is param.empty and param.name not in table:
                raise self.error(where, param.name, "is missing", f"add {param.name} = ...")
        try:
            return factory(**table)
        except ConfigError as exc:
            raise self.from_config_error(where, exc) from None
        except TypeError as exc:
            raise self.error(where, None, str(exc), "check the keys of this table") from None

    # -- tables ---------------------------------------------------------------------

    def plugin(self, data: Mapping[str, Any], key: str, group: str) -> PluginSpec | None:
        table = self.table(data, key)
        if table is None:
            return None
        name = table.pop("plugin", None)
        if not isinstance(name, str) or not name:
            raise self.error(
                (key,),
                "plugin",
                "is missing" if name is None else f"expected a name, got {name!r}",
                f'name the plugin: [{key}] plugin = "..." (`rolling plugins` lists them)',
            )
        settings = table
        try:
            built = build(group, name, settings)
        except ConfigError as exc:
            raise self.from_config_error((key,), exc) from None
        return PluginSpec(group=group, name=name, settings=settings, built=built)

    def steps(self, data: Mapping[str, Any]) -> list[Step]:
        value = data.get("steps", [])
        if not isinstance(value, list):
            raise self.error((), "steps", "expected an array of tables", "write [[steps]] tables")
        steps: list[Step] = []
        for index, raw in enumerate(cast("list[object]", value)):
            where: Where = ("steps", index)
            if not isinstance(raw, dict) or len(cast("dict[str, Any]", raw)) != 1:
                raise self.error(
                    where,
                    None,
                    "a step has exactly one key",
                    'write advance = "25%", pause = 30, pause = "promote", analyze = ["m"], '
                    "set_weight = 10 or set_canary_scale = 2",
                )
            ((key, step),) = cast("dict[str, Any]", raw).items()
            if key == "pause":
                steps.append(self.strategies.pause(where, key, step))
            elif key in {"set_weight", "set_canary_scale"}:
                steps.append(self.strategies.canary_step(where, key, step))
            elif key == "analyze":
                steps.append(self.analyses.step(where, step))
            elif key == "advance":
                try:
                    steps.append(AdvanceStep(step))
                except ConfigError as exc:
                    raise self.error(where, key, exc.problem, exc.fix) from None
            else:
                raise self.error(
                    where,
                    key,
                    "is not a step",
                    "use advance, pause, analyze, set_weight or set_canary_scale"
                    " (gates need Python)",
                )
        return steps

    def check_router(self, driver: PluginSpec, router: PluginSpec | None) -> None:
        """Refuse a router that cannot reach the driver's instances: `rolling run` would fail."""
        if (
            router is not None
            and isinstance(router.built, Balancer)
            and isinstance(driver.built, SimulatedFleet)
        ):
            raise self.error(
                (),
                "router",
                "the balancer forwards requests to each instance's host and port, and the"
                " instances of a simulated fleet have none",
                'try the balancer with [driver] plugin = "process", or remove [router]'
                " (a simulated fleet needs none)",
            )

    def check_options(
        self, options: Mapping[str, Any], driver: PluginSpec, router: PluginSpec | None
    ) -> None:
        """Build a Rollout on the file's plugins, never entered: the library checks it all.

        A canary asks the router whether it sets weights; a canary, blue-green or surge
        asks the driver whether it launches. A plugin whose factory built a context
        manager around its object has nothing to ask before it is entered: a stand-in
        fleet, which can do everything, goes in its place, and `rolling run` asks the
        object itself.
        """
        fleet = SimulatedFleet(1)
        on_driver = checkable(driver, "list_instances", fleet)
        on_router = checkable(router, "attach", fleet)
        try:
            Rollout(on_driver, "check", router=on_router, **options)
        except ConfigError as exc:
            if exc.field == "Rollout.router":
                fix = exc.fix
                if router is None:
                    fix = 'add a [router] that can set weights: plugin = "balancer" or "haproxy"'
                raise self.error((), "router", exc.problem, fix) from None
            section = exc.field.split(".", 1)[0].removeprefix("Rollout")
            where: Where = {
                "RollingUpdate": ("strategy",),
                "Batches": ("strategy",),
                "Canary": ("strategy",),
                "BlueGreen": ("strategy",),
                "FailurePolicy": ("failure",),
                "Readiness": ("readiness",),
                "Order": ("order",),
                "Waves": ("waves",),
            }.get(section, ())
            if exc.field.startswith("Rollout.steps["):
                index = int(exc.field.split("[", 1)[1].split("]", 1)[0])
                raise self.error(("steps", index), None, exc.problem, exc.fix) from None
            raise self.from_config_error(where, exc) from None

    def journal(self, data: Mapping[str, Any]) -> Path | None:
        journal = self.table(data, "journal")
        if journal is None:
            return None
        path = journal.pop("path", None)
        if not isinstance(path, str) or not path:
            raise self.error(
                ("journal",),
                "path",
                "is missing" if path is None else f"expected a non-empty path, got {path!r}",
                'write path = "deploy.journal"',
            )
        if journal:
            raise self.error(("journal",), next(iter(journal)), "is not a known key", "use path")
        return Path(path)

    def header(self, data: Mapping[str, Any]) -> None:
        """The top-level keys, the schema, and the tables this version cannot take yet."""
        for key in data:
            if key not in _TOP_KEYS:
                what = "table" if isinstance(data[key], dict) else "key"
                raise self.error(
                    (), key, f"is not a known {what}", "use one of: " + ", ".join(_TOP_KEYS)
                )
        schema = data.get("schema", FILE_SCHEMA)
        if schema != FILE_SCHEMA:
            raise self.error(
                (),
                "schema",
                f"this rolling reads schema {FILE_SCHEMA}, not {schema!r}",
                "upgrade rolling",
            )
        control = data.get("control")
        if control is not None and not isinstance(control, str):
            raise self.error((), "control", "expected a path", 'write control = "deploy.control"')

    def options(
        self,
        data: Mapping[str, Any],
        driver: PluginSpec,
        router: PluginSpec | None,
        check: PluginSpec | None,
    ) -> dict[str, Any]:
        """Keyword arguments of ``Rollout(...)``, each built and checked."""
        readiness = self.table(data, "readiness") or {}
        if "check" in readiness:
            raise self.error(
                ("readiness",), "check", "goes in its own table", 'write [check] plugin = "http"'
            )
        if check is not None:
            readiness["check"] = check.built
        policies = PolicyReader(self)
        options: dict[str, Any] = {
            "readiness": self.construct(("readiness",), Readiness, readiness, elsewhere=("check",)),
            "strategy": self.strategies.strategy(self.table(data, "strategy")),
            "failure": policies.failure(self.table(data, "failure")),
            "order": policies.order(self.table(data, "order"), lambda: self.journal(data)),
            "waves": policies.waves(self.table(data, "waves")),
            "steps": self.steps(data),
            "progress_deadline": policies.deadline(data.get("progress_deadline")),
            "analysis": self.analyses.background(data),
        }
        for key in ("rollback", "effect_timeout", "cleanup_timeout", "seed"):
            options[key] = data.get(key)
        options = {k: v for k, v in options.items() if v is not None}
        self.check_router(driver, router)
        self.check_options(options, driver, router)
        self.analyses.check_unused()
        return options

    def load(self, data: dict[str, Any]) -> RolloutFile:
        data = self.substitute(data, (), None)
        self.header(data)
        self.analyses = AnalysisReader(self, data)
        self.strategies = StrategyReader(self, self.analyses)
        driver = self.plugin(data, "driver", "rolling.drivers")
        if driver is None:
            raise self.error(
                (), "driver", "is missing", 'add [driver] plugin = "process" (and its settings)'
            )
        router = self.plugin(data, "router", "rolling.routers")
        check = self.plugin(data, "check", "rolling.checks")
        return RolloutFile(
            path=self.path,
            driver=driver,
            router=router,
            check=check,
            options=self.options(data, driver, router, check),
            journal=self.journal(data),
            control=_control_of(self.path, data),
            secrets=tuple(self.secrets),
        )


def checkable(spec: PluginSpec | None, method: str, stand_in: object) -> Any:
    """The plugin's object for a Rollout built only to check options (see check_options).

    The object itself when it has ``method``; the stand-in when the factory built a
    context manager around it; None without the plugin.
    """
    if spec is None:
        return None
    return spec.built if callable(getattr(spec.built, method, None)) else stand_in


def load_file(path: Path, env: Mapping[str, str] | None = None) -> RolloutFile:
    """Read and check the rollout file at ``path``; build its plugins (none touches the fleet).

    Raises:
        RolloutFileError: The file cannot be read, is not TOML, or a key or
            value is wrong.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RolloutFileError(
            path, None, "(file)", f"cannot be read: {exc}", "check the path"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        line = int(match.group(1)) if match else None
        raise RolloutFileError(
            path, line, "(file)", f"is not valid TOML: {exc}", "fix the syntax"
        ) from None
    loader = _Loader(path, text, os.environ if env is None else env)
    return loader.load(data)


def _control_of(path: Path, data: Mapping[str, Any]) -> Path:
    control = data.get("control")
    if isinstance(control, str) and control:
        return Path(control)
    journal = data.get("journal")
    if isinstance(journal, dict):
        journal_path = cast("dict[str, Any]", journal).get("path")
        if isinstance(journal_path, str) and journal_path:
            return Path(journal_path + ".control")
    return path.with_name(path.name + ".control")


def control_path(path: Path) -> Path:
    """Where the run of the rollout file at ``path`` listens for control (no plugin is built).

    Raises:
        RolloutFileError: The file cannot be read or is not TOML.
    """
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RolloutFileError(
            path, None, "(file)", f"cannot be read: {exc}", "check the path"
        ) from None
    # The paths as `rolling run` reads them: with ${NAME} replaced.
    loader = _Loader(path, text, os.environ)
    places = {key: data[key] for key in ("control", "journal") if key in data}
    return _control_of(path, loader.substitute(places, (), None))

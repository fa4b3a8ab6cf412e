"""The public namespaces export exactly what they list, in order."""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
from pathlib import Path
from typing import TYPE_CHECKING, cast

import pytest

import rolling
import rolling.events
import rolling.testing
import rolling.typing

if TYPE_CHECKING:
    from types import ModuleType

PUBLIC_MODULES = [
    "rolling",
    "rolling.analysis",
    "rolling.checks",
    "rolling.drivers.docker",
    "rolling.drivers.process",
    "rolling.drivers.ssh",
    "rolling.events",
    "rolling.health",
    "rolling.metrics",
    "rolling.net",
    "rolling.plugins",
    "rolling.routers.balancer",
    "rolling.routers.haproxy",
    "rolling.testing",
    "rolling.typing",
    "rolling.validate",
]


@pytest.fixture(params=PUBLIC_MODULES)
def module(request: pytest.FixtureRequest) -> ModuleType:
    return importlib.import_module(request.param)


def names_in_all(module: ModuleType) -> list[str]:
    names: object = getattr(module, "__all__", None)
    assert isinstance(names, list), f"{module.__name__}.__all__ must be a list"
    items = cast("list[object]", names)
    assert all(isinstance(name, str) for name in items), f"{module.__name__}.__all__: not str"
    return cast("list[str]", items)


def test_all_is_sorted(module: ModuleType) -> None:
    names = names_in_all(module)
    # The order ruff's RUF022 keeps: constants first, then the rest, each alphabetical.
    assert names == sorted(names, key=lambda name: (not name.isupper(), name))


def test_all_has_no_duplicates(module: ModuleType) -> None:
    names = names_in_all(module)
    assert sorted({name for name in names if names.count(name) > 1}) == []


def test_every_name_in_all_is_importable(module: ModuleType) -> None:
    assert [name for name in names_in_all(module) if not hasattr(module, name)] == []


def test_all_lists_only_public_names(module: ModuleType) -> None:
    assert [name for name in names_in_all(module) if name.startswith("_")] == []


def test_star_import_gives_exactly_all(module: ModuleType) -> None:
    namespace: dict[str, object] = {}
    exec(f"from {module.__name__} import *", namespace)  # noqa: S102 - a fixed import statement
    del namespace["__builtins__"]
    assert sorted(namespace) == sorted(names_in_all(module))


# -- what adapters may import --------------------------------------------------------------------

SRC = Path(__file__).resolve().parent.parent / "src" / "rolling"

# Adapters and the tools shipped for users are written as a third party would write them: with
# the public names of the core only (rolling, rolling.typing, rolling.events, rolling.net,
# rolling.health, rolling.validate), never its private modules.
ADAPTER_DIRS = ["checks", "cli", "demo", "drivers", "metrics", "plugins", "routers", "testing"]


def core_private_imports(path: Path, package_dir: Path = SRC) -> list[str]:
    """The imports in ``path`` that reach into a private module of the core package."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = path.relative_to(package_dir.parent).with_suffix("").parts[:-1]
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, *(node.module or "").split(".")]).rstrip(".")
            else:
                module = node.module or ""
            targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            continue
        for target in targets:
            parts = target.split(".")
            if len(parts) > 1 and parts[0] == "rolling" and parts[1].startswith("_"):
                found.append(f"{path.relative_to(package_dir.parent)}:{node.lineno}: {target}")
    return found


@pytest.mark.parametrize("directory", ADAPTER_DIRS)
def test_adapters_import_only_public_names_of_the_core(directory: str) -> None:
    files = sorted((SRC / directory).rglob("*.py"))
    assert files
    assert [hit for path in files for hit in core_private_imports(path)] == []


def test_the_import_scan_finds_private_imports(tmp_path: Path) -> None:
    # The scan above must be able to fail: run it on a module that does what adapters must not.
    bad = tmp_path / "rolling" / "drivers" / "bad.py"
    bad.parent.mkdir(parents=True)
    bad.write_text(
        "from rolling._net import Address\n"
        "from .._probe import probe_once\n"
        "import rolling._x\n"
        "from . import fine\n"
        "from rolling.net import address_of\n"
    )
    found = core_private_imports(bad, tmp_path / "rolling")
    assert [hit.rsplit(": ", 1)[1] for hit in found] == [
        "rolling._net",
        "rolling._net.Address",
        "rolling._probe",
        "rolling._probe.probe_once",
        "rolling._x",
    ]


# -- one home for each public name ---------------------------------------------------------------


def test_events_have_one_home_and_stay_importable_from_rolling() -> None:
    names = list(rolling.events.__all__)
    assert "Event" in names
    assert "Phase" in names
    for name in names:
        obj = getattr(rolling.events, name)
        assert obj.__module__ == "rolling.events", name
        assert getattr(rolling, name) is obj, name
    event_classes = [
        obj
        for obj in vars(rolling.events).values()
        if isinstance(obj, type) and issubclass(obj, rolling.events.Event)
    ]
    # Every event type defined there is public, and everything public there is an event or Phase.
    assert sorted(cls.__name__ for cls in event_classes) == sorted(set(names) - {"Phase"})


def test_protocols_live_in_rolling_typing() -> None:
    assert rolling.Journal is rolling.typing.Journal
    assert rolling.Lock is rolling.typing.Lock
    assert isinstance(rolling.FileJournal("unused"), rolling.typing.Journal)
    assert isinstance(rolling.FileLock("unused"), rolling.typing.Lock)
    assert isinstance(rolling.testing.MemoryJournal(), rolling.typing.Journal)


def test_resolved_window_is_not_public() -> None:
    assert "ResolvedWindow" not in rolling.__all__
    assert not hasattr(rolling, "ResolvedWindow")


def test_version_comes_from_the_package_metadata() -> None:
    assert rolling.__version__ == importlib.metadata.version("rolling")

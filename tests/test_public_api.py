"""The public namespaces export exactly what they list, in order."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, cast

import pytest

if TYPE_CHECKING:
    from types import ModuleType

PUBLIC_MODULES = [
    "rolling",
    "rolling.checks",
    "rolling.drivers.process",
    "rolling.drivers.ssh",
    "rolling.routers.balancer",
    "rolling.routers.haproxy",
    "rolling.testing",
    "rolling.typing",
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
    assert names == sorted(names)


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

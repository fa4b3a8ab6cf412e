"""Plugins by entry point: the built-ins, a third-party package installed here, and errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from rolling import ConfigError
from rolling.plugins import GROUPS, build, installed, load
from rolling.testing import SimulatedFleet

TOY = Path(__file__).resolve().parent / "toy_plugin"
ROLLING = [sys.executable, "-m", "rolling"]


def install(project: Path, site: Path) -> None:
    """Install ``project`` into ``site`` the way an installer lays out a pure-Python wheel.

    The package's files, and a ``.dist-info`` with its metadata and the entry points
    of its pyproject.toml, which is all importlib.metadata reads. No build backend or
    package index is needed, so this works offline and under nox alike.
    """
    meta = tomllib.loads((project / "pyproject.toml").read_text())["project"]
    name, version = meta["name"], meta["version"]
    site.mkdir(parents=True, exist_ok=True)
    for package in project.iterdir():
        if (package / "__init__.py").exists():
            shutil.copytree(
                package, site / package.name, ignore=shutil.ignore_patterns("__pycache__")
            )
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    sections = [
        f"[{group}]\n" + "".join(f"{key} = {value}\n" for key, value in entries.items())
        for group, entries in meta.get("entry-points", {}).items()
    ]
    (info / "entry_points.txt").write_text("\n".join(sections))
    (info / "INSTALLER").write_text("rolling-tests\n")
    files = sorted(p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file())
    (info / "RECORD").write_text("".join(f"{f},,\n" for f in [*files, f"{info.name}/RECORD"]))


@pytest.fixture
def site(tmp_path: Path) -> Path:
    path = tmp_path / "site"
    install(TOY, path)
    return path


def rolling(*args: str, site: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [*ROLLING, *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_builtins_are_registered_as_entry_points() -> None:
    found = {(p.group, p.name): p for p in installed()}
    assert {
        ("rolling.drivers", "process"),
        ("rolling.drivers", "ssh"),
        ("rolling.drivers", "simulated"),
        ("rolling.routers", "balancer"),
        ("rolling.routers", "haproxy"),
        ("rolling.checks", "http"),
        ("rolling.checks", "tcp"),
    } <= set(found)
    assert {p.distribution for (_, n), p in found.items() if n in {"process", "http"}} == {
        "rolling"
    }
    assert installed("rolling.metrics") == [p for p in installed() if p.group == "rolling.metrics"]
    assert tuple(sorted(GROUPS)) == GROUPS
    with pytest.raises(ConfigError, match="unknown group"):
        installed("rolling.widgets")
    fleet = build("rolling.drivers", "simulated", {"instances": 2, "version": "v5"})
    assert isinstance(fleet, SimulatedFleet)
    assert [i.version for i in fleet.instances] == ["v5", "v5"]


def test_a_third_party_plugin_is_listed_with_its_package(site: Path, tmp_path: Path) -> None:
    done = rolling("plugins", site=site, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "rolling.drivers:" in done.stdout
    toy = [line for line in done.stdout.splitlines() if line.strip().startswith("toy ")]
    assert toy == ["  toy          rolling_toy_plugin:toy_driver  (rolling-toy-plugin 0.3.1)"]
    listed = json.loads(rolling("plugins", "--json", site=site, cwd=tmp_path).stdout)
    assert {
        "group": "rolling.checks",
        "name": "toy-version",
        "value": "rolling_toy_plugin:version_check",
        "distribution": "rolling-toy-plugin",
        "version": "0.3.1",
    } in listed
    # Without the package on the path, it is gone from the list.
    assert "toy" not in rolling("plugins", site=tmp_path / "empty", cwd=tmp_path).stdout


def test_a_rollout_file_rolls_a_fleet_through_a_third_party_plugin(
    site: Path, tmp_path: Path
) -> None:
    state = tmp_path / "toy-fleet.json"
    (tmp_path / "toy.toml").write_text(
        f'[driver]\nplugin = "toy"\nstate = "{state}"\ninstances = 3\ndelay = 0.01\n'
        '[check]\nplugin = "toy-version"\nbad = "v3"\n'
        "[strategy]\nmax_unavailable = 1\n"
        "[readiness]\nperiod = 0.05\ndeadline = 1\n"
    )
    done = rolling("run", "toy.toml", "--to", "v2", site=site, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    fleet = json.loads(state.read_text())
    assert fleet["instances"] == {"t-0": "v2", "t-1": "v2", "t-2": "v2"}
    assert [call[0] for call in fleet["calls"]] == ["replace"] * 3
    # The plugin's check fails v3: the first instance goes back, and the run says so.
    done = rolling("run", "toy.toml", "--to", "v3", site=site, cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "rolled back (v3)" in done.stdout.splitlines()[-1]
    assert "v3 is bad" in done.stdout
    assert json.loads(state.read_text())["instances"] == {"t-0": "v2", "t-1": "v2", "t-2": "v2"}
    # Without the package, the file names a plugin that is not installed: bad configuration.
    missing = rolling("validate", "toy.toml", site=tmp_path / "empty", cwd=tmp_path)
    assert missing.returncode == 78
    assert "toy.toml:2: driver.plugin: no driver plugin named 'toy' is installed" in missing.stderr


def test_broken_and_clashing_plugins_are_configuration_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    project = tmp_path / "broken"
    (project / "broken_plugin").mkdir(parents=True)
    (project / "broken_plugin" / "__init__.py").write_text("NOT_CALLABLE = 3\n")
    (project / "pyproject.toml").write_text(
        '[project]\nname = "broken-plugin"\nversion = "1.0"\n'
        '[project.entry-points."rolling.drivers"]\n'
        'gone = "broken_plugin.nowhere:driver"\n'
        'three = "broken_plugin:NOT_CALLABLE"\n'
        'process = "broken_plugin:NOT_CALLABLE"\n'
    )
    install(project, site)
    monkeypatch.setattr(sys, "path", [str(site), *sys.path])
    with pytest.raises(ConfigError, match="cannot be imported") as caught:
        load("rolling.drivers", "gone")
    assert "install what it needs" in caught.value.fix
    with pytest.raises(ConfigError, match="is not callable"):
        load("rolling.drivers", "three")
    with pytest.raises(ConfigError, match="2 installed packages register the driver 'process'"):
        load("rolling.drivers", "process")
    with pytest.raises(ConfigError, match="is required by the router 'haproxy'") as required:
        build("rolling.routers", "haproxy", {})
    assert required.value.field == "socket"
    with pytest.raises(ConfigError, match="a list of ints") as status:
        build("rolling.checks", "http", {"expect_status": 200})  # not a list
    assert status.value.field == "expect_status"
    with pytest.raises(ConfigError, match="the router refused its settings"):
        build("rolling.routers", "haproxy", {"socket": 5})  # the factory's own TypeError

"""Canary and blue-green in rollout files: the library's objects, file:line errors, real runs."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import anyio
import jsonschema
import pytest

from helpers import CLI_EVENTS_SCHEMA, ROLLING, assert_file_error, free_port
from helpers import rolling_cli as rolling
from rolling import (
    Analysis,
    BlueGreen,
    Canary,
    Pause,
    RollingUpdate,
    SetCanaryScale,
    SetWeight,
)
from rolling.cli._file import load_file
from rolling.cli._run import plan_file
from rolling.plugins import build as real_build
from rolling.testing import SimulatedFleet

DOCS_EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"
SIMULATED = '[driver]\nplugin = "simulated"\ninstances = 4\n'
ROUTER = '[router]\nplugin = "haproxy"\nsocket = "haproxy.sock"\n'  # built, never reached
CANARY = (
    SIMULATED
    + ROUTER
    + '[strategy]\ntype = "canary"\nscale_down_delay = 5\npromotion = { max_unavailable = 1 }\n'
    + "[[steps]]\nset_weight = 25\n"
    + '[[steps]]\npause = "promote"\n'
    + '[[steps]]\nset_canary_scale = "50%"\n'
    + "[[steps]]\nset_canary_scale = 3\n"
    + '[[steps]]\nset_canary_scale = "match"\n'
    + "[[steps]]\nset_weight = 50\n"
)
METRICS = """\
[metrics.errors]
provider = "web"
failure = "> 0.05"
[metrics.errors.settings]
url = "http://127.0.0.1:9/ratio.json"
"""
BLUE_GREEN = (
    SIMULATED
    + '[strategy]\ntype = "blue-green"\npreview_replicas = 1\nauto_promote = false\n'
    + 'auto_promote_after = 60\nscale_down_delay = 2\npre_promotion = ["errors"]\n'
    + 'post_promotion = { metrics = ["errors"], bake = 3 }\n'
    + METRICS
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "deploy.toml"
    path.write_text(text)
    return path


# -- the library's objects ----------------------------------------------------------------


def test_a_canary_file_builds_the_canary_and_its_steps(tmp_path: Path) -> None:
    options = load_file(write(tmp_path, CANARY)).options
    assert options["strategy"] == Canary(
        promotion=RollingUpdate(max_unavailable=1), scale_down_delay=5
    )
    assert options["steps"] == [
        SetWeight(25),
        Pause(),
        SetCanaryScale(replicas="50%"),
        SetCanaryScale(replicas=3),
        SetCanaryScale(match_traffic_weight=True),
        SetWeight(50),
    ]


def test_promotion_false_is_all_at_once(tmp_path: Path) -> None:
    text = CANARY.replace("promotion = { max_unavailable = 1 }", "promotion = false")
    assert load_file(write(tmp_path, text)).options["strategy"] == Canary(scale_down_delay=5)


def test_a_blue_green_file_builds_its_analyses_from_the_metrics(tmp_path: Path) -> None:
    strategy = load_file(write(tmp_path, BLUE_GREEN)).options["strategy"]
    assert isinstance(strategy, BlueGreen)
    assert (strategy.preview_replicas, strategy.auto_promote) == (1, False)
    assert (strategy.auto_promote_after, strategy.scale_down_delay) == (60, 2)
    assert isinstance(strategy.pre_promotion, Analysis)
    assert isinstance(strategy.post_promotion, Analysis)
    assert [m.name for m in strategy.pre_promotion.metrics] == ["errors"]
    assert strategy.post_promotion.bake == 3
    # Each use builds its own provider (providers remember their last answer).
    assert strategy.pre_promotion.metrics[0].provider is not (
        strategy.post_promotion.metrics[0].provider
    )


@pytest.mark.parametrize(
    ("text", "line", "field", "words"),
    [
        (SIMULATED + '[strategy]\ntype = "canry"\n', 5, "strategy.type", "blue-green"),
        # A canary needs a router that can set weights; the fix names the file's way.
        (SIMULATED + '[strategy]\ntype = "canary"\n', None, "router", "[router] that can set"),
        # Named as the file writes them, at their line (not SetWeight's argument `percent`).
        (CANARY.replace("set_weight = 25", "set_weight = 150"), 12, "steps.0.set_weight", "100"),
        (CANARY.replace("set_weight = 25", 'set_weight = "x"'), 12, "steps.0.set_weight", "10"),
        (
            CANARY.replace("set_canary_scale = 3", "set_canary_scale = true"),
            18,
            "steps.3.set_canary_scale",
            '"match"',
        ),
        (
            CANARY.replace("set_canary_scale = 3", 'set_canary_scale = "lots"'),
            18,
            "steps.3.set_canary_scale",
            "percentage",
        ),
        (
            CANARY.replace("promotion = { max_unavailable = 1 }", "promotion = 3"),
            10,
            "strategy.promotion",
            "RollingUpdate",
        ),
        (
            CANARY.replace("{ max_unavailable = 1 }", "{ max_unavailble = 1 }"),
            10,  # the line of the inline table's key
            "strategy.promotion.max_unavailble",
            "max_unavailable",
        ),
        (
            CANARY.replace("scale_down_delay = 5", "scale_down_delay = -1"),
            9,
            "strategy.scale_down_delay",
            ">= 0",
        ),
        # Every key batches take is listed, sizes too.
        (
            SIMULATED + '[strategy]\ntype = "batches"\nsizes = [1]\nsurges = true\n',
            7,
            "strategy.surges",
            "sizes, pause, surge",
        ),
        # The balancer needs the instances' addresses: a simulated fleet has none.
        (SIMULATED + '[router]\nplugin = "balancer"\n', 4, "router", 'plugin = "process"'),
        # A canary's steps mean nothing to another strategy: the library says so.
        (SIMULATED + "[[steps]]\nset_weight = 10\n", 4, "steps.0", "Canary"),
        (
            BLUE_GREEN.replace('pre_promotion = ["errors"]', "pre_promotion = 3"),
            10,
            "strategy.pre_promotion",
            "list of metric names",
        ),
        (
            BLUE_GREEN.replace('pre_promotion = ["errors"]', 'pre_promotion = ["x"]'),
            10,
            "strategy.pre_promotion",
            "'x'",
        ),
        (
            BLUE_GREEN.replace("preview_replicas = 1", "preview_replicas = 0"),
            6,
            "strategy.preview_replicas",
            ">= 1",
        ),
    ],
)
def test_bad_strategies_name_the_file_line_key_and_fix(
    tmp_path: Path, text: str, line: int | None, field: str, words: str
) -> None:
    assert_file_error(write(tmp_path, text), line, field, words)


def test_plans_of_a_canary_and_a_blue_green(tmp_path: Path) -> None:
    canary = anyio.run(
        lambda: plan_file(load_file(write(tmp_path, CANARY)), "v2", history=None, estimate=2.0)
    )
    assert canary.window.startswith("canary:")
    assert "promoted 1 at a time (max_unavailable 1, max_surge 0)" in canary.window
    assert canary.steps[0] == "set the canary weight to 25 %"
    assert [end for _, _, end in canary.starts] == [2.0, 4.0, 6.0, 8.0]
    assert canary.waits_for_promote
    blue_green = anyio.run(
        lambda: plan_file(load_file(write(tmp_path, BLUE_GREEN)), "v2", history=None, estimate=2.0)
    )
    assert blue_green.window.startswith("blue-green: 1 new beside the old 4")
    assert [end for _, _, end in blue_green.starts] == [2.0] * 4
    assert blue_green.total == 4.0  # the old set is kept 2 s after the switch
    assert blue_green.waits_for_promote  # auto_promote = false


# -- real runs ----------------------------------------------------------------------------


def test_a_blue_green_run_switches_and_its_json_lines_follow_the_schema(tmp_path: Path) -> None:
    path = write(tmp_path, SIMULATED + '[strategy]\ntype = "blue-green"\nscale_down_delay = 0.1\n')
    done = rolling("run", path, "--to", "v2", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    validator: Any = jsonschema.Draft202012Validator(CLI_EVENTS_SCHEMA)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    for line in lines:
        validator.validate(line)
    shifts = [line for line in lines if line["event"] == "traffic_shifted"]
    assert [(s["reason"], s["percent"], s["new_instances"]) for s in shifts] == [
        ("switch", 100.0, 4)
    ]
    # The schema can fail: a traffic shift without its share does not pass.
    assert not validator.is_valid({k: v for k, v in shifts[0].items() if k != "achieved"})
    assert lines[-1]["outcome"] == "succeeded"


def demo_app_fleet(fleet_file: Path, *, instances: int, port: int, drain_timeout: float) -> str:
    """The tables of a fleet of demo-app processes behind the balancer, checked over HTTP."""
    command = json.dumps(
        [sys.executable, "-m", "rolling.demo.app", "--version", "{version}", "--port", "{port}"]
    )
    return (
        f'[driver]\nplugin = "process"\ncommand = {command}\ninstances = {instances}\n'
        f'state_file = "{fleet_file}"\ngrace = 2\n'
        f'[router]\nplugin = "balancer"\nport = {port}\ndrain_timeout = {drain_timeout}\n'
        '[check]\nplugin = "http"\ntimeout = 0.5\n'
        "[readiness]\nperiod = 0.1\ndeadline = 20\n"
    )


def test_a_canarys_json_lines_follow_the_schema(tmp_path: Path, fleet_file: Path) -> None:
    """Its steps (set_canary_scale, set_weight) come out typed, as the schema says."""
    path = write(
        tmp_path,
        demo_app_fleet(fleet_file, instances=2, port=free_port(), drain_timeout=1)
        + '[strategy]\ntype = "canary"\nscale_down_delay = 0.1\n'
        "[[steps]]\nset_canary_scale = 1\n[[steps]]\nset_weight = 25\n[[steps]]\npause = 0.1\n",
    )
    done = rolling("run", path, "--to", "v2", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    validator: Any = jsonschema.Draft202012Validator(CLI_EVENTS_SCHEMA)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    for line in lines:
        validator.validate(line)
    steps = [line["step"] for line in lines if line["event"] == "step_started"]
    assert steps == [
        {"type": "set_canary_scale", "replicas": 1, "match_traffic_weight": False},
        {"type": "set_weight", "percent": 25},
        {"type": "pause", "seconds": 0.1},
    ]
    # The schema can fail: a step without its type does not pass.
    untyped = next(line for line in lines if line["event"] == "step_started")
    assert not validator.is_valid({**untyped, "step": {"percent": 25}})
    assert lines[-1]["outcome"] == "succeeded"


def versions_answering(port: int, requests: int) -> Counter[str]:
    """Which versions answer ``requests`` requests through the balancer."""
    seen: Counter[str] = Counter()
    for _ in range(requests):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as answer:
            seen[answer.read().decode().split()[2]] += 1  # "hello from v1 on port N"
    return seen


def test_a_canary_of_real_processes_splits_traffic_then_promotes(
    tmp_path: Path, fleet_file: Path
) -> None:
    port = free_port()
    path = write(
        tmp_path,
        demo_app_fleet(fleet_file, instances=4, port=port, drain_timeout=2)
        + f'[journal]\npath = "{tmp_path / "deploy.journal"}"\n'
        '[strategy]\ntype = "canary"\n'
        '[[steps]]\nset_weight = 50\n[[steps]]\npause = "promote"\n',
    )
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [*ROLLING, "run", str(path), "--to", "v2"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            asked = rolling("status", path, "--json", cwd=tmp_path)
            if asked.returncode == 0:
                status = json.loads(asked.stdout)["status"]
                if status["step"] == {"type": "pause", "seconds": None}:
                    break
            time.sleep(0.2)
        assert status.get("step") == {"type": "pause", "seconds": None}, status
        assert status["traffic"] == 50.0
        text = rolling("status", path, cwd=tmp_path)
        assert "the new set gets 50.0 % of new requests" in text.stdout
        # Half the requests go to the two canaries, half to the four old instances.
        split = versions_answering(port, 200)
        assert set(split) == {"v1", "v2"}
        assert 70 <= split["v2"] <= 130, split
        promoted = rolling("promote", path, cwd=tmp_path)
        assert promoted.returncode == 0, promoted.stderr
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "traffic (step): 50 % to the new set asked, 50.0 % by weight (2 new" in out
    assert "traffic (switch): 100 %" in out
    assert "rolling run: succeeded (v2)" in out.splitlines()[-1]
    # The new set replaced the old one: four processes of v2 stand, and no v1.
    fleet = json.loads(fleet_file.read_text())["instances"]
    assert sorted(entry["version"] for entry in fleet) == ["v2"] * 4


@pytest.mark.parametrize("example", ["canary.toml", "blue-green.toml"])
def test_the_documented_examples_run_and_promote(
    tmp_path: Path, example: str, fleet_file: Path
) -> None:
    """docs/examples' files, on a free port, promoted with `rolling promote --full`."""
    text = (DOCS_EXAMPLES / example).read_text()
    text = text.replace("port = 8080", f"port = {free_port()}")
    text = text.replace("scale_down_delay = 30", "scale_down_delay = 0.5")
    text = text.replace("scale_down_delay = 10", "scale_down_delay = 0.5")
    text = text.replace(f'"{example.split(".", maxsplit=1)[0]}-fleet.json"', f'"{fleet_file}"')
    assert str(fleet_file) in text
    path = write(tmp_path, text)
    # The examples run `python`: the interpreter running the tests.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [*ROLLING, "run", str(path), "--to", "v2"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        promoted = rolling("promote", path, "--full", cwd=tmp_path)
        while promoted.returncode != 0 and time.monotonic() < deadline:
            time.sleep(0.3)
            promoted = rolling("promote", path, "--full", cwd=tmp_path)
        assert promoted.returncode == 0, promoted.stderr
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "control: promote" in out
    assert "traffic (switch): 100 %" in out
    fleet = json.loads(fleet_file.read_text())["instances"]
    assert sorted(entry["version"] for entry in fleet) == ["v2"] * 4


def test_a_router_plugin_that_builds_a_context_manager_is_asked_once_entered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A factory may return a context manager whose entered value is the router.

    Nothing can ask it for weights before it is entered, so the file is not refused for
    that: validate and plan take it, and `rolling run` asks the router itself.
    """
    import rolling.cli._file as file_module  # noqa: PLC0415 - the module under test

    built: list[object] = []

    def build(group: str, name: str, settings: Any) -> Any:
        if group != "rolling.routers":
            return real_build(group, name, settings)

        @contextlib.asynccontextmanager
        async def entered() -> AsyncGenerator[SimulatedFleet]:
            yield SimulatedFleet(1)

        built.append(entered())
        return built[-1]

    monkeypatch.setattr(file_module, "build", build)
    loaded = load_file(write(tmp_path, CANARY.replace('plugin = "haproxy"', 'plugin = "cm"')))
    assert loaded.router is not None
    assert loaded.router.built is built[0]
    plan = anyio.run(lambda: plan_file(loaded, "v2", history=None, estimate=1.0))
    assert plan.window.startswith("canary:")


class ReplaceOnly:
    """A driver that replaces in place and cannot launch: no canary can run on it."""

    async def list_instances(self) -> list[Any]:
        return []

    async def replace(self, instance: Any, version: str) -> Any:
        instance.version = version
        return instance


def test_validate_refuses_a_canary_on_a_driver_that_cannot_launch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file's driver, built and never entered, answers the library's own question."""
    import rolling.cli._file as file_module  # noqa: PLC0415 - the module under test

    def build(group: str, name: str, settings: Any) -> Any:
        if group == "rolling.drivers":
            return ReplaceOnly()
        return real_build(group, name, settings)

    monkeypatch.setattr(file_module, "build", build)
    path = write(tmp_path, CANARY)
    assert_file_error(path, 7, "strategy", "cannot launch() and terminate()")  # [strategy]
    # A surge asks the same question of the same driver.
    surge = SIMULATED + "[strategy]\nmax_surge = 1\n"
    assert_file_error(write(tmp_path, surge), 5, "strategy.max_surge", "cannot launch()")

"""The examples in docs/examples run and do what the prose around them says."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import rolling

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import ModuleType

pytestmark = pytest.mark.anyio

EXAMPLES = Path(__file__).parent.parent / "docs" / "examples"


def load_example(name: str) -> ModuleType:
    """Import ``docs/examples/<name>.py`` by path (the examples are scripts, not a package)."""
    module_name = f"rolling_docs_example_{name}"
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs, as a normal import would be (dataclasses look it up).
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


@pytest.fixture(scope="module")
def custom_driver() -> Iterator[ModuleType]:
    module = load_example("custom_driver")
    yield module
    sys.modules.pop(module.__name__, None)


async def test_in_place_rollout_updates_every_service_where_it_is(
    custom_driver: ModuleType,
) -> None:
    cluster = custom_driver.Cluster()
    before = set(cluster.services)

    result: rolling.RolloutResult = await custom_driver.in_place_rollout(cluster)

    assert result.status is rolling.RolloutStatus.SUCCEEDED, result.reason
    assert result.counts == {rolling.InstanceOutcome.UPDATED: len(before)}
    for item in result.instances:
        assert item.current_id == item.id  # in place: the same service, new software
        assert item.version == "v2"
        assert item.serving
    assert set(cluster.services) == before
    assert cluster.versions() == dict.fromkeys(before, "v2")
    assert cluster.in_traffic == before
    # The plain-object hooks were found and called.
    assert cluster.log[0] == f"rollout of v2 over {len(before)} services begins"
    assert cluster.log[-1] == "rollout of v2 ended succeeded"


async def test_elastic_rollout_replaces_every_service_with_a_new_one(
    custom_driver: ModuleType,
) -> None:
    cluster = custom_driver.Cluster()
    old_ids = set(cluster.services)

    result: rolling.RolloutResult = await custom_driver.elastic_rollout(cluster)

    assert result.status is rolling.RolloutStatus.SUCCEEDED, result.reason
    assert result.counts == {rolling.InstanceOutcome.UPDATED: len(old_ids)}
    new_ids = {item.current_id for item in result.instances}
    for item in result.instances:
        assert item.current_id is not None
        assert item.current_id != item.id
        assert item.version == "v2"
        assert item.serving
    assert not old_ids & set(cluster.services), "an old service was left running"
    assert set(cluster.services) == new_ids
    assert cluster.versions() == dict.fromkeys(new_ids, "v2")
    assert cluster.in_traffic == new_ids


async def test_elastic_rollout_never_serves_with_fewer_than_all(custom_driver: ModuleType) -> None:
    # max_unavailable=0, max_surge=1: watch the cluster on every event and check both bounds.
    cluster = custom_driver.Cluster()
    desired = len(cluster.services)
    serving: list[int] = []
    existing: list[int] = []

    def watch(_event: rolling.Event) -> None:
        serving.append(len(cluster.in_traffic))
        existing.append(len(cluster.services))

    driver = custom_driver.LaunchingDriver(cluster)
    rollout: rolling.Rollout[Any] = rolling.Rollout(
        driver,
        "v2",
        strategy=rolling.RollingUpdate(max_unavailable=0, max_surge=1),
        readiness=custom_driver.readiness(cluster),
        router=custom_driver.ClusterRouter(cluster),
        observers=[watch],
    )
    result = await rollout.run()

    assert result.status is rolling.RolloutStatus.SUCCEEDED, result.reason
    assert min(serving) >= desired
    assert max(existing) <= desired + 1


async def test_failing_rollout_rolls_back_to_v1_everywhere(custom_driver: ModuleType) -> None:
    cluster = custom_driver.Cluster()
    before = set(cluster.services)

    result: rolling.RolloutResult = await custom_driver.failing_rollout(cluster)

    assert result.status is rolling.RolloutStatus.ROLLED_BACK
    assert "max_failed" in result.reason
    assert "GET /healthz returned 500" in result.reason
    # Which services were touched depends on the backend's scheduling; none stays on v2.
    assert rolling.InstanceOutcome.FAILED in result.counts
    assert not {rolling.InstanceOutcome.UPDATED, rolling.InstanceOutcome.REVERT_FAILED} & set(
        result.counts
    )
    for item in result.instances:
        assert item.version == "v1"
        assert item.current_id == item.id
        assert item.serving
    assert set(cluster.services) == before
    assert cluster.versions() == dict.fromkeys(before, "v1")
    assert cluster.in_traffic == before


async def test_the_health_endpoint_reports_why(custom_driver: ModuleType) -> None:
    cluster = custom_driver.Cluster(names=("web-1",))
    endpoint = custom_driver.HealthEndpoint(cluster)
    service = cluster.services["web-1"]

    assert await endpoint.check(service) == rolling.HealthResult(healthy=True)
    cluster.services["web-1"] = custom_driver.Service(id="web-1", version="v3-broken")
    assert await endpoint.check(service) == rolling.HealthResult(
        healthy=False, reason="GET /healthz returned 500"
    )
    del cluster.services["web-1"]
    assert await endpoint.check(service) == rolling.HealthResult(
        healthy=False, reason="connection refused"
    )


def test_the_script_runs_and_prints_each_status() -> None:
    # Real time, real interpreter: the example as a reader would run it.
    completed = subprocess.run(  # noqa: S603 - runs our own example with our own interpreter
        [sys.executable, str(EXAMPLES / "custom_driver.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr
    assert completed.stderr == ""
    lines = completed.stdout.splitlines()
    assert len(lines) == 3, completed.stdout
    assert lines[0].startswith("in place: succeeded")
    assert lines[1].startswith("elastic: succeeded")
    assert lines[2].startswith("failing: rolled_back")


async def test_analysis_example_rolls_a_bad_release_back_and_keeps_a_good_one() -> None:
    example = load_example("analysis")
    try:
        bad, bad_versions = await example.roll("v2-bad")
        good, good_versions = await example.roll("v2-good")
    finally:
        sys.modules.pop(example.__name__, None)
    assert bad.status is rolling.RolloutStatus.ROLLED_BACK
    assert "error-ratio" in bad.reason
    assert bad_versions == {"v1": 5}
    assert bad.counts[rolling.InstanceOutcome.PENDING] == 3  # never touched
    assert good.status is rolling.RolloutStatus.SUCCEEDED, good.reason
    assert good_versions == {"v2-good": 5}
    assert good.verdict is not None
    assert good.verdict.outcome == "successful"


def test_flags_example_turns_the_flag_on_then_off() -> None:
    done = subprocess.run(  # noqa: S603 - our own interpreter and example
        [sys.executable, str(EXAMPLES / "flags.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.splitlines() == [
        "succeeded [('new-format', True, 'enable')]",
        "rolled_back [('new-format', False, 'disable')]",
        "off",
    ]


@pytest.mark.real_time
async def test_weights_example_gives_the_canaries_their_share_then_none() -> None:
    module = load_example("weights")
    try:
        split, stopped = await module.canary_share(25, 400)
    finally:
        sys.modules.pop(module.__name__, None)
    # Smooth weighted round robin is exact over whole cycles: 25 of every 100 connections.
    assert split == {"stable1": 150, "stable2": 150, "canary1": 50, "canary2": 50}
    assert stopped == {"stable1": 200, "stable2": 200}


async def test_coming_from_example_runs_each_tools_recipe() -> None:
    module = load_example("coming_from")
    try:
        results: list[rolling.RolloutResult] = await module.main()
        options = module.recipes()
    finally:
        sys.modules.pop(module.__name__, None)
    assert [r.status for r in results] == [rolling.RolloutStatus.SUCCEEDED] * 3
    assert all(len(r.instances) == 10 for r in results)
    # What the comments claim each recipe means, on the example's ten instances.
    kubernetes = options["kubernetes"]["strategy"].resolve(10)
    assert (kubernetes.floor, kubernetes.ceiling) == (10, 13)
    assert options["kubernetes"]["readiness"].min_ready == 2
    ecs = options["ecs"]["strategy"].resolve(10)
    assert (ecs.floor, ecs.ceiling) == (5, 15)
    assert options["ecs"]["failure"].circuit_breaker == 5
    assert options["ansible"]["strategy"].resolve(10) == [1, 3, 3, 3]


async def test_canary_example_shifts_5_25_50_then_switches_and_blue_green_switches_back() -> None:
    module = load_example("canary")
    try:
        result, shifts = await module.canary()
        good = await module.blue_green(error_ratio=0.0)
        bad = await module.blue_green(error_ratio=0.2)
    finally:
        sys.modules.pop(module.__name__, None)
    assert result.status is rolling.RolloutStatus.SUCCEEDED, result.reason
    assert {item.version for item in result.instances} == {"v2"}
    # What docs/canary.md quotes: whole weights that meet each share exactly here.
    assert shifts == [
        "step: asked 5 %, weights give 5.0 % (1 x 20 beside 95)",
        "step: asked 25 %, weights give 25.0 % (1 x 132 beside 99)",
        "step: asked 50 %, weights give 50.0 % (2 x 200 beside 100)",
        "switch: asked 100 %, weights give 100.0 % (4 x 100 beside 0)",
    ]
    assert good.status is rolling.RolloutStatus.SUCCEEDED, good.reason
    assert bad.status is rolling.RolloutStatus.ROLLED_BACK
    assert "error-ratio" in bad.reason
    assert {item.version for item in bad.instances} == {"v1"}

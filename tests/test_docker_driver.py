"""DockerDriver on a real Podman, through its Docker-compatible API, with real traffic.

A session-scoped Podman (storage of its own, an API service on a temporary
socket, images built offline from a static busybox: see
``podman_harness.py``) serves every test; each test labels its containers
``app=<unique>`` and removes them at the end. Without podman, runc or
busybox-static the tests are skipped with a hint; on CI (``CI=true``) that is
a failure.

The driver runs on asyncio only (aiodocker is built on asyncio), so these tests
run on asyncio; on trio, the one test here checks that the driver refuses to
start, with a clear error.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

import rolling
from helpers import free_port, http_get
from podman_harness import Podman, started_podman

try:
    import aiodocker
except ImportError:  # pragma: no cover - the tests extra installs it
    if os.environ.get("CI") == "true":
        pytest.fail("aiodocker is not installed: pip install 'rolling[docker]'")
    pytest.skip("aiodocker is not installed: pip install 'rolling[docker]'", allow_module_level=True)

from rolling.demo._load import LoadGenerator
from rolling.drivers.docker import (
    LEFTOVER_SUFFIX,
    ContainerExitedError,
    ContainerNotFoundError,
    DockerDriver,
    DockerDriverError,
    DockerInstance,
    EngineUnreachableError,
    ImageNotFoundError,
    PortInUseError,
)
from rolling.routers.balancer import Balancer

pytestmark = [pytest.mark.anyio, pytest.mark.real_time]

CONTROLLER = Path(__file__).parent / "docker_controller.py"
FLEET = 4


def web(version: str) -> str:
    return f"localhost/rolling-test/web:{version}"


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    """asyncio only: aiodocker does not run on trio (the trio test says so)."""
    return ("asyncio", {})


@pytest.fixture(scope="session")
def engine() -> Iterator[tuple[Podman, str]]:
    """A Podman and the ``unix://`` URL of its API service, for the whole session."""
    with started_podman(["v1", "v2"]) as started:
        yield started


@pytest.fixture
def podman(engine: tuple[Podman, str]) -> Podman:
    return engine[0]


@pytest.fixture
def url(engine: tuple[Podman, str]) -> str:
    return engine[1]


@pytest.fixture
def app(podman: Podman) -> Iterator[str]:
    """A label value of this test's own; its containers are removed afterwards."""
    name = f"t{uuid.uuid4().hex[:8]}"
    yield name
    ids = podman.run("ps", "-aq", "--filter", f"label=app={name}").split()
    if ids:
        podman.run("rm", "-f", "-t", "0", *ids)


async def make_fleet(
    url: str, app: str, count: int, version: str = "v1", *, data: Path | None = None
) -> list[str]:
    """``count`` containers ``<app>-<n>`` on ``web:<version>``, as a user would create them."""
    names = [f"{app}-{n}" for n in range(count)]
    async with aiodocker.Docker(url=url) as client:
        for name in names:
            host: dict[str, Any] = {
                "Init": True,  # busybox as PID 1 ignores SIGTERM; an init passes it on
                "PortBindings": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(free_port())}]},
            }
            if data is not None:
                host["Binds"] = [f"{data}:/data:ro"]
            config = {
                "Image": web(version),
                "Labels": {"app": app, "team": "blue"},
                "Env": ["GREETING=hello"],
                "ExposedPorts": {"8080/tcp": {}},
                "HostConfig": host,
            }
            container = await client.containers.create(config=config, name=name)
            await container.start()
    return names


def driver_for(url: str, app: str, **options: Any) -> DockerDriver:
    options.setdefault("grace", 2)
    return DockerDriver(f"app={app}", url=url, port=8080, **options)


def readiness(driver: DockerDriver) -> rolling.Readiness:
    return rolling.Readiness(
        check=driver.check, period=0.1, timeout=2, failure_threshold=3, deadline=20
    )


async def wait_ready(driver: DockerDriver, fleet: Sequence[DockerInstance]) -> None:
    with anyio.fail_after(20):
        for instance in fleet:
            while not (await driver.check(instance)).healthy:  # noqa: ASYNC110 - a real container
                await anyio.sleep(0.05)


@asynccontextmanager
async def traffic(fleet: Sequence[DockerInstance]) -> AsyncIterator[tuple[Balancer, LoadGenerator]]:
    """The built-in balancer in front of ``fleet``, under steady load until the block ends."""
    async with Balancer(drain_timeout=5) as lb, anyio.create_task_group() as tg:
        for instance in fleet:
            await lb.attach(instance)
        load = LoadGenerator(lb.host, lb.port, concurrency=4, timeout=5)
        tg.start_soon(load.run)
        with anyio.fail_after(10):
            while len(load.samples) < 20:  # noqa: ASYNC110 - wait for traffic to flow
                await anyio.sleep(0.05)
        yield lb, load
        load.stop()


def failures(load: LoadGenerator) -> list[str]:
    return [sample.error for sample in load.samples if not sample.ok]


async def inspect_all(url: str, app: str) -> list[dict[str, Any]]:
    async with aiodocker.Docker(url=url) as client:
        found = await client.containers.list(all=True, filters={"label": [f"app={app}"]})
        return [await c.show() for c in found]


# ------------------------------------------------------------------ rollouts


async def test_in_place_rollout_under_load_keeps_names_ports_and_settings(
    url: str, app: str, tmp_path: Path
) -> None:
    await make_fleet(url, app, FLEET, data=tmp_path)
    async with driver_for(url, app) as driver:
        fleet = await driver.list_instances()
        assert [i.id for i in fleet] == [f"{app}-{n}" for n in range(FLEET)]
        assert {i.version for i in fleet} == {web("v1")}
        await wait_ready(driver, fleet)
        async with traffic(fleet) as (lb, load):
            rollout: rolling.Rollout[DockerInstance] = rolling.Rollout(
                driver, web("v2"), router=lb, readiness=readiness(driver), hooks=driver
            )
            result = await rollout.run()
        assert result.status is rolling.RolloutStatus.SUCCEEDED, result
        assert failures(load) == []
        assert len(load.samples) > 50
        after = await driver.list_instances()
    assert [(i.id, i.port) for i in after] == [(i.id, i.port) for i in fleet]
    assert {i.version for i in after} == {web("v2")}
    assert all(i.container_id != j.container_id for i, j in zip(after, fleet, strict=True))
    for info in await inspect_all(url, app):
        config, host = info["Config"], info["HostConfig"]
        assert "GREETING=hello" in config["Env"]
        assert config["Labels"]["team"] == "blue"
        assert config["Labels"]["io.rolling.version"] == web("v2")
        assert config["Labels"]["io.rolling.rollout"] == driver.rollout_id
        assert host["Init"] is True
        assert any(bind.startswith(f"{tmp_path}:/data") for bind in host["Binds"])
    status, _, body = await http_get(after[0])
    assert (status, body) == (200, "v2\n")


async def test_elastic_rollout_with_surge_under_load(url: str, app: str, podman: Podman) -> None:
    await make_fleet(url, app, FLEET)
    async with driver_for(url, app) as driver:
        fleet = await driver.list_instances()
        await wait_ready(driver, fleet)
        async with traffic(fleet) as (lb, load):
            rollout: rolling.Rollout[DockerInstance] = rolling.Rollout(
                driver,
                web("v2"),
                strategy=rolling.RollingUpdate(max_unavailable=0, max_surge=1),
                router=lb,
                readiness=readiness(driver),
            )
            result = await rollout.run()
        assert result.status is rolling.RolloutStatus.SUCCEEDED, result
        assert failures(load) == []
        after = await driver.list_instances()
    assert len(after) == FLEET
    assert not {i.id for i in after} & {i.id for i in fleet}
    assert {i.version for i in after} == {web("v2")}
    ports = {i.port for i in after}
    assert len(ports) == FLEET
    assert not ports & {i.port for i in fleet}
    assert all(i.host == "127.0.0.1" for i in after)
    assert podman.count(f"app={app}") == sorted(i.id for i in after)


async def test_a_broken_image_is_rolled_back_with_its_exit_code_and_log(url: str, app: str) -> None:
    await make_fleet(url, app, FLEET)
    async with driver_for(url, app) as driver:
        fleet = await driver.list_instances()
        await wait_ready(driver, fleet)
        async with traffic(fleet) as (lb, load):
            rollout: rolling.Rollout[DockerInstance] = rolling.Rollout(
                driver, web("broken"), router=lb, readiness=readiness(driver), hooks=driver
            )
            result = await rollout.run()
        assert result.status is rolling.RolloutStatus.ROLLED_BACK, result
        assert failures(load) == []
        after = await driver.list_instances()
    assert {i.version for i in after} == {web("v1")}
    assert all(i.running for i in after)
    reasons = "\n".join(item.reason for item in result.instances)
    assert "exited with code 3" in reasons
    assert "fatal: DATABASE_URL is not set" in reasons
    assert not [i for i in after if i.id.endswith(LEFTOVER_SUFFIX)]


async def test_a_missing_image_is_refused_before_any_container_stops(url: str, app: str) -> None:
    await make_fleet(url, app, 2)
    async with driver_for(url, app, pull="if-missing") as driver:
        fleet = await driver.list_instances()
        rollout: rolling.Rollout[DockerInstance] = rolling.Rollout(
            driver, web("missing"), readiness=readiness(driver), hooks=driver
        )
        result = await rollout.run()
        assert result.status is rolling.RolloutStatus.HALTED
        assert "cannot pull image localhost/rolling-test/web:missing" in result.reason
        # Without the hook, replace() itself checks the image before it stops anything.
        with pytest.raises(ImageNotFoundError, match="cannot pull"):
            await driver.replace(fleet[0], web("missing"))
        assert list(await driver.list_instances()) == list(fleet)
        assert all(i.running for i in await driver.list_instances())
    async with driver_for(url, app, pull="never") as driver:
        with pytest.raises(ImageNotFoundError, match='pull policy is "never"'):
            await driver.ensure_images([web("missing")])
        await driver.ensure_images([web("v2")])  # there already: fine


async def test_engine_going_away_mid_rollout_then_journal_resume(
    app: str, podman: Podman, tmp_path: Path
) -> None:
    own = podman.service(f"api-{app}")  # a service of this test's own, on the same storage
    journal = tmp_path / "rollout.journal"
    await make_fleet(own, app, FLEET)
    replaced = anyio.Event()
    reasons: list[str] = []

    def observe(event: rolling.Event) -> None:
        if isinstance(event, rolling.InstancePhaseChanged):
            if event.phase is rolling.Phase.READY:
                replaced.set()
            reasons.append(event.reason)

    async def rollout_on(driver: DockerDriver) -> rolling.RolloutResult:
        rollout: rolling.Rollout[DockerInstance] = rolling.Rollout(
            driver,
            web("v2"),
            readiness=readiness(driver),
            failure=rolling.FailurePolicy(retries=100, backoff=rolling.Backoff(initial=0.2, factor=1)),
            journal=rolling.FileJournal(journal),
            observers=[observe],
        )
        return await rollout.run()

    async with driver_for(own, app) as driver:
        fleet = await driver.list_instances()
        await wait_ready(driver, fleet)
        with anyio.move_on_after(60):
            async with anyio.create_task_group() as tg:

                async def first() -> None:
                    await rollout_on(driver)

                tg.start_soon(first)
                await replaced.wait()
                podman.stop_service(own)
                with pytest.raises(EngineUnreachableError, match="cannot reach the container engine"):
                    await driver.list_instances()
                with anyio.fail_after(10):
                    # The rollout meets the error itself, and says so.
                    while not any("cannot reach the container engine" in r for r in reasons):  # noqa: ASYNC110 - events from the rollout
                        await anyio.sleep(0.05)
                tg.cancel_scope.cancel()  # the controller gives up; the journal is unfinished
    podman.service(f"api-{app}")
    async with driver_for(own, app) as driver:
        result = await rollout_on(driver)
        after = await driver.list_instances()
    assert result.status is rolling.RolloutStatus.SUCCEEDED, result
    assert {i.version for i in after} == {web("v2")}
    assert [i.id for i in after] == [i.id for i in fleet]
    assert podman.count(f"app={app}") == sorted(i.id for i in fleet)

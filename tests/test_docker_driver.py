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

import importlib.util
import os
import signal
import subprocess
import sys
import types
import uuid
from collections.abc import AsyncGenerator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

import rolling
from haproxy_harness import running_haproxy
from helpers import Node, free_port, http_get
from podman_harness import BASE, Podman, started_podman

try:
    import aiodocker
    import aiohttp
except ImportError:  # pragma: no cover - the tests extra installs it
    if os.environ.get("CI") == "true":
        pytest.fail("aiodocker is not installed: pip install 'rolling[docker]'")
    pytest.skip(
        "aiodocker is not installed: pip install 'rolling[docker]'", allow_module_level=True
    )

from rolling.demo._load import LoadGenerator
from rolling.drivers.docker import (
    ContainerExitedError,
    ContainerNotFoundError,
    DockerAPIError,
    DockerDriver,
    DockerDriverError,
    DockerInstance,
    EnginePermissionError,
    EngineUnreachableError,
    ImageNotFoundError,
    NameConflictError,
    PortInUseError,
    PullPolicy,
)
from rolling.drivers.docker import _spec as spec
from rolling.drivers.docker._driver import LEFTOVER_SUFFIX
from rolling.drivers.docker._errors import engine_error
from rolling.routers.balancer import Balancer

pytestmark = [pytest.mark.anyio, pytest.mark.real_time]

CONTROLLER = Path(__file__).parent / "docker_controller.py"
EXAMPLES = Path(__file__).parent.parent / "docs" / "examples"
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


def example() -> types.ModuleType:
    """``docs/examples/containers.py``, imported by path (the examples are scripts)."""
    name = "rolling_docs_example_containers"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, EXAMPLES / "containers.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name]


def client_for(url: str) -> Any:
    """An aiodocker client (typed Any: its annotations leave many parameters untyped)."""
    return aiodocker.Docker(url=url)


async def make_fleet(
    url: str, app: str, count: int, version: str = "v1", *, data: Path | None = None
) -> list[str]:
    """``count`` containers ``<app>-<n>`` on ``web:<version>``, as a user would create them."""
    names = [f"{app}-{n}" for n in range(count)]
    async with client_for(url) as client:
        for name in names:
            host: dict[str, Any] = {
                "Init": True,  # busybox as PID 1 ignores SIGTERM; an init passes it on
                "PortBindings": {
                    "8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(free_port())}]
                },
            }
            if data is not None:
                host["Binds"] = [f"{data}:/data:ro"]
            config: dict[str, Any] = {
                "Image": web(version),
                "Labels": {"app": app, "team": "blue"},
                "Env": ["GREETING=hello"],
                "ExposedPorts": {"8080/tcp": {}},
                "HostConfig": host,
            }
            container = await client.containers.create(config=config, name=name)
            await container.start()
    return names


def address(instance: DockerInstance) -> Node:
    """Where ``instance`` is published, for helpers that want a host and a port."""
    assert instance.host is not None
    assert instance.port is not None
    return Node(instance.id, instance.port, instance.host)


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
async def traffic(
    fleet: Sequence[DockerInstance],
) -> AsyncGenerator[tuple[Balancer, LoadGenerator], None]:
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
    async with client_for(url) as client:
        found = await client.containers.list(all=True, filters={"label": [f"app={app}"]})
        return [await c.show() for c in found]


# ------------------------------------------------------------------ rollouts


async def test_in_place_rollout_under_load_keeps_names_ports_and_settings(
    url: str, app: str, tmp_path: Path
) -> None:
    """The rollout is the one docs/examples/containers.py runs."""
    await make_fleet(url, app, FLEET, data=tmp_path)
    async with driver_for(url, app) as driver:
        fleet = await driver.list_instances()
        assert [i.id for i in fleet] == [f"{app}-{n}" for n in range(FLEET)]
        assert {i.version for i in fleet} == {web("v1")}
        await wait_ready(driver, fleet)
        async with traffic(fleet) as (lb, load):
            result = await example().roll(url, f"app={app}", web("v2"), router=lb)
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
        assert len(config["Labels"]["io.rolling.rollout"]) == 12  # the example's driver's
        assert host["Init"] is True
        assert any(bind.startswith(f"{tmp_path}:/data") for bind in host["Binds"])
    status, _, body = await http_get(address(after[0]))
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


async def test_in_place_rollout_behind_haproxy(url: str, app: str, tmp_path: Path) -> None:
    await make_fleet(url, app, 2)
    async with driver_for(url, app) as driver:
        fleet = await driver.list_instances()
        await wait_ready(driver, fleet)
        servers = [(i.id, address(i).host, address(i).port) for i in fleet]
        async with running_haproxy(tmp_path / "haproxy", servers, check_path="/") as haproxy:
            host, port = haproxy.frontend
            load = LoadGenerator(host, port, concurrency=4, timeout=5)
            result: rolling.RolloutResult | None = None
            async with anyio.create_task_group() as tg:
                tg.start_soon(load.run)
                rollout: rolling.Rollout[DockerInstance] = rolling.Rollout(
                    driver,
                    web("v2"),
                    router=haproxy.router(check=driver.check),
                    readiness=readiness(driver),
                )
                result = await rollout.run()
                load.stop()
        assert result is not None
        assert result.status is rolling.RolloutStatus.SUCCEEDED, result
        assert failures(load) == []
        assert len(load.samples) > 20
        assert {i.version for i in await driver.list_instances()} == {web("v2")}


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
    async with driver_for(url, app, pull="never") as driver:
        # Without the hook, replace() itself checks the image before it stops anything.
        with pytest.raises(ImageNotFoundError, match='pull policy is "never"'):
            await driver.replace(fleet[0], web("missing"))
        assert list(await driver.list_instances()) == list(fleet)
        assert all(i.running for i in await driver.list_instances())
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
            failure=rolling.FailurePolicy(
                retries=100, backoff=rolling.Backoff(initial=0.2, factor=1)
            ),
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
                with pytest.raises(
                    EngineUnreachableError, match="cannot reach the container engine"
                ):
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


async def test_controller_killed_mid_rollout_then_resumed_leaks_no_container(
    url: str, app: str, podman: Podman, tmp_path: Path
) -> None:
    await make_fleet(url, app, FLEET)
    journal = tmp_path / "rollout.journal"
    argv = [sys.executable, str(CONTROLLER), url, app, str(journal), web("v2"), "1"]
    mine = {"label": [f"app={app}"]}
    controller = await anyio.open_process(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    async with controller:
        try:
            # Killed the moment a surge container exists (created, maybe not reported yet).
            async with client_for(url) as client:
                with anyio.fail_after(30):
                    while len(await client.containers.list(all=True, filters=mine)) <= FLEET:  # noqa: ASYNC110 - another process's containers
                        await anyio.sleep(0.01)
        finally:
            controller.send_signal(signal.SIGKILL)
            await controller.wait()
    assert controller.returncode == -signal.SIGKILL
    during = podman.count(f"app={app}")
    assert len(during) > FLEET  # the surge container the killed controller left behind
    async with driver_for(url, app) as driver:
        rollout: rolling.Rollout[DockerInstance] = rolling.Rollout(
            driver,
            web("v2"),
            strategy=rolling.RollingUpdate(max_unavailable=1, max_surge=1),
            readiness=readiness(driver),
            journal=rolling.FileJournal(journal),
        )
        result = await rollout.run()
        after = await driver.list_instances()
    assert result.status is rolling.RolloutStatus.SUCCEEDED, result
    assert {i.version for i in after} == {web("v2")}
    assert podman.count(f"app={app}") == sorted(i.id for i in after)
    assert len(after) == FLEET


async def test_a_taken_port_fails_the_replace_and_gives_the_old_container_back(
    url: str, app: str
) -> None:
    await make_fleet(url, app, 1)
    async with driver_for(url, app) as driver:
        (old,) = await driver.list_instances()
        assert old.port is not None
        await wait_ready(driver, [old])
        # Another program takes the container's port the moment it stops.
        async with client_for(url) as client:
            await client.containers.container(old.id).stop(t=1)
        with anyio.fail_after(5):
            while True:
                try:
                    taker = await anyio.create_tcp_listener(
                        local_host="127.0.0.1", local_port=old.port
                    )
                    break
                except OSError:
                    await anyio.sleep(0.05)
        async with taker:
            with pytest.raises(PortInUseError, match="address already in use"):
                await driver.replace(old, web("v2"))
            (back,) = await driver.list_instances()
            assert (back.id, back.container_id) == (old.id, old.container_id)
            assert (back.version, back.running) == (old.version, False)
            health = await driver.check(back)
            assert not health.healthy
            assert "exited with code" in health.reason
        new = await driver.replace(back, web("v2"))
        assert (new.id, new.port, new.version, new.running) == (old.id, old.port, web("v2"), True)


async def test_list_instances_repairs_what_a_killed_replace_left(url: str, app: str) -> None:
    names = await make_fleet(url, app, 2)
    async with client_for(url) as client:
        # Killed after setting the old container aside, before its successor was created.
        await client.containers.container(names[0]).stop(t=1)
        await client.containers.container(names[0]).rename(names[0] + LEFTOVER_SUFFIX)
        # Killed after the successor started, before the old one was removed.
        await client.containers.container(names[1]).stop(t=1)
        await client.containers.container(names[1]).rename(names[1] + LEFTOVER_SUFFIX)
        config = (await client.containers.container(names[1] + LEFTOVER_SUFFIX).show())["Config"]
        body = {"Image": web("v2"), "Labels": config["Labels"], "HostConfig": {"Init": True}}
        await (await client.containers.create(config=body, name=names[1])).start()
    async with driver_for(url, app) as driver:
        fleet = await driver.list_instances()
        assert [(i.id, i.version, i.running) for i in fleet] == [
            (names[0], web("v1"), False),
            (names[1], web("v2"), True),
        ]
        assert sorted(c["Name"].lstrip("/") for c in await inspect_all(url, app)) == names
        replaced = await driver.replace(fleet[0], web("v2"))
        assert replaced.running
        assert replaced.port == fleet[0].port


async def test_terminate_launch_and_misuse(url: str, app: str, podman: Podman) -> None:
    async with driver_for(url, app) as driver:
        with pytest.raises(DockerDriverError, match="no container matches"):
            await driver.launch(web("v1"))
    await make_fleet(url, app, 1)
    async with driver_for(url, app, name_prefix=f"{app}-new", template=f"{app}-0") as driver:
        launched = await driver.launch(web("v2"))
        assert launched.id.startswith(f"{app}-new-")
        assert launched.version == web("v2")
        await wait_ready(driver, [launched])
        assert (await http_get(address(launched)))[2] == "v2\n"
        await driver.terminate(launched)
        await driver.terminate(launched)  # already gone: fine
        # One that exits as it starts is removed before launch() raises; one that exits a
        # moment later is returned (its health check says why), and terminated here.
        for _ in range(3):
            try:
                crashed = await driver.launch(web("broken"))
            except ContainerExitedError as exc:
                assert "exited with code 3" in str(exc)  # noqa: PT017 - either outcome is fine
            else:
                await driver.terminate(crashed)
        assert podman.count(f"app={app}") == [f"{app}-0"]
        with pytest.raises(ContainerNotFoundError, match="no longer exists"):
            await driver.replace(launched, web("v1"))
        health = await driver.check(launched)
        assert (health.healthy, health.reason) == (False, f"container {launched.id} does not exist")
        assert driver.podman
    async with driver_for(url, app, template="nothing-here") as driver:
        with pytest.raises(ContainerNotFoundError, match="template container nothing-here"):
            await driver.launch(web("v1"))
    with pytest.raises(DockerDriverError, match="needs an open driver"):
        await driver_for(url, app).list_instances()
    with pytest.raises(DockerDriverError, match="driver is closed"):
        await driver.list_instances()
    with pytest.raises(DockerDriverError, match="entered only once"):
        await driver.__aenter__()


async def test_a_crashing_container_fails_replace_with_its_exit_code(url: str, app: str) -> None:
    await make_fleet(url, app, 1)
    async with driver_for(url, app) as driver:
        (old,) = await driver.list_instances()
        # A replace() that sees the container stop as it starts raises at once; one that does
        # not is caught by check(). Either way the reason has the exit code and the log.
        exited: ContainerExitedError | None = None
        try:
            broken = await driver.replace(old, web("broken"))
        except ContainerExitedError as exc:
            exited = exc
            (broken,) = await driver.list_instances()
        if exited is not None:
            assert exited.exit_code == 3
            assert "DATABASE_URL" in exited.logs
        with anyio.fail_after(10):
            while (health := await driver.check(broken)).healthy:  # noqa: ASYNC110 - a real container
                await anyio.sleep(0.05)
        assert "exited with code 3" in health.reason
        assert "fatal: DATABASE_URL is not set" in health.reason


# Another web image: its own WORKDIR, STOPSIGNAL and HEALTHCHECK, none of which v1 sets.
OTHER_DEFAULTS_IMAGE = """\
FROM {base}
RUN mkdir -p /www && echo v3 > /www/index.html
WORKDIR /www
STOPSIGNAL SIGINT
HEALTHCHECK --interval=20s --timeout=3s --retries=2 \\
  CMD wget -q -O /dev/null http://127.0.0.1:8080/index.html || exit 7
CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]
"""


async def test_the_new_image_defaults_apply_unless_the_user_set_them(
    url: str, app: str, podman: Podman
) -> None:
    """docs/containers.md: the working directory, stop signal and HEALTHCHECK the user set."""
    other = f"localhost/rolling-test/web:{app}"
    podman.build(other, OTHER_DEFAULTS_IMAGE.format(base=BASE))
    plain, custom = await make_fleet(url, app, 2)
    user_check = {
        "Test": ["CMD-SHELL", "wget -q -O /dev/null http://127.0.0.1:8080/ || exit 5"],
        "Interval": 10_000_000_000,
        "Timeout": 4_000_000_000,
        "Retries": 4,
    }
    async with client_for(url) as client:
        await client.containers.container(custom).delete(force=True)
        port = str(free_port())
        config: dict[str, Any] = {
            "Image": web("v1"),
            "Labels": {"app": app},
            "WorkingDir": "/etc",
            "StopSignal": "SIGUSR1",
            "Healthcheck": user_check,
            "ExposedPorts": {"8080/tcp": {}},
            "HostConfig": {
                "Init": True,
                "PortBindings": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": port}]},
            },
        }
        await (await client.containers.create(config=config, name=custom)).start()
    async with driver_for(url, app) as driver:
        fleet = {i.id: i for i in await driver.list_instances()}
        for instance in fleet.values():
            replaced = await driver.replace(instance, other)
            await wait_ready(driver, [replaced])
    found = {info["Name"].lstrip("/"): info["Config"] for info in await inspect_all(url, app)}
    assert found[plain]["WorkingDir"] == "/www"
    assert found[plain]["StopSignal"] in {"2", "SIGINT"}
    assert found[plain]["Healthcheck"]["Test"][-1].endswith("exit 7")
    assert found[plain]["Healthcheck"]["Retries"] == 2
    assert found[custom]["WorkingDir"] == "/etc"
    assert found[custom]["StopSignal"] in {"10", "SIGUSR1"}
    assert found[custom]["Healthcheck"] == user_check


async def test_an_unreachable_engine_is_a_clear_error_on_entry(tmp_path: Path) -> None:
    with pytest.raises(EngineUnreachableError, match="cannot reach the container engine"):
        async with DockerDriver("app=x", url=f"unix://{tmp_path}/no.sock"):
            pass


@pytest.mark.parametrize("anyio_backend", [("trio", {})])
async def test_on_trio_the_driver_refuses_to_start() -> None:
    driver = DockerDriver("app=x", url="unix:///nonexistent.sock")  # building it is fine
    with pytest.raises(DockerDriverError, match="runs on asyncio only"):
        async with driver:
            pass


# ------------------------------------------------- our own logic, no engine


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"selector": ""}, "DockerDriver.selector"),
        ({"selector": "app = web"}, "DockerDriver.selector"),
        ({"selector": {}}, "DockerDriver.selector"),
        ({"selector": 3}, "DockerDriver.selector"),
        ({"url": ""}, "DockerDriver.url"),
        ({"image": "web:latest"}, "DockerDriver.image"),
        ({"image": 3}, "DockerDriver.image"),
        ({"version_label": "app.version"}, "DockerDriver.image"),
        ({"port": 0}, "DockerDriver.port"),
        ({"port": "http"}, "DockerDriver.port"),
        ({"port": True}, "DockerDriver.port"),
        ({"grace": -1}, "DockerDriver.grace"),
        ({"pull": "sometimes"}, "DockerDriver.pull"),
        ({"env": {"A": 1}}, "DockerDriver.env"),
        ({"overrides": []}, "DockerDriver.overrides"),
        ({"log_lines": -1}, "DockerDriver.log_lines"),
        ({"api_timeout": 0}, "DockerDriver.api_timeout"),
        ({"rollout_id": ""}, "DockerDriver.rollout_id"),
    ],
)
def test_bad_settings_are_config_errors(options: dict[str, Any], field: str) -> None:
    selector = options.pop("selector", "app=web")
    with pytest.raises(rolling.ConfigError) as caught:
        DockerDriver(selector, **options)
    assert caught.value.field == field


def test_good_settings() -> None:
    driver = DockerDriver(
        {"app": "web", "tier": "front"},
        version_label="app.version",
        image=lambda v: f"web:{v}",
        port="8080/udp",
        pull=PullPolicy.ALWAYS,
        rollout_id="deploy-1",
    )
    assert driver.rollout_id == "deploy-1"
    assert driver._labels == ["app=web", "tier=front"]
    assert driver._port == "8080/udp"
    assert driver._prefix == "web"
    assert driver._image_for("2") == "web:2"
    assert DockerDriver("app", port=8080)._prefix == "app"
    assert DockerDriver("app", image="r/web:{version}")._image_for("3") == "r/web:3"
    with pytest.raises(DockerDriverError, match="non-empty str"):
        driver._image_for("")
    assert len(DockerDriver("app").rollout_id) == 12


def _connect_error(cause: OSError) -> aiodocker.DockerError:
    error = aiodocker.DockerError(900, "Cannot connect to Docker Engine via unix:///x.sock")
    # As aiohttp raises it (from the OSError), and aiodocker re-raises it (in its except block).
    key: Any = types.SimpleNamespace(host="localhost", port=80, ssl=False)
    connector = aiohttp.ClientConnectorError(key, cause)
    connector.__cause__ = cause
    error.__context__ = connector
    return error


@pytest.mark.parametrize(
    ("exc", "kind", "text"),
    [
        (
            _connect_error(FileNotFoundError(2, "No such file")),
            EngineUnreachableError,
            "cannot reach",
        ),
        (
            _connect_error(PermissionError(13, "Permission denied")),
            EnginePermissionError,
            "permission denied on",
        ),
        (aiohttp.ServerDisconnectedError(), EngineUnreachableError, "cannot reach"),
        (TimeoutError(), EngineUnreachableError, "did not answer in time"),
        (aiodocker.DockerError(404, "No such image: web:3"), ImageNotFoundError, "No such image"),
        (
            aiodocker.DockerError(404, "No such container: web-1"),
            ContainerNotFoundError,
            "No such container",
        ),
        (
            aiodocker.DockerError(409, "Conflict. The container name is in use"),
            NameConflictError,
            "in use",
        ),
        (
            aiodocker.DockerError(500, 'the container name "web-1" is already in use'),
            NameConflictError,
            "web-1",
        ),
        (
            aiodocker.DockerError(500, "Bind for 127.0.0.1:80 failed: port is already allocated"),
            PortInUseError,
            "already allocated",
        ),
        (
            aiodocker.DockerError(500, "listen tcp4 127.0.0.1:80: bind: address already in use"),
            PortInUseError,
            "address already",
        ),
        (
            aiodocker.DockerError(500, "open /etc/x: permission denied"),
            EnginePermissionError,
            "permission denied",
        ),
        (
            aiodocker.DockerError(400, "bad parameter"),
            DockerAPIError,
            "answered 400: bad parameter",
        ),
        (ValueError("odd JSON"), DockerDriverError, "ValueError: odd JSON"),
    ],
)
def test_engine_errors_are_named(exc: Exception, kind: type[Exception], text: str) -> None:
    error = engine_error(exc, "create web-1", "unix:///x.sock")
    assert type(error) is kind
    assert text in str(error)
    assert str(error).startswith("create web-1: ")
    assert isinstance(error, rolling.RollingError)
    assert engine_error(error, "again", "unix:///x.sock") is error


def test_a_new_container_copies_what_the_user_set_not_the_image_defaults() -> None:
    old: dict[str, Any] = {
        "Id": "0123456789abcdef",
        "Image": "sha256:old",
        "Config": {
            "Image": "web:1",
            "Hostname": "0123456789ab",
            "Env": ["PATH=/bin", "container=podman", "HOSTNAME=x", "MODE=prod", "DEBUG=1"],
            "Cmd": ["serve"],
            "Entrypoint": ["/init"],
            "WorkingDir": "/app",
            "Labels": {"app": "web", "built-by": "ci", "team": "blue"},
            "ExposedPorts": {"8080/tcp": {}},
            "Healthcheck": {"Test": ["CMD", "true"]},
        },
        "HostConfig": {
            "PortBindings": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8001"}]},
            "Binds": ["data:/data"],
            "Init": True,
            "Runtime": "oci",
            "Memory": 0,
        },
    }
    image: dict[str, Any] = {
        "Config": {
            "Env": ["PATH=/bin", "DEBUG=0"],
            "Cmd": ["serve"],
            "Entrypoint": ["/init"],
            "WorkingDir": "/srv",
            "Labels": {"built-by": "ci"},
            "Healthcheck": {"Test": ["CMD", "true"]},
        }
    }
    body = spec.new_body(
        old,
        image,
        image="web:2",
        labels={"io.rolling.version": "web:2"},
        env={"EXTRA": "yes"},
        overrides={"HostConfig": {"Memory": 64}, "User": "app"},
    )
    assert body == {
        "Image": "web:2",
        "WorkingDir": "/app",  # differs from the image's: the user set it
        "ExposedPorts": {"8080/tcp": {}},
        "Env": ["MODE=prod", "DEBUG=1", "EXTRA=yes"],
        "Labels": {"app": "web", "team": "blue", "io.rolling.version": "web:2"},
        "HostConfig": {
            "PortBindings": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8001"}]},
            "Binds": ["data:/data"],
            "Init": True,
            "Memory": 64,
        },
        "User": "app",
    }


# What Podman 4 answers through its Docker-compatible API: a container of an image that sets
# no WORKDIR and no STOPSIGNAL reports "/" and "15"; a HEALTHCHECK is reported with the engine's
# defaults filled in; the image's inspect has no Healthcheck at all (only libpod's has one).
PODMAN_CHECK = {"Test": ["CMD-SHELL", "wget -q -O /dev/null http://127.0.0.1:8080/ || exit 1"]}
PODMAN_CHECK_FILLED = {**PODMAN_CHECK, "Interval": 30_000_000_000, "Timeout": 30_000_000_000}


def podman_container(**config: Any) -> dict[str, Any]:
    return {
        "Id": "0123456789abcdef",
        "Image": "sha256:old",
        "Config": {
            "Hostname": "0123456789ab",
            "Env": ["PATH=/bin", "container=podman", "HOSTNAME=0123456789ab"],
            "Cmd": ["httpd", "-f"],
            "Entrypoint": [],
            "WorkingDir": "/",
            "StopSignal": "15",
            "User": "",
            "Labels": {"app": "web"},
            "Healthcheck": PODMAN_CHECK_FILLED,
            **config,
        },
        "HostConfig": {"Init": True},
    }


PODMAN_IMAGE: dict[str, Any] = {
    "Config": {
        "Env": ["PATH=/bin"],
        "Cmd": ["httpd", "-f"],
        "Entrypoint": [],
        "WorkingDir": "",
        "Labels": {"io.buildah.version": "1.28.2"},
    },
    "ContainerConfig": {"Hostname": "b43e0b9186a", "WorkingDir": "", "Cmd": None},
}


def podman_image(**config: Any) -> dict[str, Any]:
    return {**PODMAN_IMAGE, "Config": {**PODMAN_IMAGE["Config"], **config}}


def copied(old: dict[str, Any], image: dict[str, Any], *, podman: bool = True) -> dict[str, Any]:
    body = spec.new_body(old, image, image="web:3", labels={}, env={}, overrides={}, podman=podman)
    return {key: body[key] for key in spec.IMAGE_DEFAULTED if key in body}


@pytest.mark.parametrize(
    "image",
    [
        PODMAN_IMAGE,  # the Docker-compatible answer only: its HEALTHCHECK cannot be told
        {**PODMAN_IMAGE, "Healthcheck": PODMAN_CHECK},  # with libpod's merged in (no defaults)
    ],
    ids=["compat", "with-libpod"],
)
def test_podman_defaults_are_not_taken_for_user_settings(image: dict[str, Any]) -> None:
    """Podman's read-backs of "nothing set" leave the new image's own defaults in force."""
    assert copied(podman_container(), image) == {}
    # The same signal, named or numbered, either side; "" and "/" are the same directory.
    same = podman_container(StopSignal="2", WorkingDir="/www/")
    defaults = {"StopSignal": "SIGINT", "WorkingDir": "/www"}
    assert copied(same, {**image, "Config": {**image["Config"], **defaults}}) == {}
    for signal_name in ("SIGTERM", "TERM", "term", 15):
        assert copied(podman_container(StopSignal=signal_name), image) == {}


def test_podman_user_settings_are_copied() -> None:
    user_check = {"Test": ["CMD", "true"], "Interval": 1_000_000_000, "Retries": 2}
    old = podman_container(WorkingDir="/data", StopSignal="10", Healthcheck=user_check)
    with_libpod = {**PODMAN_IMAGE, "Healthcheck": PODMAN_CHECK}
    expected = {"WorkingDir": "/data", "StopSignal": "SIGUSR1", "Healthcheck": user_check}
    assert copied(old, with_libpod) == expected
    # An image with no HEALTHCHECK (libpod leaves the key out; the driver merges None).
    assert copied(podman_container(), {**PODMAN_IMAGE, "Healthcheck": None}) == {
        "Healthcheck": PODMAN_CHECK_FILLED
    }
    # Without libpod's answer a HEALTHCHECK cannot be told from the image's: not copied.
    assert "Healthcheck" not in copied(old, PODMAN_IMAGE)
    # "/" set over an image's WORKDIR is the user's choice.
    image = podman_image(WorkingDir="/www", StopSignal="SIGINT")
    assert copied(podman_container(), image) == {"WorkingDir": "/", "StopSignal": "SIGTERM"}


def test_docker_reports_an_image_healthcheck_when_there_is_one() -> None:
    """On Docker an image inspect with no Config.Healthcheck means the image has none."""
    old = {"Config": {"Healthcheck": {"Test": ["CMD", "true"]}, "StopSignal": "SIGTERM"}}
    assert copied(old, {"Config": {}}, podman=False) == {"Healthcheck": {"Test": ["CMD", "true"]}}
    image = {"Config": {"Healthcheck": {"Test": ["CMD", "true"], "Retries": 3}}}
    assert copied(old, image, podman=False) == {}


ANY_IP = "0.0.0.0"  # noqa: S104 - an address read back from an engine, never bound


def test_published_ports_and_addresses() -> None:
    running: dict[str, Any] = {
        "NetworkSettings": {"Ports": {"8080/tcp": [{"HostIp": ANY_IP, "HostPort": "8001"}]}},
        "HostConfig": {"PortBindings": {"8080/tcp": [{"HostIp": "", "HostPort": ""}]}},
    }
    stopped: dict[str, Any] = {
        "NetworkSettings": {"Ports": {}},
        "HostConfig": {
            "PortBindings": {
                "8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8002"}],
                "9090/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}],
            }
        },
    }
    assert spec.published(running) == {"8080/tcp": [(ANY_IP, 8001)]}
    assert spec.published(stopped) == {"8080/tcp": [("127.0.0.1", 8002)]}
    assert spec.address(spec.published(running), None, "127.0.0.1") == ("127.0.0.1", 8001)
    assert spec.address(spec.published(stopped), "9090/tcp", "127.0.0.1") is None
    assert spec.address({}, None, "127.0.0.1") is None
    two = {"80/tcp": [("10.0.0.1", 80)], "443/tcp": [("10.0.0.1", 443)]}
    assert spec.address(two, None, "127.0.0.1") is None
    assert spec.address(two, "443/tcp", "127.0.0.1") == ("10.0.0.1", 443)
    body = spec.with_ports({"HostConfig": {"Init": True}}, {"8080/tcp": [("127.0.0.1", 9001)]})
    assert body == {
        "HostConfig": {
            "Init": True,
            "PortBindings": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "9001"}]},
        },
        "ExposedPorts": {"8080/tcp": {}},
    }

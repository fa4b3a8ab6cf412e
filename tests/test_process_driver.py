"""ProcessDriver and the demo app: real processes, real sockets, real time, both backends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import anyio
import pytest

import rolling
from helpers import (
    CANCEL_DELAYS,
    LOOPBACK,
    free_port,
    gone_or_zombie,
    http_get,
    launch_and_replace_cancelled,
    probe,
    processes_with,
    wait_healthy,
)
from rolling.drivers.process import ProcessDriver, ProcessDriverError, ProcessInstance

pytestmark = [pytest.mark.anyio, pytest.mark.real_time]

STARTUP_DELAY = "0.2"
IGNORE_SIGTERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
    " print('ignoring SIGTERM', flush=True); time.sleep(60)"
)


def demo(latency_ms: int = 20) -> Callable[[str, int], Sequence[str]]:
    def command(version: str, port: int) -> Sequence[str]:
        return [
            sys.executable,
            "-m",
            "rolling.demo.app",
            "--version",
            version,
            "--port",
            str(port),
            "--startup-delay",
            STARTUP_DELAY,
            "--latency-ms",
            str(latency_ms),
        ]

    return command


GRANDCHILD = (
    "import signal, subprocess, sys, time;"
    " child = subprocess.Popen([sys.executable, '-c', sys.argv[1]]);"
    " print('grandchild', child.pid, flush=True); time.sleep(60)"
)


def with_stubborn_grandchild(version: str, port: int) -> Sequence[str]:
    """A leader that dies on SIGTERM, with a child (in its group) that ignores it."""
    return [sys.executable, "-c", GRANDCHILD, IGNORE_SIGTERM, version, str(port)]


def ignore_sigterm(version: str, port: int) -> Sequence[str]:
    return [sys.executable, "-c", IGNORE_SIGTERM, version, str(port)]


# ---------------------------------------------------------------- processes


def gone(pid: int) -> bool:
    """Whether ``pid`` no longer exists at all: exited AND reaped (a zombie still exists)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def wait_for_output(log: Path, text: str, count: int = 1) -> str:
    with anyio.fail_after(10):
        while (output := await anyio.Path(log).read_text()).count(text) < count:  # noqa: ASYNC110 - a real process's output
            await anyio.sleep(0.02)
    return output


# -------------------------------------------------------------------- tests


async def test_spawn_serves_each_version_on_its_own_port() -> None:
    async with ProcessDriver(demo()) as driver:
        fleet = await driver.spawn(3, "v1")
        assert [i.id for i in fleet] == ["p-0", "p-1", "p-2"]
        assert list(await driver.list_instances()) == fleet
        assert len({i.port for i in fleet}) == 3
        assert driver.pids() == {i.pid for i in fleet}
        await wait_healthy(fleet)
        for instance in fleet:
            status, headers, body = await http_get(instance)
            assert status == 200
            assert headers["x-version"] == "v1"
            assert body == f"hello from v1 on port {instance.port}\n"


async def test_replace_launch_terminate(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    async with ProcessDriver(demo(), log_dir=logs) as driver:
        fleet = await driver.spawn(2, "v1")
        await wait_healthy(fleet)
        old = fleet[0]

        new = await driver.replace(old, "v2")
        assert (new.id, new.port, new.host, new.version) == (old.id, old.port, old.host, "v2")
        assert new.pid != old.pid
        assert gone(old.pid)
        await wait_healthy([new])
        assert (await http_get(new))[2] == f"hello from v2 on port {old.port}\n"

        extra = await driver.launch("v3")
        assert extra.id == "p-2"
        assert extra.port not in {i.port for i in fleet}
        assert [i.id for i in await driver.list_instances()] == ["p-0", "p-1", "p-2"]
        assert list(await driver.list_instances()) == [new, fleet[1], extra]
        await wait_healthy([extra])
        assert (await http_get(extra))[1]["x-version"] == "v3"

        await driver.terminate(extra)
        assert gone(extra.pid)
        assert extra.pid not in driver.pids()
        assert list(await driver.list_instances()) == [new, fleet[1]]
        await driver.terminate(extra)  # already gone: nothing to do

        with pytest.raises(ProcessDriverError, match="outdated"):
            await driver.replace(old, "v3")
        with pytest.raises(ProcessDriverError, match="not in this driver's fleet"):
            await driver.replace(extra, "v3")
    # Output goes to <id>-<pid>.log, one file per process the driver started.
    expected = {f"{i.id}-{i.pid}.log" for i in [*fleet, new, extra]}
    assert {p.name for p in logs.iterdir()} == expected
    log = (logs / f"{new.id}-{new.pid}.log").read_text()
    assert "ready" in log
    assert "stopped" in log


async def test_sigterm_lets_the_request_in_flight_finish() -> None:
    async with ProcessDriver(demo(latency_ms=600), grace=5) as driver:
        (instance,) = await driver.spawn(1, "v1")
        await wait_healthy([instance])
        answers: list[tuple[int, dict[str, str], str]] = []
        took = 0.0

        async def request() -> None:
            answers.append(await http_get(instance))

        async with anyio.create_task_group() as tg:
            tg.start_soon(request)
            await anyio.sleep(0.2)  # the request is in flight: 0.4 s of latency left
            started = anyio.current_time()
            await driver.terminate(instance)
            took = anyio.current_time() - started
        assert answers == [
            (200, answers[0][1], f"hello from v1 on port {instance.port}\n"),
        ]
        assert 0.2 < took < 3  # waited for the request, was not killed at the grace limit
        assert gone(instance.pid)


async def test_process_ignoring_sigterm_is_killed_after_grace(tmp_path: Path) -> None:
    async with ProcessDriver(ignore_sigterm, grace=0.5, log_dir=tmp_path) as driver:
        (instance,) = await driver.spawn(1, "v1")
        await wait_for_output(tmp_path / f"p-0-{instance.pid}.log", "ignoring")
        started = anyio.current_time()
        await driver.terminate(instance)
        took = anyio.current_time() - started
        assert 0.5 <= took < 2.5
        assert gone(instance.pid)
        assert driver.pids() == set()


async def test_the_whole_process_group_is_stopped(tmp_path: Path) -> None:
    async with ProcessDriver(with_stubborn_grandchild, grace=0.5, log_dir=tmp_path) as driver:
        (instance,) = await driver.spawn(1, "v1")
        output = await wait_for_output(tmp_path / f"p-0-{instance.pid}.log", "ignoring")
        grandchild = int(output.split("grandchild ")[1].split()[0])
        started = anyio.current_time()
        await driver.terminate(instance)
        took = anyio.current_time() - started
    assert gone(instance.pid)
    assert 0.5 <= took < 2.5  # the leader left at once; its group had the grace period
    # SIGKILL went to the group when the grace period ran out; it lands a moment later.
    with anyio.fail_after(2):
        while not gone_or_zombie(grandchild):  # noqa: ASYNC110 - a real process's state
            await anyio.sleep(0.01)


async def test_context_exit_stops_everything_normally() -> None:
    async with ProcessDriver(demo()) as driver:
        pids = {i.pid for i in await driver.spawn(2, "v1")}
    assert all(gone(pid) for pid in pids)
    assert driver.pids() == set()
    assert list(await driver.list_instances()) == []


async def test_context_exit_stops_everything_on_error() -> None:
    pids: set[int] = set()

    async def spawn_then_fail() -> None:
        async with ProcessDriver(ignore_sigterm, grace=0.2) as driver:
            pids.update(i.pid for i in await driver.spawn(2, "v1"))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await spawn_then_fail()
    assert len(pids) == 2
    assert all(gone(pid) for pid in pids)


async def test_context_exit_stops_everything_on_cancellation() -> None:
    pids: set[int] = set()
    with anyio.move_on_after(0.3) as scope:
        async with ProcessDriver(demo()) as driver:
            pids = {i.pid for i in await driver.spawn(2, "v1")}
            await anyio.sleep(30)
    assert scope.cancelled_caught
    assert len(pids) == 2
    assert all(gone(pid) for pid in pids)


async def test_cancelling_launch_and_replace_leaks_nothing() -> None:
    marker = f"leak-{uuid.uuid4().hex}"
    async with ProcessDriver(demo()) as driver:
        (instance,) = await driver.spawn(1, marker)
        for delay in CANCEL_DELAYS:
            instance = await launch_and_replace_cancelled(driver, instance, delay)
    assert await anyio.to_thread.run_sync(partial(processes_with, marker, zombies=True)) == []


async def test_misuse_is_reported() -> None:
    driver = ProcessDriver(demo())
    with pytest.raises(ProcessDriverError, match="async with"):
        await driver.spawn(1, "v1")
    # A str is a Sequence[str] to the type checkers: only the driver can refuse it.
    async with ProcessDriver(lambda v, p: f"serve {v} {p}") as shell:
        with pytest.raises(ProcessDriverError, match="sequence"):
            await shell.launch("v1")
    async with driver:
        pass
    with pytest.raises(ProcessDriverError, match="closed"):
        await driver.launch("v1")
    with pytest.raises(ProcessDriverError, match="only once"):
        await driver.__aenter__()
    with pytest.raises(rolling.ConfigError, match="host"):
        ProcessDriver(demo(), host="localhost")
    with pytest.raises(rolling.ConfigError, match="grace"):
        ProcessDriver(demo(), grace=-1)


async def test_a_command_that_cannot_start_fails_cleanly() -> None:
    async with ProcessDriver(lambda v, _p: ["/nonexistent/rolling-test-binary", v]) as driver:
        with pytest.raises(ProcessDriverError, match="could not start"):
            await driver.launch("v1")
        assert list(await driver.list_instances()) == []


async def test_a_failed_restart_leaves_the_instance_listed_and_replaceable() -> None:
    def command(version: str, port: int) -> Sequence[str]:
        if version == "missing":
            return ["/nonexistent/rolling-test-binary"]
        return demo()(version, port)

    async with ProcessDriver(command) as driver:
        (old,) = await driver.spawn(1, "v1")
        with pytest.raises(ProcessDriverError, match="could not start"):
            await driver.replace(old, "missing")
        assert gone(old.pid)
        assert driver.pids() == set()
        assert list(await driver.list_instances()) == [old]  # down, still in the fleet
        new = await driver.replace(old, "v2")
        assert (new.id, new.port, new.version) == (old.id, old.port, "v2")
        assert driver.pids() == {new.pid}


async def test_rollout_in_place_over_three_processes() -> None:
    async with ProcessDriver(demo()) as driver:
        fleet = await driver.spawn(3, "v1")
        await wait_healthy(fleet)
        rollout: rolling.Rollout[ProcessInstance] = rolling.Rollout(
            driver,
            "v2",
            readiness=rolling.Readiness(check=probe, period=0.1, timeout=1, deadline=10),
        )
        result = await rollout.run()
        assert result.status is rolling.RolloutStatus.SUCCEEDED, result.reason
        now = list(await driver.list_instances())
        assert [(i.id, i.port) for i in now] == [(i.id, i.port) for i in fleet]
        assert {i.version for i in now} == {"v2"}
        for instance in now:
            assert (await http_get(instance))[2] == f"hello from v2 on port {instance.port}\n"
        assert all(gone(i.pid) for i in fleet)


async def test_elastic_rollout_with_surge() -> None:
    async with ProcessDriver(demo()) as driver:
        fleet = await driver.spawn(3, "v1")
        await wait_healthy(fleet)
        rollout: rolling.Rollout[ProcessInstance] = rolling.Rollout(
            driver,
            "v2",
            strategy=rolling.RollingUpdate(max_unavailable=0, max_surge=1),
            readiness=rolling.Readiness(check=probe, period=0.1, timeout=1, deadline=10),
        )
        result = await rollout.run()
        assert result.status is rolling.RolloutStatus.SUCCEEDED, result.reason
        now = list(await driver.list_instances())
        assert [i.id for i in now] == ["p-3", "p-4", "p-5"]
        assert {i.version for i in now} == {"v2"}
        assert driver.pids() == {i.pid for i in now}
        for instance in now:
            assert (await http_get(instance))[1]["x-version"] == "v2"
        assert all(gone(i.pid) for i in fleet)


# ------------------------------------------------------------- the demo app


async def test_demo_app_drains_refuses_new_connections_and_exits_zero() -> None:
    port = free_port()
    instance = ProcessInstance(id="app", version="v1", port=port, pid=0)
    argv = [*demo(latency_ms=500)("v1", port)]
    async with await anyio.open_process(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    ) as process:
        try:
            await wait_healthy([instance])
            answers: list[tuple[int, dict[str, str], str]] = []

            async def request() -> None:
                answers.append(await http_get(instance))

            async with anyio.create_task_group() as tg:
                tg.start_soon(request)
                await anyio.sleep(0.2)
                process.send_signal(signal.SIGTERM)
                await anyio.sleep(0.2)
                assert await refused(port)  # the listener is closed already
            with anyio.fail_after(5):
                assert await process.wait() == 0
            assert answers[0][0] == 200
            assert answers[0][2] == f"hello from v1 on port {port}\n"
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def test_demo_app_never_ready() -> None:
    def never_ready(version: str, port: int) -> Sequence[str]:
        return [*demo()(version, port), "--never-ready"]

    async with ProcessDriver(never_ready) as driver:
        instance = await driver.launch("v9")
        with anyio.fail_after(10):
            while True:
                try:
                    status, _, body = await http_get(instance, "/healthz")
                    break
                except OSError:
                    await anyio.sleep(0.05)
        assert (status, body) == (503, "never ready\n")
        await anyio.sleep(0.3)  # past the startup delay: still not ready
        assert (await http_get(instance, "/healthz"))[0] == 503
        assert (await http_get(instance, "/"))[0] == 200
        assert (await http_get(instance, "/nope"))[0] == 404


async def refused(port: int) -> bool:
    try:
        stream = await anyio.connect_tcp(LOOPBACK, port)
    except OSError:
        return True
    await stream.aclose()
    return False

"""ProcessDriver with a state file: the fleet outlives the controller, the next one adopts it.

Real processes, real time, both backends. Every app process started here
carries a unique version string (its ``marker``) on its command line, so the
tests can tell which processes are theirs and prove none is left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest

from helpers import (
    CANCEL_DELAYS,
    gone_or_zombie,
    launch_and_replace_cancelled,
    processes_with,
    start_time,
    wait_healthy,
)
from rolling import ConfigError
from rolling.demo import app
from rolling.drivers.process import ProcessDriver, ProcessDriverError

pytestmark = [pytest.mark.anyio, pytest.mark.real_time]


def command(version: str, port: int) -> Sequence[str]:
    return app.command(version, port, startup_delay=0.1, latency_ms=5)


IGNORE_SIGTERM = (
    "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
    " print('ignoring', flush=True); time.sleep(60)"
)


def stubborn(version: str, port: int) -> Sequence[str]:
    return [sys.executable, "-c", IGNORE_SIGTERM, version, str(port)]


# ------------------------------------------------------------------- helpers


def state_of(path: Path) -> dict[str, Any]:
    state: dict[str, Any] = json.loads(path.read_text())
    return state


def mode_of(path: Path) -> int:
    return path.stat().st_mode & 0o777


async def wait_gone(pid: int, within: float = 10) -> None:
    with anyio.fail_after(within):
        while not gone_or_zombie(pid):  # noqa: ASYNC110 - a real process's state
            await anyio.sleep(0.02)


@pytest.fixture
def marker() -> Iterator[str]:
    """A version string unique to the test; whatever still runs with it is killed at the end."""
    mark = f"adopt-{uuid.uuid4().hex[:12]}"
    yield mark
    for pid in processes_with(mark):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


@pytest.fixture
async def stop_all(tmp_path: Path) -> AsyncIterator[Path]:
    """A state file whose fleet is stopped at the end, whatever the test did."""
    path = tmp_path / "fleet.json"
    yield path
    if path.exists():
        with anyio.CancelScope(shield=True):
            async with ProcessDriver(command, state_file=path, keep_on_exit=False, grace=1):
                pass


# --------------------------------------------------------------------- tests


async def test_the_fleet_outlives_the_driver_and_the_next_one_adopts_it(
    stop_all: Path, marker: str
) -> None:
    async with ProcessDriver(command, state_file=stop_all) as first:
        fleet = await first.spawn(2, marker)
        fleet.append(await first.launch(marker))
        await wait_healthy(fleet)
    assert first.adopted == ()
    # Leaving the block stopped nothing: keep_on_exit is the default with a state file.
    await wait_healthy(fleet)
    state = state_of(stop_all)
    assert state["next"] == 3
    listed = state["instances"]
    assert [(e["id"], e["version"], e["port"], e["pid"]) for e in listed] == [
        (i.id, i.version, i.port, i.pid) for i in fleet
    ]
    assert all(e["start"] == start_time(e["pid"]) for e in listed)
    assert mode_of(stop_all) == 0o600

    async with ProcessDriver(command, state_file=stop_all, keep_on_exit=False) as second:
        assert second.adopted == tuple(fleet)
        assert second.dropped == ()
        assert list(await second.list_instances()) == fleet
        assert second.pids() == {i.pid for i in fleet}
        replaced = await second.replace(fleet[0], marker + "-b")
        assert replaced.id == fleet[0].id
        assert replaced.port == fleet[0].port
        await wait_gone(fleet[0].pid)
        await second.terminate(fleet[1])
        await wait_gone(fleet[1].pid)
        launched = await second.launch(marker)
        assert launched.id == "p-3"  # never an id the fleet used before
        await wait_healthy([replaced, fleet[2], launched])
        assert [e["id"] for e in state_of(stop_all)["instances"]] == ["p-0", "p-2", "p-3"]
        assert state_of(stop_all)["instances"][0]["version"] == marker + "-b"
    assert state_of(stop_all)["instances"] == []
    await wait_gone(replaced.pid)
    await wait_gone(launched.pid)
    assert processes_with(marker) == []


CONTROLLER = """
import sys
from pathlib import Path

import anyio

from rolling.demo import app
from rolling.drivers.process import ProcessDriver


async def main() -> None:
    def command(version, port):
        if version.endswith("stubborn"):
            return [sys.executable, "-c", sys.argv[2], version, str(port)]
        return app.command(version, port, startup_delay=0.1, latency_ms=5)

    async with ProcessDriver(command, state_file=Path(sys.argv[1])) as driver:
        await driver.spawn(2, sys.argv[3])
        await driver.launch(sys.argv[3] + "-stubborn")
        print("spawned", flush=True)
        await anyio.sleep(60)


anyio.run(main)
"""


async def test_a_sigkilled_controllers_processes_are_adopted_and_stopped(
    stop_all: Path, marker: str
) -> None:
    controller = await anyio.open_process(
        [sys.executable, "-c", CONTROLLER, str(stop_all), IGNORE_SIGTERM, marker]
    )
    async with controller:
        assert controller.stdout is not None
        with anyio.fail_after(20):
            assert b"spawned" in await controller.stdout.receive()
        controller.send_signal(signal.SIGKILL)
        await controller.wait()
    pids = set(processes_with(marker))
    assert len(pids) == 3
    # Orphans now: not our children, their reaping is init's business.
    async with ProcessDriver(command, state_file=stop_all, keep_on_exit=False, grace=0.3) as driver:
        adopted = list(driver.adopted)
        assert {i.pid for i in adopted} == pids
        assert [i.id for i in adopted] == ["p-0", "p-1", "p-2"]
        assert adopted[2].version == marker + "-stubborn"
        await wait_healthy(adopted[:2])
        with pytest.raises(ChildProcessError):
            os.waitpid(adopted[0].pid, os.WNOHANG)  # noqa: ASYNC222 - WNOHANG: never blocks
        with anyio.fail_after(5):
            await driver.terminate(adopted[0])
        assert gone_or_zombie(adopted[0].pid)
        # One that ignores SIGTERM gets SIGKILL after the grace period.
        with anyio.fail_after(5):
            await driver.terminate(adopted[2])
        assert gone_or_zombie(adopted[2].pid)
        replaced = await driver.replace(adopted[1], marker)
        assert gone_or_zombie(adopted[1].pid)
        await wait_healthy([replaced])
    await wait_gone(replaced.pid)
    assert processes_with(marker) == []
    assert state_of(stop_all)["instances"] == []


async def test_dead_entries_stay_listed_and_a_reused_pid_is_never_signalled(
    tmp_path: Path, marker: str
) -> None:
    path = tmp_path / "fleet.json"
    async with ProcessDriver(command, state_file=path) as first:
        live, dead = await first.spawn(2, marker)
    os.killpg(dead.pid, signal.SIGKILL)
    await wait_gone(dead.pid)
    state = state_of(path)
    # A third entry names a live process (this one) with another start time: a reused pid.
    reused = {**state["instances"][0], "id": "p-7", "pid": os.getpid()}
    reused["start"] = (start_time(os.getpid()) or 0) + 1
    # A fourth is a launch announced but never recorded, whose process never started.
    announced = {**state["instances"][0], "id": "p-8", "pid": None, "start": None}
    announced["token"] = uuid.uuid4().hex
    state["instances"] += [reused, announced]
    state["next"] = 9
    path.write_text(json.dumps(state))
    async with ProcessDriver(command, state_file=path, keep_on_exit=False, grace=1) as driver:
        assert driver.adopted == (live,)
        assert [i.id for i in driver.dead] == ["p-1", "p-7"]
        assert driver.dropped == ("p-8",)
        # Listed as the driver lists an instance whose process exited: until replaced or
        # terminated, without a process (so nothing is ever signalled through the old pid).
        assert [i.id for i in await driver.list_instances()] == ["p-0", "p-1", "p-7"]
        assert driver.pids() == {live.pid}
        assert [e["start"] for e in state_of(path)["instances"]] == [
            start_time(live.pid),
            None,
            None,
        ]
        restarted = await driver.replace(driver.dead[0], marker)
        assert (restarted.id, restarted.port) == (dead.id, dead.port)
        await wait_healthy([restarted])
        await driver.terminate(driver.dead[1])
        assert [i.id for i in await driver.list_instances()] == ["p-0", "p-1"]
        assert (await driver.launch(marker)).id == "p-9"
    assert processes_with(marker) == []


async def test_processes_started_but_never_recorded_are_found_by_their_token(
    tmp_path: Path, marker: str
) -> None:
    path = tmp_path / "fleet.json"
    async with ProcessDriver(command, state_file=path) as first:
        launched, replaced = await first.spawn(2, marker)
        await first.terminate(launched)
        await first.terminate(replaced)
    # What a controller killed between starting a process and recording its pid leaves:
    # a launch announced (no pid yet), and a replace whose old process is stopped and
    # whose new one is announced under "next".
    tokens = [uuid.uuid4().hex, uuid.uuid4().hex]
    entry = {"id": "p-0", "version": marker, "host": "127.0.0.1", "port": launched.port}
    entry |= {"pid": None, "start": None, "token": tokens[0]}
    old: dict[str, object] = {"id": "p-1", "version": "old", "host": "127.0.0.1"}
    old["port"] = replaced.port
    old |= {"pid": replaced.pid, "start": None, "token": None}
    old["next"] = {"version": marker, "token": tokens[1]}
    path.write_text(json.dumps({"format": 1, "next": 2, "instances": [entry, old]}))
    pids: list[int] = []
    for token, port in zip(tokens, (launched.port, replaced.port), strict=True):
        argv = list(command(marker, port))
        env = {**os.environ, "ROLLING_PROCESS_TOKEN": token}
        pids.append(os.posix_spawnp(argv[0], argv, env, setsid=True))  # noqa: ASYNC221 - returns at exec
    # Until exec completes, /proc/<pid>/environ reads empty: let them start, as a dead
    # controller's processes have long done by the time another one adopts them.
    await wait_healthy([launched, replaced])
    async with ProcessDriver(command, state_file=path, keep_on_exit=False, grace=1) as driver:
        assert [(i.id, i.pid, i.version) for i in driver.adopted] == [
            ("p-0", pids[0], marker),
            ("p-1", pids[1], marker),
        ]
        await wait_healthy(driver.adopted)
        assert [e["pid"] for e in state_of(path)["instances"]] == pids
        assert all("next" not in e for e in state_of(path)["instances"])
    assert processes_with(marker) == []


async def test_a_second_driver_on_the_same_fleet_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "fleet.json"
    async with ProcessDriver(command, state_file=path):
        with pytest.raises(ProcessDriverError, match=f'in use by another.*"pid": {os.getpid()}'):
            async with ProcessDriver(command, state_file=path):
                pass
    async with ProcessDriver(command, state_file=path):
        pass


async def test_bad_settings_and_a_damaged_state_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="keep_on_exit"):
        ProcessDriver(command, keep_on_exit=True)
    path = tmp_path / "fleet.json"
    path.write_text('{"format": 1, "next": 0, "instances": [{"id": 3}]}')
    with pytest.raises(ProcessDriverError, match="not a ProcessDriver state file"):
        async with ProcessDriver(command, state_file=path):
            pass
    path.write_text("{")
    with pytest.raises(ProcessDriverError, match="move it aside"):
        async with ProcessDriver(command, state_file=path):
            pass
    path.unlink()
    # The failed attempts released the lock.
    async with ProcessDriver(command, state_file=path):
        pass
    assert state_of(path) == {"format": 1, "next": 0, "instances": []}


async def test_cancelled_calls_leave_the_state_file_true(tmp_path: Path, marker: str) -> None:
    path = tmp_path / "fleet.json"
    async with ProcessDriver(command, state_file=path, keep_on_exit=False) as driver:
        (instance,) = await driver.spawn(1, marker)
        for delay in CANCEL_DELAYS:
            instance = await launch_and_replace_cancelled(driver, instance, delay)
            assert {e["pid"] for e in state_of(path)["instances"]} == driver.pids()
    assert await anyio.to_thread.run_sync(processes_with, marker) == []

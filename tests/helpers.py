"""Helpers shared by several test modules: written once here, imported where they are used.

Fixtures stay in ``conftest.py``; this module holds plain functions, classes and constants,
imported as ``from helpers import ...`` (``tests/`` is on ``sys.path`` the way pytest puts it
there for ``haproxy_harness`` and ``netns_hosts``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import anyio
import anyio.abc
import attrs
import pytest

from rolling import Journal, Readiness, Rollout, RolloutStatus
from rolling.cli._file import RolloutFileError, load_file
from rolling.drivers.process import ProcessDriver, ProcessInstance
from rolling.testing import FleetChange, InvariantMonitor, MemoryJournal, SimulatedFleet

__all__ = [
    "CANCEL_DELAYS",
    "CLI_EVENTS_SCHEMA",
    "LOOPBACK",
    "MUTATING",
    "ROLLING",
    "ElasticOnly",
    "Node",
    "alive",
    "assert_file_error",
    "free_port",
    "gone_or_zombie",
    "http_get",
    "launch_and_replace_cancelled",
    "monitor_for",
    "port_of",
    "probe",
    "processes_with",
    "rolling_cli",
    "rollout_for",
    "run_cancelled_at",
    "start_time",
    "stop_fleet",
    "wait_healthy",
]

# ---------------------------------------------------------------- network

LOOPBACK = "127.0.0.1"


def port_of(listener: anyio.abc.Listener[Any]) -> int:
    """The local port an anyio TCP listener is bound to."""
    port: int = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 - anyio's typed attributes, not Django
    return port


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port free on ``host`` right now (the kernel's pick; another process may take it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


@attrs.frozen
class Node:
    """An instance as routers and checks see it: an id, an address and a version."""

    id: str
    port: int
    host: str = LOOPBACK
    version: str = "v1"


class Endpoint(Protocol):
    """Anything with a host and a port, as the process driver's instances have."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...


async def http_get(
    endpoint: Endpoint, path: str = "/", within: float = 5.0
) -> tuple[int, dict[str, str], str]:
    """One raw HTTP/1.1 GET; the status, the headers (lower-case names) and the body."""
    with anyio.fail_after(within):
        async with await anyio.connect_tcp(endpoint.host, endpoint.port) as stream:
            request = f"GET {path} HTTP/1.1\r\nHost: {endpoint.host}\r\nConnection: close\r\n\r\n"
            await stream.send(request.encode())
            data = b""
            try:
                while True:
                    data += await stream.receive()
            except anyio.EndOfStream:
                pass
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    assert int(headers["content-length"]) == len(body), "truncated response"
    return int(status_line.split()[1]), headers, body.decode()


async def probe(endpoint: Endpoint) -> bool:
    """Whether the demo app at ``endpoint`` answers ``/healthz`` with 200 within a second."""
    try:
        status, _, _ = await http_get(endpoint, "/healthz", within=1.0)
    except (OSError, anyio.BrokenResourceError):  # TimeoutError is an OSError
        return False
    return status == 200


async def wait_healthy(endpoints: Sequence[Endpoint], deadline: float = 10.0) -> None:
    """Wait until every one of ``endpoints`` passes :func:`probe`."""
    with anyio.fail_after(deadline):
        for endpoint in endpoints:
            while not await probe(endpoint):  # noqa: ASYNC110 - polling a real process over TCP
                await anyio.sleep(0.05)


# -------------------------------------------------------------- processes

CANCEL_DELAYS = (0, 0.0005, 0.001, 0.002, 0.005, 0.01)
"""Seconds after which a driver call is cancelled: before, during and after its spawn."""


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name, or None without a process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text.rpartition(")")[2].split()


def alive(pid: int) -> bool:
    """Whether ``pid`` runs: it exists and is not a zombie (init here may not reap orphans)."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def gone_or_zombie(pid: int) -> bool:
    """For a process that is not our child: its reaping is its new parent's business."""
    return not alive(pid)


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (what tells a reused pid apart)."""
    fields = _stat(pid)
    return None if fields is None else int(fields[19])


def processes_with(marker: str, *, zombies: bool = False) -> list[int]:
    """Pids of the processes whose command line contains ``marker``; zombies only if asked."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline and (zombies or alive(int(entry.name))):
            found.append(int(entry.name))
    return found


async def launch_and_replace_cancelled(
    driver: ProcessDriver, instance: ProcessInstance, delay: float
) -> ProcessInstance:
    """Launch and replace on ``instance``'s version, each call cancelled after ``delay`` s.

    Whatever was cancelled, the driver then owns exactly what it lists, and no process of that
    version runs that it does not own. Zombies count: the driver reaps its own children, so one
    left over is a leak. Returns the instance to go on with (the replacement if there was one).
    """
    version = instance.version
    with anyio.move_on_after(delay):
        await driver.launch(version)
    with anyio.move_on_after(delay):
        instance = await driver.replace(instance, version)
    listed = await driver.list_instances()
    assert driver.pids() == {i.pid for i in listed}
    running = await anyio.to_thread.run_sync(partial(processes_with, version, zombies=True))
    assert set(running) <= driver.pids()
    return instance


# ------------------------------------------------------------------ fleets

MUTATING = frozenset({"replace", "launch", "terminate", "detach", "attach"})
"""The driver and router calls that change a fleet (``SimulatedFleet.calls`` ops)."""


class ElasticOnly:
    """A driver over a simulated fleet without ``replace``: the engine must terminate and launch."""

    def __init__(self, fleet: SimulatedFleet) -> None:
        self.fleet = fleet

    async def list_instances(self) -> Any:
        return await self.fleet.list_instances()

    async def launch(self, version: str) -> Any:
        return await self.fleet.launch(version)

    async def terminate(self, instance: Any) -> None:
        await self.fleet.terminate(instance)


def rollout_for(fleet: SimulatedFleet, journal: Journal, **options: Any) -> Rollout[Any]:
    """A rollout of ``fleet`` (to ``target``, v2 unless given) that writes ``journal``."""
    return Rollout(
        fleet,
        options.pop("target", "v2"),
        router=fleet,
        readiness=Readiness(check=fleet, period=1, deadline=30),
        journal=journal,
        **options,
    )


def monitor_for(
    rollout: Rollout[Any], fleet: SimulatedFleet, *, raise_immediately: bool = True
) -> InvariantMonitor:
    """An invariant monitor on ``fleet`` held to the window ``rollout`` resolves for it."""
    window = rollout.window(fleet.desired)
    return InvariantMonitor(
        fleet,
        max_unavailable=window.max_unavailable,
        max_surge=window.max_surge,
        raise_immediately=raise_immediately,
    )


async def run_cancelled_at(
    fleet: SimulatedFleet, rollout: Rollout[Any], k: int, ops: frozenset[str]
) -> None:
    """Run ``rollout``, cancelling it as the ``k``-th operation in ``ops`` begins on ``fleet``."""
    seen = 0
    scope = anyio.CancelScope()

    def cancel_at_k(change: FleetChange) -> None:
        nonlocal seen
        if change.phase == "begin" and change.op in ops:
            seen += 1
            if seen == k:
                scope.cancel()

    fleet.add_listener(cancel_at_k)
    try:
        with scope:
            await rollout.run()
    finally:
        fleet.remove_listener(cancel_at_k)


Shape = Callable[[Journal], Callable[[], tuple[SimulatedFleet, Rollout[Any]]]]
"""Given a journal, a maker of a fresh fleet and a rollout of it that writes that journal."""


async def cancel_then_resume(
    shape: Shape, k: int, ops: frozenset[str]
) -> tuple[SimulatedFleet, InvariantMonitor]:
    """Cancel ``shape``'s rollout as its ``k``-th operation in ``ops`` begins, then resume it.

    The same rollout runs again on the same fleet from the journal; it must end SUCCEEDED
    with the fleet whole on v2 and in traffic, and the result must tell the truth.
    """
    journal = MemoryJournal()
    fleet, first = shape(journal)()
    monitor = monitor_for(first, fleet, raise_immediately=False)
    await run_cancelled_at(fleet, first, k, ops)
    _, again = shape(journal)()
    resumed = await rollout_for(fleet, journal, strategy=again.strategy, steps=again.steps).run()
    assert resumed.status is RolloutStatus.SUCCEEDED, (k, resumed.reason)
    assert fleet.version_counts() == {"v2": fleet.desired}, k
    assert set(fleet.attached_ids) == {i.id for i in fleet.instances}, k
    assert len(fleet.instances) == fleet.desired, k
    monitor.check_result(resumed, fleet)
    return fleet, monitor


# ------------------------------------------------------------ command line

ROLLING = [sys.executable, "-m", "rolling"]
"""The command line, run by the interpreter that runs the tests."""

CLI_EVENTS_SCHEMA: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parent.parent / "docs" / "cli-events.schema.json").read_text()
)
"""The documented schema of ``rolling run --json`` lines."""


def rolling_cli(
    *args: str | Path, cwd: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``rolling ARGS`` in ``cwd`` to its end; its output, captured."""
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [*ROLLING, *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def stop_fleet(state_file: Path) -> None:
    """Kill every process group a process driver's state file lists."""
    if state_file.exists():
        for entry in json.loads(state_file.read_text())["instances"]:
            if entry.get("pid"):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(entry["pid"], signal.SIGKILL)


def assert_file_error(path: Path, line: int | None, field: str, words: str) -> None:
    """Loading the rollout file at ``path`` fails naming it, ``line``, ``field`` and a fix."""
    with pytest.raises(RolloutFileError) as caught:
        load_file(path)
    error = caught.value
    assert (error.path, error.line, error.field) == (path, line, field), str(error)
    assert words in str(error)
    assert str(error).startswith(f"{path}:{line}: " if line else f"{path}: ")
    assert error.fix

"""The kill sweep: a real controller is SIGKILLed all over a rollout and a rollback, and resumed.

Pieces (in ``tests/killsweep/``):

* ``balancer_daemon.py``: rolling's :class:`~rolling.routers.balancer.Balancer`
  in a long-lived process of its own, driven over a Unix control socket, so
  traffic keeps flowing while no controller is alive;
* ``controller.py``: one controller process: a
  :class:`~rolling.drivers.process.ProcessDriver` with a state file (it adopts
  what a dead controller left running), a router talking to the daemon, and a
  :class:`~rolling.Rollout` on a :class:`~rolling.FileJournal`.

The sweep starts a fleet of app processes, runs steady load through the
daemon from this process, and then, trial after trial, starts a controller,
SIGKILLs it at a chosen moment, starts the next one on the same journal and
state file, and so on, until one finishes. Kill moments are fractions of a
rollout's duration measured first, spread evenly over the whole rollout (and,
with a target that never becomes ready, over the rollback). After every
trial: the expected status; every instance on the expected version, in the
state file, behind the balancer and in the answers; no process left behind.
At the end: no request failed outside the moments no controller was alive.

It runs on asyncio only: it orchestrates subprocesses and load, and doubling
its minute for trio would test nothing new. The driver's adoption, the part
that depends on the backend, runs on both in ``test_process_driver_adopt.py``.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import os
import re
import signal
import sys
import uuid
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import attrs
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from helpers import alive, start_time
from killsweep.remote_router import RemoteBalancerRouter
from rolling.checks import HTTPCheck
from rolling.demo import app
from rolling.demo._load import LoadGenerator, Sample
from rolling.drivers.process import ProcessDriver

KILLSWEEP = Path(__file__).parent / "killsweep"

pytestmark = pytest.mark.anyio

FLEET = 4
FORWARD_TRIALS = 4
KILLS_PER_TRIAL = 4
ROLLBACK_TRIALS = 2
ROLLBACK_KILLS = 3
BROKEN_AFTER = 2
"""A broken target breaks on the third instance: the rollback has two to revert."""
BROKEN_DEADLINE = 8.0
"""Readiness deadline in a broken rollout: how long the broken instance is waited for.

It bounds the reverts' readiness too: a good app process that is slow to answer on a
loaded machine must not be counted as a failed revert (1.0 s did that here, and 4.0 s in
test_etcd_controllers under CI's three workers and coverage, where one took 3.4 s)."""
GRACE = 0.5
"""Seconds after a dead window in which a failure still counts as the controller's death."""


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    """Real time, asyncio only (see the module docstring)."""
    return ("asyncio", {})


# ---------------------------------------------------------------- processes


def tagged(tag: str) -> set[int]:
    """Every live process whose environment says ``ROLLING_KILLSWEEP=<tag>``."""
    marker = f"ROLLING_KILLSWEEP={tag}".encode()
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environment = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in environment and alive(int(entry.name)):
            found.add(int(entry.name))
    return found


def read_state(path: Path) -> list[dict[str, Any]]:
    instances: list[dict[str, Any]] = json.loads(path.read_text())["instances"]
    return instances


def last_record(journal: Path) -> dict[str, Any]:
    """The last whole record of a journal (a torn last line is skipped, as the journal does)."""
    if not journal.exists():
        return {"t": "none"}
    for line in reversed(journal.read_text().splitlines()):
        with contextlib.suppress(ValueError):
            record: dict[str, Any] = json.loads(line)
            return record
    return {"t": "none"}


def rolled(journal: Path) -> bool:
    """Whether the journal's rollout has started rolling back (durably)."""
    return '"t":"rollback"' in journal.read_text() if journal.exists() else False


ENGINE_BUG = (
    "engine bug: a resumed rollback whose first unit to revert is in traffic while another"
    " is out of it (its revert was cut short by the kill) gives up as 'stuck' and reports"
    " rolled_back with instances not reverted"
)


def gave_up_stuck(log: Path) -> bool:
    """Whether a controller's rollback gave up on an instance as 'stuck' (ENGINE_BUG)."""
    return any(
        " revert_failed " in line and "[stuck:" in line for line in log.read_text().splitlines()
    )


PHASE = re.compile(r"^[0-9.]+ (?P<id>\S+) (?P<phase>[a-z_]+) .*?(?P<back> \(rollback\))?$")


# -------------------------------------------------------------------- sweep


@attrs.frozen
class Listed:
    """An instance of the state file, as a router needs it."""

    id: str
    host: str
    port: int


@attrs.frozen
class At:
    """When to kill a controller: ``after`` seconds past a trigger.

    The trigger is the controller's ``running`` line, or with ``phase`` the
    ``nth`` phase change it reports with that name (a rollback one if
    ``rollback``), counted from its own start.
    """

    after: float = 0.0
    phase: str | None = None
    rollback: bool = False
    nth: int = 1

    def matches(self, line: str) -> bool:
        found = PHASE.match(line)
        return (
            found is not None
            and found["phase"] == self.phase
            and bool(found["back"]) == self.rollback
        )


@attrs.define
class Kill:
    trial: str
    at: At
    time: float
    point: str
    """The last phase the controller reported before it died."""
    rolling_back: bool
    """Whether the journal had durably started the rollback."""


@attrs.define
class Controller:
    process: anyio.abc.Process
    reader: BufferedByteReceiveStream
    log: Path
    lines: list[str] = attrs.Factory(list[str])

    async def next_line(self) -> str | None:
        """The next line of its stdout (also kept in its log), or None once it has exited."""
        try:
            line = (await self.reader.receive_until(b"\n", 1 << 16)).decode()
        except (anyio.IncompleteRead, anyio.EndOfStream):
            return None
        self.lines.append(line)
        with self.log.open("a") as log:
            log.write(line + "\n")
        return line

    def point(self) -> str:
        phases = [m for m in map(PHASE.match, self.lines) if m is not None]
        if not phases:
            return "resuming"  # killed after `running`, before its first phase change
        return phases[-1]["phase"] + (" (rollback)" if phases[-1]["back"] else "")


@attrs.define
class Sweep:
    root: Path
    tag: str
    control: Path
    port: int
    windows: list[tuple[float, float]] = attrs.Factory(list[tuple[float, float]])
    kills: list[Kill] = attrs.Factory(list[Kill])
    pids_seen: set[int] = attrs.Factory(set[int])
    controllers: int = 0
    killed_at: float | None = None
    logs: list[Path] = attrs.Factory(list[Path])
    engine_bug: list[str] = attrs.Factory(list[str])
    """Trials whose resumed rollback hit ENGINE_BUG (and were repaired)."""
    extra: list[str] = attrs.Factory(list[str])
    """More arguments for every controller but the one that spawns the fleet."""

    @property
    def state(self) -> Path:
        return self.root / "fleet.json"

    def note_state(self) -> None:
        self.pids_seen |= {int(e["pid"]) for e in read_state(self.state) if e["pid"] is not None}

    def tail(self) -> str:
        return "".join(f"--- {p.name}\n" + p.read_text()[-3000:] for p in self.logs[-3:])

    @contextlib.asynccontextmanager
    async def start(
        self,
        journal: Path,
        target: str,
        *,
        broken: bool = False,
        spawn: int = 0,
        extra: tuple[str, ...] = (),
    ) -> AsyncGenerator[Controller]:
        self.controllers += 1
        log = self.root / f"controller-{self.controllers:03d}.log"
        self.logs.append(log)
        argv = [sys.executable, str(KILLSWEEP / "controller.py"), "--journal", str(journal)]
        argv += ["--state", str(self.state), "--balancer", str(self.control), "--target", target]
        argv += ["--tag", self.tag, "--log-dir", str(self.root / "apps")]
        if broken:
            argv += ["--broken", "--broken-after", str(BROKEN_AFTER)]
            argv += ["--deadline", str(BROKEN_DEADLINE)]
        if spawn:
            argv += ["--spawn", str(spawn)]
        else:
            argv += [*self.extra, *extra]
        if self.killed_at is not None:
            # The dead window: from the kill until the next controller exists.
            self.windows.append((self.killed_at, anyio.current_time()))
            self.killed_at = None
        with log.open("wb") as stderr:
            async with await anyio.open_process(argv, stderr=stderr) as process:
                assert process.stdout is not None
                reader = BufferedByteReceiveStream(process.stdout)
                try:
                    yield Controller(process, reader, log)
                finally:
                    if process.returncode is None:
                        process.kill()  # a failed test: leave nothing behind
                        with anyio.CancelScope(shield=True):
                            await process.wait()
        self.note_state()

    async def expect(self, controller: Controller, text: str) -> None:
        """Read its lines until ``text``; fail if it exits or hangs first."""
        with anyio.move_on_after(60):
            while (line := await controller.next_line()) is not None:
                if line == text:
                    return
        pytest.fail(f"a controller never said {text!r}:\n{self.tail()}")

    async def spawn_fleet(self) -> None:
        async with self.start(self.root / "spawn.jsonl", "v1", spawn=FLEET) as controller:
            await self.expect(controller, "spawned")
            assert await controller.process.wait() == 0, self.tail()

    async def trial(
        self, name: str, target: str, kills: list[At], *, broken: bool = False
    ) -> tuple[str, dict[str, float]]:
        """One rollout to ``target``: a controller killed at each of ``kills``, then one more.

        Returns the final status and, from the last controller, when it first
        reported each phase and when it ended (``"end"``), in seconds after it
        said ``running``.
        """
        journal = self.root / f"{name}.jsonl"
        for at in [*kills, None]:
            async with self.start(journal, target, broken=broken) as controller:
                await self.expect(controller, "running")
                started = anyio.current_time()
                if at is None or not await self.wait_for(controller, at):
                    # It finished by itself: the status is its last line.
                    with anyio.fail_after(120):
                        while await controller.next_line() is not None:
                            pass
                    assert await controller.process.wait() == 0, self.tail()
                    timeline = self.timeline(controller, started)
                    timeline["end"] = anyio.current_time() - started
                    return controller.lines[-1], timeline
                self.killed_at = anyio.current_time()
                controller.process.kill()
                await controller.process.wait()
                record = last_record(journal)
                point = "after the end" if record["t"] == "end" else controller.point()
                self.kills.append(Kill(name, at, self.killed_at, point, rolled(journal)))
            if record["t"] == "end":
                return str(record["status"]), {}
        raise AssertionError("unreachable: the last controller is never killed")

    @staticmethod
    async def wait_for(controller: Controller, at: At) -> bool:
        """Wait for ``at`` while reading the controller's lines; False if it exited first."""
        if at.phase is not None:
            seen = 0
            with anyio.fail_after(60):
                while (line := await controller.next_line()) is not None:
                    seen += at.matches(line)
                    if seen == at.nth:
                        break
                else:
                    return False
        with anyio.move_on_after(at.after):
            while await controller.next_line() is not None:
                pass
            return False
        return True

    @staticmethod
    def timeline(controller: Controller, started: float) -> dict[str, float]:
        first: dict[str, float] = {}
        for line in controller.lines:
            found = PHASE.match(line)
            if found is not None:
                key = found["phase"] + (" (rollback)" if found["back"] else "")
                # Its clock is ours: CLOCK_MONOTONIC, which anyio's asyncio loop reads too.
                first.setdefault(key, round(float(line.split()[0]) - started, 3))
        return first

    async def repair(self, name: str, version: str) -> None:
        """Put the fleet back on ``version`` and in traffic after ENGINE_BUG.

        A fresh rollout replaces what runs another version, but cannot know what
        the stuck rollback left out of traffic or still starting (it would stop
        as stuck itself): so every instance with a process is first waited for
        and attached, then rolled, then attached again.
        """
        router = RemoteBalancerRouter(self.control)
        check = HTTPCheck("/healthz", timeout=0.5)

        async def attach_all() -> None:
            for entry in read_state(self.state):
                listed = Listed(entry["id"], entry["host"], entry["port"])
                if entry["start"] is None:
                    continue  # listed without a process: the rollout replaces it
                with anyio.fail_after(10):
                    while not (await check.check(listed)).healthy:  # noqa: ASYNC110 - a real probe
                        await anyio.sleep(0.05)
                await router.attach(listed)

        await attach_all()
        status, _ = await self.trial(f"{name}-repair", version, [])
        assert status == "succeeded", self.tail()
        await attach_all()

    async def check_fleet(self, version: str) -> None:
        """All on ``version``: in the state file, behind the balancer, in answers; no stray."""
        fleet = read_state(self.state)
        assert len(fleet) == FLEET, fleet
        assert {e["version"] for e in fleet} == {version}, fleet
        pids = {int(e["pid"]) for e in fleet}
        for entry in fleet:
            assert alive(int(entry["pid"])), entry
            assert start_time(int(entry["pid"])) == entry["start"], entry
        attached = await RemoteBalancerRouter(self.control).attached()
        assert sorted(attached) == sorted(e["id"] for e in fleet), self.tail()
        load = LoadGenerator("127.0.0.1", self.port)
        answers = [await load.request() for _ in range(2 * FLEET)]
        assert all(s.ok for s in answers), answers
        assert {s.version for s in answers} == {version}
        assert await anyio.to_thread.run_sync(tagged, self.tag) == pids, self.tail()


def failed_outside(samples: list[Sample], windows: list[tuple[float, float]]) -> list[Sample]:
    def inside(sample: Sample) -> bool:
        end = sample.at + sample.latency
        return any(sample.at <= stop + GRACE and end >= start for start, stop in windows)

    return [s for s in samples if not s.ok and not inside(s)]


def spread(trials: int, kills: int, work: float, trigger: At) -> list[list[At]]:
    """Kill points for ``trials`` trials of ``kills`` kills each over ``work`` seconds.

    Trial ``j``'s kills fall at the fractions ``(m + (j + 0.5) / trials) / kills``
    of the work (m = 0, 1, ...) after ``trigger``: together, ``trials * kills``
    points evenly spread over the whole of it. Each controller's kill counts
    from its own trigger, so its delay is the step from the previous point
    (a resumed controller picks up where the last one died).
    """
    schedule: list[list[At]] = []
    for j in range(trials):
        points = [(m + (j + 0.5) / trials) / kills for m in range(kills)]
        steps = [points[0]] + [b - a for a, b in itertools.pairwise(points)]
        schedule.append([attrs.evolve(trigger, after=round(step * work, 3)) for step in steps])
    return schedule


def back(phase: str, after: float = 0.0) -> At:
    return At(after=after, phase=phase, rollback=True)


# Kill points tied to the controller's own reports: an effect just started, or just
# finished, or a moment later; in the rollout, and in the rollback.
FORWARD_EVENTS = [
    [
        At(phase="detaching"),
        At(phase="replacing"),
        At(phase="attaching"),
        At(phase="detaching", after=0.005),
        At(phase="replacing", after=0.03),
    ],
    [
        At(phase="ready"),
        At(phase="attached"),
        At(phase="updated"),
        At(phase="waiting_ready", after=0.2),
        At(phase="attaching", after=0.001),
    ],
    [
        At(),  # while it adopts the fleet and reads the journal
        At(after=0.02),
        At(phase="detaching", nth=2),
        At(phase="attaching", nth=2, after=0.002),
    ],
]
ROLLBACK_EVENTS = [
    [
        At(phase="failed"),
        back("reverting"),
        back("detaching"),
        back("replacing", after=0.02),
        back("attaching"),
    ],
    [
        At(phase="replacing", nth=2, after=0.03),  # restoring the instance that failed
        At(phase="rollback_started"),
        back("waiting_ready", after=0.2),
        back("attaching", after=0.001),
        back("reverted"),
    ],
]


@contextlib.asynccontextmanager
async def balancer_daemon(root: Path) -> AsyncGenerator[tuple[Path, int]]:
    control = root / "lb.sock"
    argv = [sys.executable, str(KILLSWEEP / "balancer_daemon.py"), "--control", str(control)]
    async with await anyio.open_process(argv, stderr=None) as daemon:
        assert daemon.stdout is not None
        reader = BufferedByteReceiveStream(daemon.stdout)
        with anyio.fail_after(30):
            words = (await reader.receive_until(b"\n", 4096)).decode().split()
        assert words[0] == "listening", words
        try:
            yield control, int(words[1])
        finally:
            with anyio.CancelScope(shield=True):
                daemon.terminate()
                with anyio.move_on_after(10):
                    await daemon.wait()
                if daemon.returncode is None:
                    daemon.kill()
                    await daemon.wait()


async def stop_everything(sweep: Sweep) -> None:
    """Tear down whatever the sweep left, through the driver (it adopts, then stops)."""
    with anyio.CancelScope(shield=True):
        if sweep.state.exists():
            async with ProcessDriver(
                app.command, state_file=sweep.state, keep_on_exit=False, grace=2
            ):
                pass
        for pid in await anyio.to_thread.run_sync(tagged, sweep.tag):  # only if a test failed
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)


async def test_controller_killed_all_over_a_rollout_and_a_rollback(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    async with balancer_daemon(tmp_path) as (control, port):
        sweep = Sweep(root=tmp_path, tag=tag, control=control, port=port)
        try:
            await run_sweep(sweep)
        finally:
            await stop_everything(sweep)
    assert await anyio.to_thread.run_sync(tagged, tag) == set()


async def run_sweep(sweep: Sweep) -> None:
    await sweep.spawn_fleet()
    await sweep.check_fleet("v1")
    load = LoadGenerator("127.0.0.1", sweep.port, concurrency=2, timeout=10, max_seconds=420)
    results: list[tuple[str, str, str]] = []
    version = 1

    async def forward(name: str, kills: list[At]) -> dict[str, float]:
        nonlocal version
        version += 1
        status, timeline = await sweep.trial(name, f"v{version}", kills)
        results.append((name, status, "succeeded"))
        assert status == "succeeded", sweep.tail()
        await sweep.check_fleet(f"v{version}")
        return timeline

    async def rollback(name: str, kills: list[At]) -> dict[str, float]:
        status, timeline = await sweep.trial(name, f"broken-{name}", kills, broken=True)
        results.append((name, status, "rolled_back"))
        assert status == "rolled_back", sweep.tail()
        if gave_up_stuck(sweep.logs[-1]):
            # The known engine bug (see ENGINE_BUG): repair the fleet, go on checking the rest.
            sweep.engine_bug.append(name)
            await sweep.repair(name, f"v{version}")
        await sweep.check_fleet(f"v{version}")
        return timeline

    async with anyio.create_task_group() as tg:
        tg.start_soon(load.run)
        await anyio.sleep(0.5)
        # Measure one whole rollout, then kill controllers all over it.
        work = (await forward("measure-forward", []))["end"]
        for index, kills in enumerate(spread(FORWARD_TRIALS, KILLS_PER_TRIAL, work, At())):
            await forward(f"forward-time-{index}", kills)
        for index, kills in enumerate(FORWARD_EVENTS):
            await forward(f"forward-events-{index}", kills)
        # A target that fails on its third instance: the rollout reverts the first two.
        timeline = await rollback("measure-rollback", [])
        work = timeline["end"] - timeline["rollback_started"]
        trigger = At(phase="rollback_started")
        for index, kills in enumerate(spread(ROLLBACK_TRIALS, ROLLBACK_KILLS, work, trigger)):
            await rollback(f"rollback-time-{index}", kills)
        for index, kills in enumerate(ROLLBACK_EVENTS):
            await rollback(f"rollback-events-{index}", kills)
        await anyio.sleep(0.5)
        load.stop()
    verify(sweep, results, load.samples)


def verify(sweep: Sweep, results: list[tuple[str, str, str]], samples: list[Sample]) -> None:
    """Report the sweep, then check what must hold across it."""
    final = {int(e["pid"]) for e in read_state(sweep.state)}
    leaked = sorted(pid for pid in sweep.pids_seen - final if alive(pid))
    failed = [s for s in samples if not s.ok]
    outside = failed_outside(samples, sweep.windows)
    mid_rollout = [k for k in sweep.kills if k.point != "after the end"]
    recovered = [k for k in mid_rollout if k.trial not in sweep.engine_bug]
    in_rollback = [k for k in mid_rollout if k.rolling_back]
    points = collections.Counter(
        ("rolling back: " if k.rolling_back else "") + k.point for k in sweep.kills
    )
    print(  # noqa: T201 - the sweep's report, shown with -s
        f"\nkill sweep: {len(results)} trials, {len(sweep.kills)} kills ({len(mid_rollout)}"
        f" before the rollout ended, {len(in_rollback)} of them while rolling back),"
        f" {len(recovered)} recovered, {len(leaked)} leaked; {len(samples)} requests,"
        f" {len(failed)} failed, {len(outside)} outside {len(sweep.windows)} dead windows"
        f" (longest {max((b - a for a, b in sweep.windows), default=0):.2f}s)\n"
        f"  kill points: {dict(sorted(points.items()))}\n"
        + "".join(f"  {k.trial}: {describe_at(k.at)} -> {k.point}\n" for k in sweep.kills)
    )
    report = {
        "trials": results,
        "kills": [attrs.asdict(k) for k in sweep.kills],
        "windows": sweep.windows,
        "requests": len(samples),
        "failed": [attrs.asdict(s) for s in failed],
    }
    (sweep.root / "report.json").write_text(json.dumps(report, indent=1))
    assert all(status == expected for _, status, expected in results), results
    assert len(mid_rollout) >= 30, points
    assert leaked == []
    assert outside == [], outside[:10]
    assert len(samples) > 1000
    if sweep.engine_bug:
        # The bug ends a rollback trial early: its later kill points never come.
        pytest.xfail(f"{ENGINE_BUG} (hit in {', '.join(sweep.engine_bug)})")
    assert len(in_rollback) >= 8, points


def describe_at(at: At) -> str:
    trigger = "running" if at.phase is None else at.phase
    if at.rollback:
        trigger += " (rollback)"
    if at.nth > 1:
        trigger += f" #{at.nth}"
    return f"{trigger} +{at.after:.3f}s"

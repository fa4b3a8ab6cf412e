"""Promises a second audit checked from the side of automation that embeds rolling.

The testing toolkit, the command line as a pipeline sees it, and recovery with journals and
locks of one's own, written from :mod:`rolling.typing`; public API only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import attrs
import jsonschema
import pytest

import rolling
from helpers import CLI_EVENTS_SCHEMA, ElasticOnly
from rolling import Readiness, RollingUpdate, Rollout, RolloutStatus
from rolling.testing import (
    EventRecorder,
    InvariantMonitor,
    InvariantViolation,
    Latency,
    SimulatedFleet,
)
from rolling.typing import JournalRecord

pytestmark = pytest.mark.anyio

MUTATING = frozenset({"detach", "attach", "replace", "launch", "terminate", "set_weight"})


class LinesJournal:
    """A journal of JSON lines in memory, as a database-backed one would keep them.

    Records go through ``json.dumps`` (nothing is shared with the engine); with ``fail_after``
    every append after that many raises ``OSError`` (a full disk), and what was written before
    stays, as it would on disk.
    """

    def __init__(
        self,
        lines: Sequence[str] = (),
        *,
        fail_after: int | None = None,
        error: Callable[[], Exception] = lambda: OSError(28, "No space left on device"),
    ) -> None:
        self.lines = list(lines)
        self.fail_after = fail_after
        self.error = error
        self.appends = 0
        self.closes = 0

    async def load(self) -> list[JournalRecord]:
        return [json.loads(line) for line in self.lines]

    async def append(self, record: JournalRecord, *, sync: bool = False) -> None:
        del sync  # every line is kept at once
        self.appends += 1
        if self.fail_after is not None and self.appends > self.fail_after:
            raise self.error()
        self.lines.append(json.dumps(record))

    async def close(self) -> None:
        self.closes += 1


def in_place(fleet: SimulatedFleet, journal: LinesJournal, recorder: EventRecorder) -> Rollout[Any]:
    return Rollout(
        fleet,
        "v2",
        router=fleet,
        readiness=Readiness(check=fleet, period=1, deadline=30),
        journal=journal,
        observers=[recorder],
    )


def elastic(fleet: SimulatedFleet, journal: LinesJournal, recorder: EventRecorder) -> Rollout[Any]:
    return Rollout(
        ElasticOnly(fleet),
        "v2",
        strategy=RollingUpdate(max_unavailable=0, max_surge=1),
        router=fleet,
        readiness=Readiness(check=fleet, period=1, deadline=30),
        journal=journal,
        observers=[recorder],
    )


def take_out(fleet: SimulatedFleet, journal: LinesJournal, recorder: EventRecorder) -> Rollout[Any]:
    return Rollout(
        ElasticOnly(fleet),
        "v2",
        router=fleet,
        readiness=Readiness(check=fleet, period=1, deadline=30),
        journal=journal,
        observers=[recorder],
    )


def canary(fleet: SimulatedFleet, journal: LinesJournal, recorder: EventRecorder) -> Rollout[Any]:
    return Rollout(
        ElasticOnly(fleet),
        "v2",
        strategy=rolling.Canary(scale_down_delay=5),
        steps=[rolling.SetWeight(50), rolling.Pause(10)],
        router=fleet,
        readiness=Readiness(check=fleet, period=1, deadline=30),
        journal=journal,
        observers=[recorder],
    )


def blue_green(
    fleet: SimulatedFleet, journal: LinesJournal, recorder: EventRecorder
) -> Rollout[Any]:
    return Rollout(
        ElasticOnly(fleet),
        "v2",
        strategy=rolling.BlueGreen(scale_down_delay=5),
        router=fleet,
        readiness=Readiness(check=fleet, period=1, deadline=30),
        journal=journal,
        observers=[recorder],
    )


def rolling_back(
    fleet: SimulatedFleet, journal: LinesJournal, recorder: EventRecorder
) -> Rollout[Any]:
    """The last instance never gets ready: the two before it are reverted."""
    fleet.fault("i-002", version="v2", never_ready=True)
    return in_place(fleet, journal, recorder)


def monitor_of(
    rollout: Rollout[Any], fleet: SimulatedFleet, *, raise_immediately: bool = True
) -> InvariantMonitor:
    """The monitor testing-rollouts.md builds: held to the window the rollout resolves."""
    window = rollout.window(fleet.desired)
    return InvariantMonitor(
        fleet,
        max_unavailable=window.max_unavailable,
        max_surge=window.max_surge,
        raise_immediately=raise_immediately,
    )


Shape = Callable[[SimulatedFleet, LinesJournal, EventRecorder], Rollout[Any]]


async def undisturbed(shape: Shape) -> tuple[int, RolloutStatus, dict[str, int]]:
    """The records a run writes with a journal that works, how it ends, and where the fleet is."""
    journal = LinesJournal()
    fleet = SimulatedFleet(3)
    result = await shape(fleet, journal, EventRecorder()).run()
    return journal.appends, result.status, fleet.version_counts()


@pytest.mark.parametrize(
    "shape",
    [in_place, elastic, take_out, canary, blue_green, rolling_back],
    ids=["in-place", "surge", "take-out", "canary", "blue-green", "rolling-back"],
)
@pytest.mark.parametrize("fenced", [False, True], ids=["full-disk", "fenced"])
async def test_a_journal_that_fails_on_write_halts_truthfully_and_resumes(
    shape: Shape,
    fenced: bool,
) -> None:
    """recovery.md: write-ahead (no effect starts before its record is written), and
    Rollout.run: an error that ends the rollout comes out as itself; the invariant monitor's
    terminal truth holds for the result the observers saw, whichever write fails (a full disk,
    or a journal fenced by a lock lost at that moment); and the journal as far as it was
    written resumes to the end."""
    total, status, versions = await undisturbed(shape)
    error: Callable[[], Exception] = lambda: OSError(28, "No space left on device")  # noqa: E731
    if fenced:
        error = lambda: rolling.LockLostError("lost the lock: fenced")  # noqa: E731
    for fail_after in range(total):
        fleet = SimulatedFleet(3)
        journal = LinesJournal(fail_after=fail_after, error=error)
        recorder = EventRecorder()
        rollout = shape(fleet, journal, recorder)
        monitor = monitor_of(rollout, fleet, raise_immediately=False)
        with pytest.raises(rolling.LockLostError if fenced else OSError) as raised:
            await rollout.run()
        assert isinstance(raised.value, rolling.LockLostError) or not isinstance(
            raised.value, rolling.RollingError
        ), fail_after
        (finished,) = recorder.of_type(rolling.RolloutFinished)
        # HALTED, or SUCCEEDED when only the last record (the end) could not be written.
        assert finished.result.status is RolloutStatus.HALTED or journal.appends == total, (
            fail_after
        )
        monitor.check_result(finished.result)
        assert monitor.violations == [], (fail_after, monitor.violations)
        assert journal.closes == 1
        for item in finished.result.instances:  # what stopped it, not a clean-up deadline
            assert "did not finish in time" not in item.reason, (fail_after, item)
        # Write-ahead: every change the fleet saw was announced by a record that was written.
        announced = [json.loads(line) for line in journal.lines]
        started = Counter(r["op"] for r in announced if r.get("t") == "fx" and r["s"] == "start")
        changed = Counter(call.op for call in fleet.calls if call.op in MUTATING)
        assert changed <= started, (fail_after, changed, started)
        monitor.close()

        # The operator frees the disk and runs the same rollout again on the same journal.
        again = LinesJournal(journal.lines)
        rollout = shape(fleet, again, EventRecorder())
        monitor = monitor_of(rollout, fleet)
        result = await rollout.run()
        monitor.check_result(result)
        assert result.status is status, (fail_after, result)
        assert fleet.version_counts() == versions


class FencedJournal(LinesJournal):
    """Refuses every write once its lock says so."""

    fail_with: Exception | None = None

    async def append(self, record: JournalRecord, *, sync: bool = False) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        await super().append(record, sync=sync)


class LeaseLock:
    """A lock with a lease (it has ``hold()``), lost at ``lost_at`` virtual seconds.

    With ``fence``, the journal it guards refuses every write from then on, as the
    rolling.typing.Lock docstring asks of such a lock.
    """

    def __init__(self, lost_at: float, fence: FencedJournal | None = None) -> None:
        self.lost_at = lost_at
        self.fence = fence
        self.events: list[str] = []

    async def acquire(self) -> None:
        self.events.append("acquire")

    async def release(self) -> None:
        self.events.append("release")

    async def hold(self) -> None:
        await anyio.sleep_until(self.lost_at)
        if self.fence is not None:
            self.fence.fail_with = rolling.LockLostError("lost the lock: the lease ran out")


@pytest.mark.parametrize("fenced", [True, False], ids=["fenced", "unfenced"])
async def test_a_lock_lost_mid_run_halts_and_the_next_holder_finishes(fenced: bool) -> None:
    """rolling.typing.Lock and recovery.md: when hold() returns, the rollout halts at once:
    nothing new starts, run() raises LockLostError, the result observers saw is halted with the
    reason "lost the lock ..."; the controller that holds the lock next resumes from the
    journal and finishes."""
    fleet = SimulatedFleet(6, latency=Latency(replace=10))
    journal = FencedJournal()
    lock = LeaseLock(15, journal if fenced else None)
    recorder = EventRecorder()
    starts: list[tuple[float, str, str | None]] = []
    fleet.add_listener(
        lambda change: (
            starts.append((change.at, change.op, change.instance_id))
            if change.phase == "begin" and change.op in MUTATING
            else None
        )
    )
    rollout = Rollout(
        fleet,
        "v2",
        strategy=RollingUpdate(max_unavailable=2),
        router=fleet,
        readiness=Readiness(check=fleet, period=1, deadline=60),
        journal=journal,
        lock=lock,
        observers=[recorder],
    )
    with anyio.fail_after(3600), pytest.raises(rolling.LockLostError, match="lost the lock"):
        await rollout.run()
    (finished,) = recorder.of_type(rolling.RolloutFinished)
    assert finished.result.status is RolloutStatus.HALTED
    assert finished.result.reason.startswith("error: LockLostError: lost the lock")
    # Nothing new started once the loss was seen (t=15); the two replaces begun at t=10 and
    # their own attach may still finish when the journal is not fenced.
    late = [s for s in starts if s[0] > 15 and s[1] in {"detach", "replace", "launch"}]
    assert late == [], late
    assert lock.events == ["acquire", "release"]

    # The next holder (a standby, or the same program run again) resumes from the journal.
    again = Rollout(
        fleet,
        "v2",
        strategy=RollingUpdate(max_unavailable=2),
        router=fleet,
        readiness=Readiness(check=fleet, period=1, deadline=60),
        journal=LinesJournal(journal.lines),
    )
    monitor = monitor_of(again, fleet)
    result = await again.run()
    monitor.check_result(result)
    assert result.status is RolloutStatus.SUCCEEDED
    assert fleet.version_counts() == {"v2": 6}


class RefusingLock:
    """Another controller holds the fleet."""

    async def acquire(self) -> None:
        raise rolling.LockedError("fleet web", "pid 4242 on ci-runner-3")

    async def release(self) -> None:  # pragma: no cover - never acquired
        raise AssertionError


async def test_a_lock_held_elsewhere_stops_the_run_before_anything() -> None:
    """recovery.md: a second controller gets LockedError naming the holder, before touching
    anything; Lock.acquire: the rollout reads its journal only once acquire returns."""
    fleet = SimulatedFleet(3)
    journal = LinesJournal()
    loads: list[int] = []
    original = journal.load

    async def load() -> list[JournalRecord]:
        loads.append(1)
        return await original()

    journal.load = load  # type: ignore[method-assign]
    rollout = Rollout(fleet, "v2", router=fleet, journal=journal, lock=RefusingLock())
    with pytest.raises(rolling.LockedError, match="ci-runner-3"):
        await rollout.run()
    assert [call for call in fleet.calls if call.op in MUTATING] == []
    assert loads == []
    assert journal.lines == []


class LeakyRouter:
    """A router with a bug: detaching one instance also takes its neighbour out of traffic."""

    def __init__(self, fleet: SimulatedFleet) -> None:
        self.fleet = fleet

    async def detach(self, instance: Any) -> None:
        await self.fleet.detach(instance)
        ids = [i.id for i in self.fleet.instances]
        neighbour = self.fleet.get(ids[(ids.index(instance.id) + 1) % len(ids)])
        if self.fleet.is_attached(neighbour.id):
            await self.fleet.detach(neighbour)

    async def attach(self, instance: Any) -> None:
        await self.fleet.attach(instance)


class LyingDriver:
    """A driver with a bug: it says it installed the version, and changed nothing."""

    def __init__(self, fleet: SimulatedFleet) -> None:
        self.fleet = fleet

    async def list_instances(self) -> Any:
        return await self.fleet.list_instances()

    async def replace(self, instance: Any, version: str) -> Any:
        return attrs.evolve(instance, version=version)


async def test_the_monitor_catches_a_router_that_takes_out_too_much() -> None:
    """testing-rollouts.md: the floor is checked when a detach of a serving instance begins;
    raise_immediately=False lets the run go on undisturbed and assert_ok() lists every
    violation with the time and what was out of service."""
    fleet = SimulatedFleet(4, latency=Latency(replace=10))
    rollout = Rollout(
        fleet, "v2", router=LeakyRouter(fleet), readiness=Readiness(check=fleet, period=1)
    )
    monitor = monitor_of(rollout, fleet, raise_immediately=False)
    result = await rollout.run()
    assert result.status is RolloutStatus.SUCCEEDED  # the engine cannot see the router's bug
    monitor.check_result(result)
    with pytest.raises(
        InvariantViolation, match="availability floor broken at t=0: detach of i-001"
    ):
        monitor.assert_ok()
    assert monitor.min_serving == 2
    # Left out of traffic by the bug, and reported by nobody: a leak.
    assert any("out of traffic but not reported" in v for v in monitor.violations)


async def test_the_monitor_raises_at_once_from_inside_the_bad_call() -> None:
    """By default a violation raises InvariantViolation inside the fleet operation: the engine
    sees the router's call fail, and check_result() raises again with everything recorded."""
    fleet = SimulatedFleet(4, latency=Latency(replace=10))
    rollout = Rollout(
        fleet,
        "v2",
        router=LeakyRouter(fleet),
        readiness=Readiness(check=fleet, period=1),
        failure=rolling.FailurePolicy(max_failed=4),
    )
    monitor = monitor_of(rollout, fleet)
    result = await rollout.run()
    assert "InvariantViolation" in " ".join(i.reason for i in result.instances)
    with pytest.raises(InvariantViolation, match="availability floor broken"):
        monitor.check_result(result)


async def test_the_monitor_catches_a_driver_that_lies_about_what_it_did() -> None:
    """check_result: every instance result tells the truth about the version in its place,
    and SUCCEEDED means every live instance runs the target."""
    fleet = SimulatedFleet(3)
    rollout = Rollout(LyingDriver(fleet), "v2", router=fleet)
    monitor = monitor_of(rollout, fleet)
    result = await rollout.run()
    assert result.status is RolloutStatus.SUCCEEDED
    with pytest.raises(InvariantViolation) as raised:
        monitor.check_result(result)
    assert "i-000 (updated) says i-000 runs v2, but it runs v1" in str(raised.value)
    assert "SUCCEEDED, but i-000 runs v1, not v2" in str(raised.value)


# ---------------------------------------------------------------- the command line's plugins

PLUGIN = '''
"""A driver plugin as a user writes one (docs/cli.md, Writing a plugin)."""
import json
from dataclasses import dataclass
from pathlib import Path

from rolling import ConfigError


@dataclass(frozen=True)
class Host:
    id: str
    version: str


class FileFleet:
    def __init__(self, path, mode):
        self.path, self.mode = Path(path), mode

    def note(self, line):
        with open(str(self.path) + ".log", "a") as log:
            log.write(line + "\\n")

    async def __aenter__(self):
        if self.mode == "enter-fails":
            raise RuntimeError("cannot reach the fleet API")
        self.note("enter")
        return self

    async def __aexit__(self, *exc):
        self.note("exit")

    async def list_instances(self):
        if self.mode == "list-fails":
            raise RuntimeError("the fleet API answered 503")
        return [Host(k, v) for k, v in json.loads(self.path.read_text()).items()]

    async def replace(self, instance, version):
        self.note(f"replace {instance.id} {version}")
        fleet = json.loads(self.path.read_text())
        fleet[instance.id] = version
        self.path.write_text(json.dumps(fleet))
        return Host(instance.id, version)


def driver(*, path: str, mode: str = "ok"):
    if mode not in {"ok", "enter-fails", "list-fails"}:
        raise ConfigError("mode", f"is {mode!r}, not a mode", 'write mode = "ok"')
    return FileFleet(path, mode)
'''


@pytest.fixture
def plugin_site(tmp_path: Path) -> Path:
    """The plugin installed as an installer lays out a wheel: the module and its entry point."""
    site = tmp_path / "site"
    (site / "acme_fleet").mkdir(parents=True)
    (site / "acme_fleet" / "__init__.py").write_text(PLUGIN)
    info = site / "acme_fleet-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-fleet\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[rolling.drivers]\nacme = acme_fleet:driver\n")
    return site


def cli(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "rolling", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def json_lines(stdout: str) -> list[dict[str, Any]]:
    validator: Any = jsonschema.Draft202012Validator(CLI_EVENTS_SCHEMA)
    lines = [json.loads(line) for line in stdout.splitlines()]
    for line in lines:
        validator.validate(line)
    return lines


@pytest.mark.parametrize(
    ("mode", "words"),
    [
        ("list-fails", "RuntimeError: the fleet API answered 503"),
        ("enter-fails", "RuntimeError: cannot reach the fleet API"),
    ],
)
def test_a_plugin_whose_fleet_cannot_be_reached_fails_the_run_with_status_5(
    plugin_site: Path, tmp_path: Path, mode: str, words: str
) -> None:
    """cli.md, exit statuses: 5 "failed: it could not start (a plugin, the fleet, ...), or
    ended on an error"; JSON lines: the exit object says why in its "error" (the error itself,
    not a task group that carried it), and every line follows the schema."""
    (tmp_path / "fleet.json").write_text('{"web-1": "v1", "web-2": "v1"}')
    (tmp_path / "deploy.toml").write_text(
        f'[driver]\nplugin = "acme"\npath = "fleet.json"\nmode = "{mode}"\n'
    )
    assert cli(plugin_site, tmp_path, "validate", "deploy.toml").returncode == 0
    assert not (tmp_path / "fleet.json.log").exists()  # validate touches no fleet

    run = cli(plugin_site, tmp_path, "run", "deploy.toml", "--to", "v2", "--json")
    assert run.returncode == 5, run.stderr
    end = json_lines(run.stdout)[-1]
    assert (end["event"], end["outcome"], end["exit_code"]) == ("exit", "failed", 5)
    assert end["error"] == words
    assert f"rolling run: {words}" in run.stderr

    plain = cli(plugin_site, tmp_path, "run", "deploy.toml", "--to", "v2")
    assert plain.returncode == 5
    assert plain.stdout.splitlines()[-1].startswith("rolling run: failed")


def test_a_plugin_of_ones_own_rolls_and_refuses_a_bad_setting(
    plugin_site: Path, tmp_path: Path
) -> None:
    """cli.md, Writing a plugin: the factory's keywords are its settings, a ConfigError names
    the key at its line (exit 78), and run enters an async context manager for the run."""
    (tmp_path / "fleet.json").write_text('{"web-1": "v1", "web-2": "v1"}')
    (tmp_path / "deploy.toml").write_text('[driver]\nplugin = "acme"\npath = "fleet.json"\n')
    run = cli(plugin_site, tmp_path, "run", "deploy.toml", "--to", "v2", "--json")
    assert run.returncode == 0, run.stderr
    assert json_lines(run.stdout)[-1]["outcome"] == "succeeded"
    assert json.loads((tmp_path / "fleet.json").read_text()) == {"web-1": "v2", "web-2": "v2"}
    log = (tmp_path / "fleet.json.log").read_text().split("\n")
    assert log[0] == "enter"
    assert log[-2] == "exit"

    (tmp_path / "bad.toml").write_text(
        '[driver]\nplugin = "acme"\npath = "fleet.json"\nmode = "fast"\n'
    )
    for args in (["validate", "bad.toml"], ["run", "bad.toml", "--to", "v2", "--json"]):
        refused = cli(plugin_site, tmp_path, *args)
        assert refused.returncode == 78
        assert "bad.toml:4: driver.mode: is 'fast', not a mode; write mode = \"ok\"" in (
            refused.stderr
        )
    end = json_lines(refused.stdout)[-1]
    assert (end["outcome"], end["exit_code"]) == ("bad_configuration", 78)


# ---------------------------------------------------------------- secrets in the command line

SECRET = "hunter2-secret"  # noqa: S105 - a made-up value to look for


def with_secret(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "rolling", *args],
        cwd=cwd,
        env={**os.environ, "DEPLOY_TOKEN": SECRET},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_plan_never_prints_a_secret(tmp_path: Path) -> None:
    """cli.md, Secrets: the values substituted for ${NAME} are never printed."""
    (tmp_path / "deploy.toml").write_text(
        '[driver]\nplugin = "simulated"\ninstances = 2\nversion = "${DEPLOY_TOKEN}"\n'
    )
    plan = with_secret(tmp_path, "plan", "deploy.toml", "--to", "v2")
    assert plan.returncode == 0, plan.stderr
    assert "i-000  ***" in plan.stdout
    assert SECRET not in plan.stdout + plan.stderr


def test_a_json_run_and_its_control_replies_never_print_a_secret(tmp_path: Path) -> None:
    """cli.md, Secrets: not in the summary a --json run writes on stderr, nor in what the
    control commands print (a status names the run's target)."""
    (tmp_path / "deploy.toml").write_text(
        '[driver]\nplugin = "simulated"\ninstances = 2\nversion = "v1"\n'
        '[[steps]]\nadvance = 1\n[[steps]]\npause = "promote"\n'
        '[journal]\npath = "deploy-${DEPLOY_TOKEN}.journal"\n'
    )
    target = f"{SECRET}-2"
    run = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "rolling", "run", "deploy.toml", "--to", target, "--json"],
        cwd=tmp_path,
        env={**os.environ, "DEPLOY_TOKEN": SECRET},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        status = with_secret(tmp_path, "status", "deploy.toml", "--json")
        for _ in range(300):  # at most 30 s for the run to reach its pause
            status = with_secret(tmp_path, "status", "deploy.toml", "--json")
            if status.returncode == 0 and json.loads(status.stdout)["status"]["step"]:
                break
            time.sleep(0.1)
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["status"]["target"] == "***-2"
        plain = with_secret(tmp_path, "status", "deploy.toml")
        assert "-> ***-2" in plain.stdout
        promote = with_secret(tmp_path, "promote", "deploy.toml", "--json")
        assert promote.returncode == 0
        for output in (status, plain, promote):
            assert SECRET not in output.stdout + output.stderr
        stdout, stderr = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert run.returncode == 0, stderr
    assert SECRET not in stdout + stderr
    assert "rolling run: succeeded (***-2)" in stderr


async def test_handle_wait_raises_what_stopped_the_rollout_before_it_began() -> None:
    """RolloutHandle.wait returns the result, and start() raises the rollout's errors as
    themselves: a lock held elsewhere is a LockedError from wait(), not a ControlError saying
    the rollout has not finished."""
    fleet = SimulatedFleet(2)
    rollout = Rollout(fleet, "v2", router=fleet, journal=LinesJournal(), lock=RefusingLock())

    async def wait_in_the_block() -> None:
        async with rollout.start() as handle:
            with pytest.raises(rolling.LockedError, match="ci-runner-3"):
                await handle.wait()

    with pytest.raises(rolling.LockedError, match="ci-runner-3"):
        await wait_in_the_block()
    assert fleet.calls == []


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the lock is a real flock
async def test_a_run_whose_journal_is_locked_says_who_holds_it(tmp_path: Path) -> None:
    """cli.md: exit 5 when it could not start (the lock); the exit object says why."""
    (tmp_path / "deploy.toml").write_text(
        'control = "elsewhere.sock"\n[driver]\nplugin = "simulated"\ninstances = 2\n'
        'version = "v1"\n[journal]\npath = "deploy.journal"\n'
    )
    lock = rolling.FileLock(tmp_path / "deploy.journal.lock")
    await lock.acquire()
    try:
        run = await anyio.to_thread.run_sync(
            lambda: cli(tmp_path, tmp_path, "run", "deploy.toml", "--to", "v2", "--json")
        )
    finally:
        await lock.release()
    assert run.returncode == 5, run.stderr
    end = json_lines(run.stdout)[-1]
    assert end["outcome"] == "failed"
    assert end["error"].startswith("LockedError: ")
    assert "is locked by another rollout" in end["error"]


def test_a_control_socket_that_cannot_be_made_fails_the_run_naming_it(tmp_path: Path) -> None:
    """cli.md: exit 5 when it could not start (... the control socket), and the exit object says
    why: which socket, so a pipeline's log shows what to fix."""
    (tmp_path / "deploy.toml").write_text(
        'control = "no-such-dir/deploy.sock"\n[driver]\nplugin = "simulated"\ninstances = 2\n'
    )
    run = cli(tmp_path, tmp_path, "run", "deploy.toml", "--to", "v2", "--json")
    assert run.returncode == 5, run.stderr
    end = json_lines(run.stdout)[-1]
    assert end["outcome"] == "failed"
    assert "no-such-dir/deploy.sock" in end["error"]


def test_two_packages_that_register_one_name_are_named_both(
    plugin_site: Path, tmp_path: Path
) -> None:
    """cli.md: two packages that register the same name in a group are an error naming both."""
    (plugin_site / "rival_fleet").mkdir()
    (plugin_site / "rival_fleet" / "__init__.py").write_text(PLUGIN)
    info = plugin_site / "rival_fleet-2.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: rival-fleet\nVersion: 2.0\n")
    (info / "entry_points.txt").write_text("[rolling.drivers]\nacme = rival_fleet:driver\n")
    (tmp_path / "deploy.toml").write_text('[driver]\nplugin = "acme"\npath = "fleet.json"\n')
    validate = cli(plugin_site, tmp_path, "validate", "deploy.toml")
    assert validate.returncode == 78
    assert "package acme-fleet 1.0" in validate.stderr
    assert "package rival-fleet 2.0" in validate.stderr

"""``rolling plan``: no mutating call, learned durations, and the longest-first order."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from helpers import ROLLING, rolling_cli
from rolling.cli._file import RolloutFileError, load_file
from rolling.cli._plan import learned_durations
from rolling.cli._run import plan_file
from rolling.testing import FleetCall, SimulatedFleet


def line(event: str, at: float, **fields: object) -> str:
    return json.dumps({"schema": 1, "event": event, "at": at, "wall": at, **fields})


def phase(instance: str, name: str, at: float, *, rollback: bool = False) -> str:
    return line(
        "instance_phase_changed",
        at,
        instance_id=instance,
        phase=name,
        version="v",
        rollback=rollback,
    )


def test_plan_lists_the_fleet_and_makes_no_mutating_call(tmp_path: Path) -> None:
    path = tmp_path / "deploy.toml"
    path.write_text(
        'rollback = "halt"\n[driver]\nplugin = "simulated"\ninstances = 5\n'
        '[check]\nplugin = "tcp"\n'
        '[strategy]\ntype = "batches"\nsizes = [1, 2]\n'
        '[[steps]]\npause = 4\n[[steps]]\npause = "promote"\n'
    )
    loaded = load_file(path)
    fleet = loaded.driver.built
    assert isinstance(fleet, SimulatedFleet)
    plan = anyio.run(lambda: plan_file(loaded, "v2", history=None, estimate=3.0))
    # Only list_instances() reached the fleet: no detach, replace, launch, probe or attach.
    assert fleet.calls == [FleetCall("list_instances", None, None)]
    assert plan.to_update == ("i-000", "i-001", "i-002", "i-003", "i-004")
    assert plan.window == "batches of 1, 2, 2"
    assert [round(end, 1) for _, _, end in plan.starts] == [7.0, 10.0, 10.0, 13.0, 13.0]
    assert plan.waits_for_promote
    text = plan.to_text()
    assert "predicted total: 13.0 s plus the wait for `rolling promote`" in text
    assert "steps: pause 4 s; pause until `rolling promote`" in text


def plan(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return rolling_cli("plan", *map(str, args), cwd=cwd)


def test_plan_starts_no_process_fleet_and_creates_no_file(tmp_path: Path) -> None:
    state = tmp_path / "fleet.json"
    (tmp_path / "p.toml").write_text(
        f'[driver]\nplugin = "process"\ncommand = ["{sys.executable}", "-c", "pass"]\n'
        f'instances = 3\nstate_file = "{state}"\nlog_dir = "logs"\n'
    )
    done = plan("p.toml", "--to", "v2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("fleet: 0 instances")
    # No state file, no lock file, no log directory: a plan changes nothing.
    assert [p.name for p in tmp_path.iterdir()] == ["p.toml"]


def test_plan_reads_a_running_process_fleet_and_writes_nothing(
    tmp_path: Path, fleet_file: Path
) -> None:
    app = [sys.executable, "-m", "rolling.demo.app", "--version", "{version}", "--port", "{port}"]
    (tmp_path / "p.toml").write_text(
        f'[driver]\nplugin = "process"\ncommand = {json.dumps(app)}\ninstances = 2\n'
        f'state_file = "{fleet_file}"\n[check]\nplugin = "http"\n'
    )
    ran = rolling_cli("run", "p.toml", "--to", "v2", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    before = {
        p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.iterdir() if p.is_file()
    }
    done = plan("p.toml", "--to", "v3", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "fleet: 2 instances\n  p-0  v2\n  p-1  v2\n" in done.stdout
    after = {
        p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.iterdir() if p.is_file()
    }
    assert after == before


def test_steps_hold_the_timeline_where_their_advance_is_reached(tmp_path: Path) -> None:
    """The pause after Advance(1) comes after the first instance, not before it."""
    path = tmp_path / "deploy.toml"
    path.write_text(
        '[driver]\nplugin = "simulated"\ninstances = 4\n'
        "[[steps]]\nadvance = 1\n[[steps]]\npause = 100\n"
        '[[steps]]\nadvance = 2\n[[steps]]\npause = "promote"\n[[steps]]\npause = 5\n'
    )
    planned = anyio.run(lambda: plan_file(load_file(path), "v2", history=None, estimate=10.0))
    assert planned.starts == (
        ("i-000", 0.0, 10.0),
        ("i-001", 110.0, 120.0),
        ("i-002", 125.0, 135.0),
        ("i-003", 135.0, 145.0),
    )
    assert planned.total == 145.0
    assert planned.waits_for_promote
    # Steps after an Advance to the whole fleet hold after the last instance.
    path.write_text(
        '[driver]\nplugin = "simulated"\ninstances = 2\n'
        '[[steps]]\nadvance = "100%"\n[[steps]]\npause = 7\n'
    )
    planned = anyio.run(lambda: plan_file(load_file(path), "v2", history=None, estimate=10.0))
    assert [end for _, _, end in planned.starts] == [10.0, 20.0]
    assert planned.total == 27.0


def test_the_pause_between_batches_is_named_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "deploy.toml"
    path.write_text(
        '[driver]\nplugin = "simulated"\ninstances = 4\n'
        '[strategy]\ntype = "batches"\nsizes = [1, "50%"]\npause = 30\n'
    )
    planned = anyio.run(lambda: plan_file(load_file(path), "v2", history=None, estimate=10.0))
    assert planned.window == "batches of 1, 2, 1"
    assert planned.steps == ("pause 30 s between batches",)
    assert [(start, end) for _, start, end in planned.starts] == [
        (0.0, 10.0),
        (40.0, 50.0),
        (40.0, 50.0),
        (80.0, 90.0),
    ]
    assert planned.total == 90.0
    assert not planned.waits_for_promote
    path.write_text(path.read_text().replace("pause = 30", 'pause = "promote"'))
    planned = anyio.run(lambda: plan_file(load_file(path), "v2", history=None, estimate=10.0))
    assert planned.waits_for_promote
    assert planned.total == 30.0


def test_plan_refuses_a_negative_estimate_and_a_history_it_cannot_read(tmp_path: Path) -> None:
    (tmp_path / "deploy.toml").write_text('[driver]\nplugin = "simulated"\n')
    done = plan("deploy.toml", "--to", "v2", "--estimate", "-5", cwd=tmp_path)
    assert done.returncode == 64
    assert "argument --estimate: expected seconds >= 0, got '-5'" in done.stderr
    missing = tmp_path / "nonexistent.events"
    done = plan("deploy.toml", "--to", "v2", "--history", missing, cwd=tmp_path)
    assert done.returncode == 66
    assert f"cannot read the --history log {missing}: No such file or directory" in done.stderr
    assert done.stdout == ""


def test_durations_are_learned_from_the_last_run_only(tmp_path: Path) -> None:
    log = tmp_path / "deploy.journal.events"
    log.write_text(
        "\n".join(
            [
                line("rollout_started", 0.0),
                phase("a", "detaching", 0.0),
                phase("a", "updated", 9.0),
                line("rollout_started", 100.0),
                phase("a", "detaching", 100.0),
                phase("a", "updated", 102.5),
                phase("b", "detaching", 100.0),
                phase("b", "updated", 101.0),
                phase("b", "reverting", 103.0, rollback=True),
                phase("c", "detaching", 101.0),
                phase("c", "failed", 104.0),
                "{torn",
            ]
        )
    )
    assert learned_durations(log) == {"a": 2.5, "b": 1.0}
    assert learned_durations(tmp_path / "missing") == {}


def test_longest_first_orders_by_the_journals_log(tmp_path: Path) -> None:
    journal = tmp_path / "deploy.journal"
    (tmp_path / "deploy.journal.events").write_text(
        "\n".join(
            [
                line("rollout_started", 0.0),
                *(phase(f"i-00{k}", "detaching", 0.0) for k in range(3)),
                phase("i-000", "updated", 1.0),
                phase("i-001", "updated", 3.0),
                phase("i-002", "updated", 2.0),
            ]
        )
    )
    path = tmp_path / "deploy.toml"
    path.write_text(
        f'[driver]\nplugin = "simulated"\ninstances = 4\n[journal]\npath = "{journal}"\n'
        '[order]\ntype = "longest-first"\n'
    )
    loaded = load_file(path)
    plan = anyio.run(lambda: plan_file(loaded, "v2", history=None, estimate=9.0))
    assert plan.to_update == ("i-001", "i-002", "i-000", "i-003")  # unknown i-003 goes last
    assert plan.learned == 3
    path.write_text('[driver]\nplugin = "simulated"\n[order]\ntype = "longest-first"\n')
    with pytest.raises(RolloutFileError, match="learns durations from the events log"):
        load_file(path)


def test_a_reader_that_goes_away_stops_plan_quietly(tmp_path: Path) -> None:
    # `rolling plan deploy.toml | head`: no traceback, the status a pipe's writer gets.
    spec = tmp_path / "deploy.toml"
    spec.write_text('[driver]\nplugin = "simulated"\ninstances = 5000\n')
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [*ROLLING, "plan", str(spec), "--to", "v2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    assert process.stdout is not None
    assert process.stdout.readline().startswith(b"fleet:")
    process.stdout.close()
    _, errors = process.communicate(timeout=60)
    assert process.returncode == 141
    assert b"Traceback" not in errors


async def _hang(*_args: object) -> list[object]:
    await anyio.sleep_forever()
    raise AssertionError("unreachable")


@pytest.mark.anyio
async def test_plan_bounds_list_instances_by_effect_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A driver that never answers list_instances() stops `rolling plan` after effect_timeout."""
    path = tmp_path / "deploy.toml"
    path.write_text('effect_timeout = 3\n[driver]\nplugin = "simulated"\ninstances = 2\n')
    loaded = load_file(path)
    monkeypatch.setattr(SimulatedFleet, "list_instances", _hang)
    started = anyio.current_time()
    with pytest.raises(TimeoutError, match=r"list_instances\(\) did not answer in 3 s"):
        await plan_file(loaded, "v2", history=None, estimate=1.0)
    assert anyio.current_time() - started == pytest.approx(3.0, abs=0.01)


@pytest.mark.anyio
async def test_run_bounds_its_own_list_instances_for_the_balancer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The run lists the fleet for an empty built-in balancer itself, bounded as the engine is."""
    from rolling.cli._run import _serve_the_fleet  # noqa: PLC0415 - the helper under test
    from rolling.routers.balancer import Balancer  # noqa: PLC0415 - only this test needs it

    monkeypatch.setattr(SimulatedFleet, "list_instances", _hang)
    with pytest.raises(TimeoutError, match=r"list_instances\(\) did not answer in 2 s"):
        await _serve_the_fleet(Balancer(), SimulatedFleet(2), 2.0)

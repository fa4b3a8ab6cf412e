"""``rolling demo`` end to end: real processes, real sockets, real load, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from helpers import alive
from rolling.cli import main

DEMO = [sys.executable, "-m", "rolling", "demo"]


def run_demo(*options: str, timeout: float = 120) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        [*DEMO, "--json", *options],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return done.returncode, json.loads(done.stdout)


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def test_draining_gives_zero_failed_requests_and_no_drain_does_not() -> None:
    code, drained = run_demo("--instances", "4")
    assert code == 0, drained
    assert drained["status"] == "succeeded"
    assert drained["failed"] == 0
    assert drained["requests"] > 100
    assert set(drained["share"]) == {"v1", "v2"}
    code, naive = run_demo("--instances", "4", "--no-drain")
    assert naive["status"] == "succeeded"
    assert naive["failed"] > 0, naive
    assert code == 2


def test_faulty_release_is_caught_by_analysis_and_not_without() -> None:
    code, watched = run_demo("--instances", "4", "--faulty", "10")
    assert code == 1, watched
    assert watched["status"] == "rolled_back"
    assert "error-ratio" in watched["reason"]
    assert watched["final_versions"] == {"v1": 4}
    assert watched["detect_seconds"] is not None
    assert watched["failed"] > 0
    code, naive = run_demo("--instances", "4", "--faulty", "10", "--no-analysis")
    assert code == 2, naive
    assert naive["status"] == "succeeded"
    assert naive["final_versions"] == {"v2": 4}
    assert naive["detect_seconds"] is None
    assert naive["failed"] > watched["failed"]


def test_slow_release_is_rolled_back_on_p90() -> None:
    code, report = run_demo("--instances", "3", "--slow", "150")
    assert code == 1, report
    assert "p90-latency" in report["reason"]
    assert report["final_versions"] == {"v1": 3}


def test_broken_release_rolls_back_without_a_failed_request() -> None:
    code, report = run_demo("--instances", "4", "--broken")
    assert report["status"] == "rolled_back"
    assert report["failed"] == 0
    assert code == 1
    assert set(report["share"]) == {"v1"}


def test_batches_and_surge_options() -> None:
    code, report = run_demo("--instances", "5", "--strategy", "batches", "--max-unavailable", "2")
    assert code == 0, report
    assert report["strategy"] == "batches of 2"
    code, report = run_demo("--instances", "3", "--max-unavailable", "0", "--max-surge", "1")
    assert code == 0, report
    assert report["failed"] == 0


def test_sigint_mid_rollout_leaves_no_process_behind() -> None:
    with subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [*DEMO, "--instances", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as demo:
        assert demo.stdout is not None
        seen: set[int] = set()
        deadline = time.monotonic() + 60
        for line in demo.stdout:
            seen |= descendants(demo.pid)
            if "working:" in line and "working: -" not in line:
                break
            assert time.monotonic() < deadline
        seen |= descendants(demo.pid)
        assert len(seen) >= 4
        demo.send_signal(signal.SIGINT)
        output = demo.stdout.read()
        assert demo.wait(timeout=60) == 130, output
    assert "interrupted" in output
    leftovers = [pid for pid in seen if alive(pid)]
    assert leftovers == []


def test_usage_errors_exit_64(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--instances", "0"]) == 64
    assert main(["demo", "--max-unavailable", "lots"]) == 64
    assert main(["nonsense"]) == 64
    assert "--max-unavailable" in capsys.readouterr().err

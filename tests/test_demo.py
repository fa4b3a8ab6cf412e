"""``rolling demo`` end to end: real processes, real sockets, real load, real signals."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from helpers import alive
from rolling.cli import main
from rolling.demo._load import LoadGenerator, Sample
from rolling.demo._progress import Progress
from rolling.demo._report import DemoReport
from rolling.demo._runner import DemoOptions, size_note
from rolling.events import RollbackStarted, TrafficShifted

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
    # One reason, said once: no nested parentheses, no second copy of the deadline.
    assert "deadline; last probe: HTTP 503" in report["reason"]
    assert "s, last:" not in report["reason"]
    assert report["failed"] == 0
    assert code == 1
    assert set(report["share"]) == {"v1"}


def test_flag_turns_on_once_all_run_v2_and_off_before_a_rollback() -> None:
    code, report = run_demo("--instances", "4", "--flag", "--no-analysis")
    assert code == 0, report
    assert report["flag_changes"][0].startswith("new-format on (enable)")
    assert report["flag_checked"] > 100
    assert report["flag_on"] > 0  # the apps really read it on, through OpenFeature
    assert report["flag_on_old"] == 0
    code, broken = run_demo("--instances", "4", "--flag", "--broken", "--no-analysis")
    assert code == 1, broken
    assert broken["status"] == "rolled_back"
    assert broken["flag_changes"][0].startswith("new-format off (disable)")
    assert broken["flag_on"] == 0


def test_batches_and_surge_options(tmp_path: Path) -> None:
    page = tmp_path / "demo.html"
    code, report = run_demo(
        "--instances", "5", "--strategy", "batches", "--max-unavailable", "2", "--html", str(page)
    )
    assert code == 0, report
    assert report["strategy"] == "batches of 2"
    html = page.read_text()  # the demo's timeline: one row per process, batches marked
    assert html.count('<g class="row"') == 5
    assert "batch 3" in html
    code, report = run_demo("--instances", "3", "--max-unavailable", "0", "--max-surge", "1")
    assert code == 0, report
    assert report["failed"] == 0


def test_canary_demo_shifts_traffic_step_by_step_then_promotes() -> None:
    code, report = run_demo("--instances", "4", "--strategy", "canary")
    assert code == 0, report
    assert report["status"] == "succeeded"
    assert report["failed"] == 0
    assert report["final_versions"] == {"v2": 4}
    assert report["strategy"] == "canary (10 %, 50 %, then promotion)"
    step10, step50, switch = report["traffic"]
    assert step10.startswith("step at ")
    assert "asked 10 %, weights give 10.0 %" in step10
    assert "asked 50 %, weights give 50.0 %" in step50
    assert switch.startswith("switch at ")
    assert "measured 100.0 %" in switch


def test_blue_green_demo_switches_and_a_faulty_green_switches_back() -> None:
    code, report = run_demo("--instances", "3", "--strategy", "blue-green")
    assert code == 0, report
    assert report["failed"] == 0
    assert report["final_versions"] == {"v2": 3}
    assert report["strategy"] == "blue-green (post-promotion analysis, blue kept 3 s)"
    [switch] = report["traffic"]
    assert "asked 100 %" in switch
    code, faulty = run_demo("--instances", "3", "--strategy", "blue-green", "--faulty", "20")
    assert code == 1, faulty
    assert faulty["status"] == "rolled_back"
    assert "error-ratio" in faulty["reason"]
    assert faulty["final_versions"] == {"v1": 3}
    # Only green's own errors: the switch and the switch back refused no request.
    assert set(faulty["errors"]) == {"HTTP 500"}
    switch, back = faulty["traffic"]
    assert switch.startswith("switch at ")
    assert back.startswith("rollback at ")
    assert "back to v1, measured" in back


def test_a_rolling_demo_report_has_no_traffic_lines() -> None:
    report = DemoReport.build(
        result=None,
        samples=[Sample(at=0.0, latency=0.01, ok=True, version="v1")],
        instances=1,
        strategy="rolling update",
        drain=True,
        demo_seconds=1.0,
        interrupted=True,
    )
    assert "traffic" not in json.loads(report.to_json())
    assert "  traffic  " not in report.to_text()


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


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.anyio
@pytest.mark.parametrize("terminal", [True, False])
async def test_the_status_line_counts_from_its_start_and_ends_once(terminal: bool) -> None:
    load = LoadGenerator("127.0.0.1", 9, concurrency=1)
    out = FakeTerminal() if terminal else io.StringIO()
    progress = Progress(load, out, interval=1.0)
    progress.seed({"p-0": "v1"})
    async with anyio.create_task_group() as tg:
        tg.start_soon(progress.run)
        await anyio.sleep(0.1)
        for n in range(100):  # 100 requests within the first interval
            load.samples.append(Sample(at=n / 100, latency=0.01, ok=True, version="v1"))
        await anyio.sleep(1.0)
        tg.cancel_scope.cancel()
    text = out.getvalue()
    lines = text.replace("\r\x1b[K", "\n").split("\n")
    drawn = [line for line in lines if line.startswith("[v1:1]")]
    assert "| 100 req/s |" in drawn[0]  # not 0 req/s: the first line counts from the start
    assert drawn[-1].endswith("100 sent, 0 failed")
    # The final state is drawn once: on a terminal, in place and then a newline.
    assert text.endswith("\n")
    assert len(drawn) == 2


def test_a_large_demo_says_how_long_it_takes() -> None:
    assert size_note(DemoOptions(instances=20)) is None
    note = size_note(DemoOptions(instances=50))
    assert note is not None
    assert "about 45 s" in note
    assert "Ctrl-C" in note


def test_an_interrupted_report_says_how_long_the_rollout_ran() -> None:
    report = DemoReport.build(
        result=None,
        samples=[],
        instances=4,
        strategy="rolling update",
        drain=True,
        demo_seconds=5.0,
        interrupted=True,
        cut_short_after=2.5,
    )
    text = report.to_text()
    assert "rollout cut short after 2.50 s, demo 5.00 s" in text
    assert "interrupted (interrupted" not in text
    assert "reason" not in text
    never = DemoReport.build(
        result=None,
        samples=[],
        instances=4,
        strategy="rolling update",
        drain=True,
        demo_seconds=1.0,
        interrupted=True,
    )
    assert "interrupted before the rollout started" in never.to_text()


def _demo_without_prometheus_client(*options: str) -> subprocess.CompletedProcess[str]:
    # A module set to None in sys.modules cannot be found or imported: as after a plain
    # `pip install .`, which has no prometheus-client.
    script = (
        "import sys; sys.modules['prometheus_client'] = None;"
        " from rolling.cli import main; sys.exit(main(sys.argv[1:]))"
    )
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-c", script, "demo", "--json", *options],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_without_the_analysis_extra_the_demo_runs_and_says_analysis_is_off() -> None:
    done = _demo_without_prometheus_client("--instances", "2")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["status"] == "succeeded"
    assert report["failed"] == 0
    assert "metric analysis is off" in done.stderr
    assert "rolling[analysis]" in done.stderr
    # Asking for a bad release without it is a configuration error that says what to do.
    bad = _demo_without_prometheus_client("--instances", "2", "--faulty", "10")
    assert bad.returncode != 0
    assert "pip install 'rolling[analysis]'" in bad.stderr


def _shift(at: float, percent: float, reason: str = "step") -> TrafficShifted:
    return TrafficShifted(
        at=at,
        wall=at,
        percent=percent,
        achieved=percent,
        new_instances=1,
        new_weight=20,
        old_weight=95,
        reason=reason,
    )


def test_traffic_lines_measure_each_shift_until_the_next() -> None:
    # 10 answers a second for 3 s: v2 answers 1 in 10 after the first shift, all after the switch,
    # none after the rollback.
    samples = [
        Sample(
            at=n / 10,
            latency=0.01,
            ok=True,
            version="v2" if (10 <= n < 20 and n % 10 == 0) or 20 <= n < 25 else "v1",
        )
        for n in range(30)
    ]
    back = RollbackStarted(at=2.5, wall=2.5, reason="bad", mode="revert", instance_ids=("p-0",))
    report = DemoReport.build(
        result=None,
        samples=samples,
        instances=2,
        strategy="blue-green",
        drain=True,
        demo_seconds=3.0,
        interrupted=True,
        shifts=[_shift(1.0, 10), _shift(2.0, 100, "switch"), back],
    )
    assert report.traffic == [
        "step at 1.00 s: asked 10 %, weights give 10.0 %, measured 10.0 % (1 of 10)",
        "switch at 2.00 s: asked 100 %, weights give 100.0 %, measured 100.0 % (5 of 5)",
        "rollback at 2.50 s: back to v1, measured 0.0 % (0 of 5)",
    ]
    assert json.loads(report.to_json())["traffic"] == report.traffic
    assert "  traffic        step at 1.00 s" in report.to_text()


@pytest.mark.anyio
async def test_the_status_line_shows_the_share_asked_and_seen() -> None:
    load = LoadGenerator("127.0.0.1", 9, concurrency=1)
    progress = Progress(load, io.StringIO(), shares=True)
    assert progress.line().endswith("| traffic asked - | seen -")
    progress(_shift(1.0, 25))
    load.samples += [Sample(at=1.0, latency=0.01, ok=True, version="v2")]
    load.samples += [Sample(at=1.0, latency=0.01, ok=True, version="v1")] * 3
    assert progress.line().endswith("| traffic asked new 25% | seen v1 75% v2 25%")
    progress(RollbackStarted(at=2.0, wall=2.0, reason="x", mode="revert", instance_ids=()))
    assert progress.line().endswith("| traffic rolling back: asked new 0% | seen -")
    plain = Progress(load, io.StringIO())
    assert "traffic" not in plain.line()

"""``rolling report --html``: the timeline picture, rendered in a real headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import rolling_cli


def chromium() -> str:
    """The Chromium binary; without one, fail under CI (``CI=true``) and skip elsewhere."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed; .ci/run installs it")
        pytest.skip("needs chromium (apt-get install chromium)")
    return found


def browse(page: Path, *options: str, profile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - a browser found on PATH, fixed options
        [
            chromium(),
            "--headless",
            "--no-sandbox",  # runs as root in CI
            "--disable-gpu",
            f"--user-data-dir={profile}",
            "--enable-logging=stderr",
            "--v=0",
            *options,
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def run_and_report(tmp_path: Path, text: str, name: str) -> tuple[Path, list[dict[str, object]]]:
    (tmp_path / f"{name}.toml").write_text(text)
    done = rolling_cli("run", f"{name}.toml", "--to", "v2", "--json", cwd=tmp_path, timeout=120)
    (tmp_path / f"{name}.jsonl").write_text(done.stdout)
    page = tmp_path / f"{name}.html"
    report = rolling_cli("report", f"{name}.jsonl", "--html", str(page), cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    return page, [json.loads(line) for line in done.stdout.splitlines()]


@pytest.mark.parametrize(
    ("instances", "extra"),
    [
        (10, ('faults = [{ instance_id = "i-007", version = "v2", replace_raises = true }]\n'
         "latency = { replace = 0.05 }\n[strategy]\nmax_unavailable = 2\n"
         "[[steps]]\nadvance = 2\n[[steps]]\npause = 0.1\n")),
        (1000, "[strategy]\nmax_unavailable = 100\n"),
    ],
)  # fmt: skip
def test_the_timeline_renders_a_row_per_instance_in_chromium(
    tmp_path: Path, instances: int, extra: str
) -> None:
    text = f'[driver]\nplugin = "simulated"\ninstances = {instances}\n{extra}'
    page, lines = run_and_report(tmp_path, text, f"fleet{instances}")
    html = page.read_text()
    # Self-contained: no script, no external asset.
    assert "<script" not in html
    assert not re.search(r'(src|href)="(https?:)?//', html)
    dom = browse(page, "--dump-dom", profile=tmp_path / "profile")
    assert dom.returncode == 0, dom.stderr
    assert dom.stdout.count('<g class="row"') == instances
    assert "CONSOLE" not in dom.stderr  # no console message of any level, errors included
    shot = tmp_path / "timeline.png"
    height = 560 if instances <= 40 else 2200
    done = browse(
        page,
        f"--screenshot={shot}",
        f"--window-size=1240,{height}",
        "--hide-scrollbars",
        profile=tmp_path / "profile",
    )
    assert done.returncode == 0, done.stderr
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 10_000
    if instances == 10:
        finished = [line for line in lines if line["event"] == "rollout_finished"]
        assert "rolled_back" in html
        assert finished
        result: dict[str, list[dict[str, str]]] = finished[-1]["result"]  # type: ignore[assignment]
        reverted = [i for i in result["instances"] if i["outcome"] == "reverted"]
        assert reverted  # how many were updated before i-007 failed depends on timing
        assert html.count("(rolled back)") == len(reverted)
        assert "✕" in html  # i-007's failure is marked


def test_report_summarises_a_journals_event_log_and_refuses_other_files(tmp_path: Path) -> None:
    (tmp_path / "deploy.toml").write_text(
        '[driver]\nplugin = "simulated"\ninstances = 3\n[journal]\npath = "deploy.journal"\n'
    )
    for version in ("v2", "v3"):
        done = rolling_cli("run", "deploy.toml", "--to", version, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    log = tmp_path / "deploy.journal.events"
    assert log.stat().st_mode & 0o777 == 0o600
    report = rolling_cli("report", "deploy.journal", "--html", "t.html", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert report.stdout.startswith("deploy.journal: succeeded; ")
    assert "3 updated" in report.stdout
    assert "to v3: succeeded" in (tmp_path / "t.html").read_text()  # the last run of the log
    (tmp_path / "other.txt").write_text("not events\n")
    for target, code in (("other.txt", 66), ("missing.jsonl", 66)):
        bad = rolling_cli("report", target, cwd=tmp_path)
        assert bad.returncode == code, bad.stderr


def test_an_html_file_that_cannot_be_written_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "deploy.toml").write_text('[driver]\nplugin = "simulated"\ninstances = 2\n')
    ran = rolling_cli("run", "deploy.toml", "--to", "v2", "--json", cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    (tmp_path / "run.jsonl").write_text(ran.stdout)
    out = tmp_path / "no-such-directory" / "t.html"
    report = rolling_cli("report", "run.jsonl", "--html", out, cwd=tmp_path)
    assert report.returncode == 73
    assert report.stderr == f"rolling report: cannot write {out}: No such file or directory\n"
    assert "Traceback" not in report.stderr


def test_a_torn_events_log_line_loses_no_event_of_the_next_run(tmp_path: Path) -> None:
    """A run killed mid-write leaves half a line (even half a character); the next run's
    first event is not glued to it, and the log still reads."""
    (tmp_path / "deploy.toml").write_text(
        '[driver]\nplugin = "simulated"\ninstances = 2\n[journal]\npath = "deploy.journal"\n'
    )
    log = tmp_path / "deploy.journal.events"
    log.write_bytes(b'{"schema": 1, "event": "instance_phase_changed", "reason": "caf\xc3')
    done = rolling_cli("run", "deploy.toml", "--to", "v2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = log.read_bytes().split(b"\n")
    assert lines[0].endswith(b"caf\xc3")  # the torn line, kept apart
    assert json.loads(lines[1])["schema"] == 1  # the next run's first event, whole
    report = rolling_cli("report", "deploy.journal", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert "2 updated" in report.stdout

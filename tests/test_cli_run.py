"""``rolling run`` and the control commands, as real subprocesses on real and simulated fleets."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from helpers import CLI_EVENTS_SCHEMA, LOOPBACK, ROLLING, alive, free_port
from helpers import rolling_cli as rolling
from rolling import Pause
from rolling.cli._output import Output
from rolling.events import InstancePhaseChanged, Phase, RolloutStarted, StepStarted

SIMULATED = """\
[driver]
plugin = "simulated"
instances = 4
"""
APP = [sys.executable, "-m", "rolling.demo.app", "--version", "{version}", "--port", "{port}"]


def start(*args: str | Path, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [*ROLLING, *map(str, args)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_line(proc: subprocess.Popen[str], text: str, timeout: float = 30) -> list[str]:
    """Read ``proc``'s output until a line containing ``text``; the lines read.

    A thread reads, because a select() on the pipe does not see lines already
    buffered by the reader.
    """
    assert proc.stdout is not None
    stdout = proc.stdout
    lines: list[str] = []
    found = threading.Event()

    def read() -> None:
        for line in stdout:
            lines.append(line)
            if text in line:
                found.set()
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if not found.wait(timeout):
        proc.kill()
        reader.join(10)
        pytest.fail(f"no line with {text!r} within {timeout} s; read: {''.join(lines)}")
    reader.join()
    return lines


@pytest.fixture
def proc_list() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)


def process_file(tmp_path: Path, fleet: Path, *, startup: float, instances: int = 3) -> Path:
    command = json.dumps([*APP, "--startup-delay", str(startup)])
    path = tmp_path / "deploy.toml"
    path.write_text(
        f'[driver]\nplugin = "process"\ncommand = {command}\ninstances = {instances}\n'
        f'state_file = "{fleet}"\ngrace = 2\n'
        '[check]\nplugin = "http"\ntimeout = 0.5\n'
        "[readiness]\nperiod = 0.1\ndeadline = 20\n"
        f'[journal]\npath = "{tmp_path / "deploy.journal"}"\n'
    )
    return path


def healthz(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
        status: int = answer.status
        return status


def wait_serving(port: int, within: float = 15) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if healthz(port) == 200:
                return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def events(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


# -- JSON lines and exit statuses -----------------------------------------------------------------


def test_json_lines_follow_the_documented_schema(tmp_path: Path) -> None:
    files = {
        "ok.toml": SIMULATED
        + '[strategy]\ntype = "batches"\nsizes = [1, 2]\npause = 0.05\n[[steps]]\nadvance = 1\n'
        + "[[steps]]\npause = 0.05\n",
        "bad.toml": SIMULATED + 'faults = [{ version = "v2", replace_raises = true }]\n',
    }
    seen: set[str] = set()
    validator: Any = jsonschema.Draft202012Validator(CLI_EVENTS_SCHEMA)
    validator.check_schema(CLI_EVENTS_SCHEMA)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
        done = rolling("run", name, "--to", "v2", "--json", cwd=tmp_path)
        lines = events(done.stdout)
        for line in lines:
            validator.validate(line)
            seen.add(line["event"])
        assert lines[-1]["event"] == "exit"
        assert lines[-1]["exit_code"] == done.returncode
        assert done.stderr.strip().splitlines()[-1] == lines[-1]["summary"]
    assert {
        "rollout_started",
        "instance_phase_changed",
        "batch_started",
        "batch_finished",
        "step_started",
        "step_finished",
        "status_changed",
        "rollback_started",
        "rollout_finished",
        "exit",
    } <= seen
    # The schema can fail: a known event with a field missing does not pass.
    broken = {"schema": 1, "event": "status_changed", "at": 1.0, "wall": 2.0}
    assert not validator.is_valid(broken)
    assert not validator.is_valid({**broken, "status": "running", "schema": 2})
    assert validator.is_valid({**broken, "status": "running"})


@pytest.mark.parametrize(
    ("extra", "code", "outcome"),
    [
        ("", 0, "succeeded"),
        ('faults = [{ version = "v2", replace_raises = true }]\n', 1, "rolled_back"),
        (
            (
                'faults = [{ instance_id = "i-002", replace_raises = true }]\n'
                "[failure]\nmax_failed = 1\n[strategy]\nmax_unavailable = 2\n"
            ),
            2,
            "degraded",
        ),
        ('faults = [{ version = "v2", replace_raises = true }]\n', 3, "halted"),
    ],
)
def test_exit_statuses_of_finished_rollouts(
    tmp_path: Path, extra: str, code: int, outcome: str
) -> None:
    text = SIMULATED + extra
    if outcome == "halted":
        text = 'rollback = "halt"\n' + text
    (tmp_path / "deploy.toml").write_text(text)
    done = rolling("run", "deploy.toml", "--to", "v2", cwd=tmp_path)
    assert done.returncode == code, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1].startswith(f"rolling run: {outcome.replace('_', ' ')} (v2) in ")
    # One plain line per change, each with the time since the start.
    assert any(line.endswith("i-000 replacing -> v2") for line in lines)
    assert all(line.startswith("[") for line in lines[:-1])


def test_exit_statuses_before_any_rollout(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text('[driver]\nplugin = "simulated"\ninstnces = 3\n')
    done = rolling("run", "bad.toml", "--to", "v2", cwd=tmp_path)
    assert done.returncode == 78
    assert "bad.toml:3: driver.instnces: is not a setting" in done.stderr
    assert done.stdout == ""
    done = rolling("validate", "bad.toml", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (78, "")
    (tmp_path / "ok.toml").write_text(SIMULATED)
    assert rolling("validate", "ok.toml", cwd=tmp_path).returncode == 0
    done = rolling("run", "ok.toml", cwd=tmp_path)  # no --to
    assert done.returncode == 64
    assert "--to" in done.stderr
    done = rolling(cwd=tmp_path)  # no command: the commands are listed
    assert done.returncode == 64
    assert "run " in done.stderr
    assert "promote" in done.stderr
    # A driver that cannot start its fleet: failed, 5.
    command = json.dumps([str(tmp_path / "no-such-program"), "{port}"])
    (tmp_path / "nostart.toml").write_text(
        f'[driver]\nplugin = "process"\ncommand = {command}\ninstances = 1\n'
    )
    done = rolling("run", "nostart.toml", "--to", "v2", cwd=tmp_path)
    assert done.returncode == 5, done.stderr
    assert "no-such-program" in done.stderr
    assert done.stdout.splitlines()[-1].startswith("rolling run: failed after ")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (SIMULATED + "[readiness]\nperod = 0.5\n", "deploy.toml:5: readiness.perod"),
        ('[driver]\nplugin = "proces"\n', "deploy.toml:2: driver.plugin"),
        (None, "deploy.toml: (file): cannot be read"),
    ],
)
def test_a_refused_file_ends_its_json_lines_with_an_exit_object(
    tmp_path: Path, text: str | None, words: str
) -> None:
    """A pipeline reading stdout learns the outcome and why, as from any other run."""
    if text is not None:
        (tmp_path / "deploy.toml").write_text(text)
    done = rolling("run", "deploy.toml", "--to", "v2", "--json", cwd=tmp_path)
    assert done.returncode == 78
    (line,) = events(done.stdout)
    validator: Any = jsonschema.Draft202012Validator(CLI_EVENTS_SCHEMA)
    validator.validate(line)
    assert (line["event"], line["outcome"], line["exit_code"]) == ("exit", "bad_configuration", 78)
    assert line["error"].startswith(words)
    assert words in done.stderr
    assert done.stderr.strip().splitlines()[-1] == line["summary"]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("run", "deploy.toml", "--json"), "required: --to"),
        (
            ("run", "deploy.toml", "--to", "v2", "--json", "--fast"),
            "unrecognized arguments: --fast",
        ),
    ],
)
def test_a_usage_error_ends_json_lines_with_an_exit_object(
    tmp_path: Path, args: tuple[str, ...], words: str
) -> None:
    """Even a command line argparse refuses gives a pipeline reading stdout its exit object."""
    done = rolling(*args, cwd=tmp_path)
    assert done.returncode == 64
    (line,) = events(done.stdout)
    validator: Any = jsonschema.Draft202012Validator(CLI_EVENTS_SCHEMA)
    validator.validate(line)
    assert (line["event"], line["outcome"], line["exit_code"]) == ("exit", "usage_error", 64)
    assert words in line["error"]
    assert "usage: rolling" in done.stderr
    assert words in done.stderr
    # Without --json, stdout stays empty.
    plain = rolling(*(arg for arg in args if arg != "--json"), cwd=tmp_path)
    assert (plain.returncode, plain.stdout) == (64, "")


def test_other_json_commands_answer_a_usage_error_in_their_own_shape(tmp_path: Path) -> None:
    control = rolling("promote", "deploy.toml", "--json", "--all", cwd=tmp_path)
    assert control.returncode == 64
    reply = json.loads(control.stdout)
    assert reply["ok"] is False
    assert "unrecognized arguments: --all" in reply["error"]
    demo = rolling("demo", "--json", "--instances", "0", cwd=tmp_path)
    assert demo.returncode == 64
    assert json.loads(demo.stdout)["exit_code"] == 64


def test_a_degraded_run_names_its_failures(tmp_path: Path) -> None:
    (tmp_path / "deploy.toml").write_text(
        SIMULATED.replace("4", "6")
        + 'faults = [{ instance_id = "i-001", version = "v2", replace_raises = true },'
        + ' { instance_id = "i-003", version = "v2", replace_raises = true }]\n'
        + "[failure]\nmax_failed = 2\n"
    )
    done = rolling("run", "deploy.toml", "--to", "v2", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    summary = done.stdout.splitlines()[-1]
    assert summary.startswith("rolling run: degraded (v2) in ")
    assert "2 failed, 4 updated; failed: i-001 (driver.replace raised" in summary
    assert "), i-003 (driver.replace raised" in summary


def test_json_commands_say_a_refusal_on_stdout(tmp_path: Path) -> None:
    """A control command with no run to ask, and a demo refused, still print one object."""
    (tmp_path / "ok.toml").write_text(SIMULATED)
    done = rolling("status", "ok.toml", "--json", cwd=tmp_path)
    assert done.returncode == 69
    reply = json.loads(done.stdout)
    assert reply["ok"] is False
    assert "does not exist" in reply["error"]
    done = rolling("promote", "missing.toml", "--json", cwd=tmp_path)
    assert done.returncode == 78
    assert json.loads(done.stdout)["ok"] is False
    done = rolling("demo", "--max-unavailable", "0", "--json", cwd=tmp_path)
    assert done.returncode == 64
    assert json.loads(done.stdout)["exit_code"] == 64


def test_help_lists_exit_statuses() -> None:
    for command, words in [
        ("run", "78 bad configuration"),
        ("demo", "64 usage"),
        ("promote", "69"),
        ("plan", "66 the --history log cannot be read"),
        ("report", "73 the --html file cannot be written"),
    ]:
        done = subprocess.run(  # noqa: S603 - our own interpreter and module
            [*ROLLING, command, "--help"], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0
        assert words in " ".join(done.stdout.split())


# -- real processes ------------------------------------------------------------------------------


@pytest.mark.usefixtures("fleet_file")
def test_a_process_fleet_rolls_from_a_file_and_a_rerun_is_a_no_op(
    tmp_path: Path, fleet_file: Path
) -> None:
    path = process_file(tmp_path, fleet_file, startup=0.1)
    done = rolling("run", path, "--to", "v2", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    fleet = json.loads(fleet_file.read_text())["instances"]
    assert [entry["version"] for entry in fleet] == ["v2", "v2", "v2"]
    for entry in fleet:
        assert alive(entry["pid"])
        assert healthz(entry["port"]) == 200
    again = rolling("run", path, "--to", "v2", cwd=tmp_path)
    assert again.returncode == 0
    assert "3 skipped" in again.stdout.splitlines()[-1]
    assert json.loads(fleet_file.read_text())["instances"] == fleet


def test_sigint_interrupts_with_130_and_leaves_the_fleet_serving(
    tmp_path: Path, fleet_file: Path, proc_list: list[subprocess.Popen[str]]
) -> None:
    path = process_file(tmp_path, fleet_file, startup=0.1)
    assert rolling("run", path, "--to", "v1", cwd=tmp_path).returncode == 0  # the fleet, ready
    slow = path.read_text().replace('"0.1"]', '"1.5"]')
    path.write_text(slow)
    proc = start("run", path, "--to", "v2", "--json", cwd=tmp_path)
    proc_list.append(proc)
    read = wait_for_line(proc, '"phase": "replacing"')
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    lines = events("".join(read) + out)
    assert lines[-1]["outcome"] == "interrupted"
    assert err.splitlines()[-1].startswith("rolling run: interrupted (v2) in ")
    # The result says exactly where each instance is: the one cut short is named.
    (finished,) = [line for line in lines if line["event"] == "rollout_finished"]
    assert finished["result"]["status"] == "cancelled"
    outcomes = {i["id"]: (i["outcome"], i["version"]) for i in finished["result"]["instances"]}
    # The one being replaced when the signal came (p-0, unless the start's health survey
    # found another unhealthy on a loaded machine: unhealthy instances go first).
    (cut,) = {line["instance_id"] for line in lines if line.get("phase") == "replacing"}
    assert outcomes[cut][0] == "interrupted"
    others = sorted(set(outcomes) - {cut})
    assert [outcomes[other] for other in others] == [("pending", "v1")] * 2
    fleet = json.loads(fleet_file.read_text())["instances"]
    expected = {cut: outcomes[cut][1]} | dict.fromkeys(others, "v1")
    assert [(e["id"], e["version"]) for e in fleet] == sorted(expected.items())
    for entry in fleet:  # settled: every process runs, and serves once it has started
        assert alive(entry["pid"])
        assert wait_serving(entry["port"])
    assert not (tmp_path / "deploy.journal.control").exists()


# -- control from another shell ------------------------------------------------------------------


def gated(tmp_path: Path) -> Path:
    path = tmp_path / "gated.toml"
    path.write_text(
        SIMULATED
        + "latency = { replace = 0.05 }\n"
        + f'[journal]\npath = "{tmp_path / "g.journal"}"\n'
        + '[[steps]]\nadvance = 1\n[[steps]]\npause = "promote"\n'
    )
    return path


def test_promote_from_another_shell_is_the_approval_gate(
    tmp_path: Path, proc_list: list[subprocess.Popen[str]]
) -> None:
    path = gated(tmp_path)
    proc = start("run", path, "--to", "v2", cwd=tmp_path)
    proc_list.append(proc)
    wait_for_line(proc, "pause until `rolling promote`")
    socket_path = tmp_path / "g.journal.control"
    assert socket_path.stat().st_mode & 0o777 == 0o600
    status = rolling("status", path, "--json", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    reply = json.loads(status.stdout)
    assert reply["ok"]
    assert reply["status"]["status"] == "paused"
    assert reply["status"]["step"] == {"type": "pause", "seconds": None}
    assert reply["status"]["counts"]["updated"] == 1
    assert rolling("pause", path, cwd=tmp_path).returncode == 0
    assert rolling("resume", path, cwd=tmp_path).returncode == 0
    promoted = rolling("promote", path, cwd=tmp_path)
    assert promoted.returncode == 0, promoted.stderr
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "done (promoted)" in out
    assert "control: promote" in out
    # Once the run is over, nobody listens and the socket is gone.
    after = rolling("status", path, cwd=tmp_path)
    assert after.returncode == 69
    assert "does not exist" in after.stderr
    assert not socket_path.exists()


def test_abort_from_another_shell_and_promote_with_nothing_to_promote(
    tmp_path: Path, proc_list: list[subprocess.Popen[str]]
) -> None:
    path = gated(tmp_path)
    proc = start("run", path, "--to", "v2", cwd=tmp_path)
    proc_list.append(proc)
    wait_for_line(proc, "pause until `rolling promote`")
    aborted = rolling("abort", path, cwd=tmp_path)
    assert aborted.returncode == 0, aborted.stderr
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 4
    assert "rolling run: aborted (v2)" in out.splitlines()[-1]
    assert "1 reverted" in out.splitlines()[-1]


def test_promote_with_nothing_to_promote_names_the_commands_option(
    tmp_path: Path, proc_list: list[subprocess.Popen[str]]
) -> None:
    path = tmp_path / "slow.toml"
    path.write_text(
        SIMULATED
        + "latency = { replace = 5 }\n"
        + f'[journal]\npath = "{tmp_path / "s.journal"}"\n'
    )
    proc = start("run", path, "--to", "v2", cwd=tmp_path)
    proc_list.append(proc)
    wait_for_line(proc, "i-000 replacing -> v2")
    refused = rolling("promote", path, cwd=tmp_path)
    assert refused.returncode == 1
    assert "nothing to promote" in refused.stderr
    assert "use `rolling promote --full`" in refused.stderr
    assert "full=True" not in refused.stderr
    assert rolling("abort", path, cwd=tmp_path).returncode == 0
    proc.communicate(timeout=30)
    assert proc.returncode == 4


def test_a_stale_socket_is_detected_and_replaced(tmp_path: Path) -> None:
    path = gated(tmp_path)
    path.write_text(path.read_text().replace('pause = "promote"', "pause = 0.01"))
    stale = tmp_path / "g.journal.control"
    with socket.socket(socket.AF_UNIX) as dead:  # bound, never listening: a killed run's socket
        dead.bind(str(stale))
    done = rolling("status", path, cwd=tmp_path)
    assert done.returncode == 69
    assert "stale socket" in done.stderr
    done = rolling("run", path, "--to", "v2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert not stale.exists()


def test_a_second_run_on_the_same_socket_fails_to_start(
    tmp_path: Path, proc_list: list[subprocess.Popen[str]]
) -> None:
    path = gated(tmp_path)
    proc = start("run", path, "--to", "v2", cwd=tmp_path)
    proc_list.append(proc)
    wait_for_line(proc, "pause until `rolling promote`")
    second = rolling("run", path, "--to", "v2", cwd=tmp_path)
    assert second.returncode == 5
    assert "another `rolling run` is listening" in second.stderr
    assert rolling("promote", path, "--full", cwd=tmp_path).returncode == 0
    proc.communicate(timeout=30)
    assert proc.returncode == 0


def as_nobody(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``rolling`` as user nobody (65534): needs root and setpriv."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI runs as root with setpriv (util-linux): a second user is tested")
        pytest.skip("needs root and setpriv to act as a second user")
    return subprocess.run(  # noqa: S603 - fixed arguments
        [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *ROLLING, *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "HOME": "/"},
    )


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user may enter (pytest's own are the owner's only)."""
    path = Path(tempfile.mkdtemp(prefix=f"rolling-cli-{os.getpid()}-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def test_a_second_user_is_refused(
    tmp_path: Path, open_dir: Path, proc_list: list[subprocess.Popen[str]]
) -> None:
    socket_path = open_dir / "g.control"
    path = gated(tmp_path)
    path.write_text(f'control = "{socket_path}"\n' + path.read_text())
    proc = start("run", path, "--to", "v2", cwd=tmp_path)
    proc_list.append(proc)
    wait_for_line(proc, "pause until `rolling promote`")
    # Only the socket's own mode (0600) stops the second user here.
    denied = as_nobody("promote", "unused.toml", "--socket", socket_path, cwd=open_dir)
    assert denied.returncode == 77, denied.stderr
    assert "permission denied" in denied.stderr
    # Past the file mode too (as a root-run tool could open it), the peer's uid is refused.
    socket_path.chmod(0o666)
    refused = as_nobody("promote", "unused.toml", "--socket", socket_path, cwd=open_dir)
    assert refused.returncode == 77, refused.stderr
    assert "refused: uid 65534" in refused.stderr
    status = rolling("status", path, "--json", cwd=tmp_path)
    assert json.loads(status.stdout)["status"]["status"] == "paused"  # not promoted
    assert rolling("promote", path, cwd=tmp_path).returncode == 0
    proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_the_live_line_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    output = Output(out=out, json=False, live=out.isatty(), redact=lambda text: text)
    output(
        RolloutStarted(
            at=10.0, wall=0.0, target="v2", desired=4, to_update=("a", "b", "c"), skipped=("d",),
            unhealthy=(), max_unavailable=1, max_surge=0,
        )
    )  # fmt: skip
    output(
        InstancePhaseChanged(at=12.0, wall=0.0, instance_id="a", phase=Phase.UPDATED, version="v2")
    )
    output(StepStarted(at=12.0, wall=0.0, index=0, step=Pause()))
    output(
        InstancePhaseChanged(
            at=12.0, wall=0.0, instance_id="b", phase=Phase.DETACHING, version="v2"
        )
    )
    line = output.status_line(12.0)
    assert line == (
        "starting 2.0s, about 4s left | [v2:2] 1 detaching, 1 updated"
        " | pause until `rolling promote`"
    )
    text = out.getvalue()
    assert text.count("\r\x1b[K") >= 4  # each event rewrote the live line in place
    assert "[   2.00s] step 1: pause until `rolling promote`\n" in text
    output.finish("rolling run: done", {})
    assert out.getvalue().endswith("\r\x1b[Krolling run: done\n")  # the live line gives way


@pytest.mark.parametrize(
    ("ratio", "code", "outcome"), [(0.01, 0, "succeeded"), (0.2, 1, "rolled_back")]
)
def test_run_with_an_analysis_on_a_simulated_fleet(
    tmp_path: Path, proc_list: list[subprocess.Popen[str]], ratio: float, code: int, outcome: str
) -> None:
    """A ``web`` metric on a real HTTP server judges an ``analyze`` step and the background."""
    (tmp_path / "ratio.json").write_text(json.dumps({"data": {"ratio": ratio}}))
    port = free_port()
    server = subprocess.Popen(  # noqa: S603 - our own interpreter and the standard library
        [sys.executable, "-m", "http.server", str(port), "--bind", LOOPBACK],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    proc_list.append(server)
    deadline = time.monotonic() + 20
    while True:
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 0.5):
            break
        assert time.monotonic() < deadline, "http.server did not listen"
        time.sleep(0.05)
    (tmp_path / "deploy.toml").write_text(
        SIMULATED
        + f"""
[analysis]
metrics = ["errors"]
name = "background"
bake = 0.3

[metrics.errors]
provider = "web"
failure = "> 0.05"
interval = 0.2
[metrics.errors.settings]
url = "http://{LOOPBACK}:{port}/ratio.json"
extract = "data.ratio"

[metrics.errors-step]
provider = "web"
success = "<= 0.05"
failure = "> 0.05"
count = 2
interval = 0.1
[metrics.errors-step.settings]
url = "http://{LOOPBACK}:{port}/ratio.json"
extract = "data.ratio"

[[steps]]
advance = 1
[[steps]]
analyze = {{ metrics = ["errors-step"], name = "gate" }}
"""
    )
    done = rolling("run", "deploy.toml", "--to", "v2", "--json", cwd=tmp_path)
    assert done.returncode == code, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert records[-1]["outcome"] == outcome, records[-1]
    decided = [
        (r["verdict"]["analysis"], r["verdict"]["outcome"])
        for r in records
        if r["event"] == "analysis_decided"
    ]
    if code == 0:
        assert sorted(decided) == [("background", "successful"), ("gate", "successful")]
    else:  # whichever measures 0.2 first fails and rolls back; the other is cut short
        assert "failed" in {outcome for _, outcome in decided}, decided

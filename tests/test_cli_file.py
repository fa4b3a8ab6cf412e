"""Rollout files: every table becomes the library's own object; errors name file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from rolling import Advance as AdvanceStep
from rolling import (
    Batches,
    DeadlineAction,
    FailurePolicy,
    Pause,
    ProgressDeadline,
    Readiness,
    RollbackMode,
    RollingUpdate,
)
from rolling.checks import HTTPCheck
from rolling.cli._file import RolloutFileError, control_path, load_file
from rolling.testing import SimulatedFleet

FULL = """\
schema = 1
rollback = "halt"
effect_timeout = 30
seed = 7
progress_deadline = { seconds = 90, action = "report" }

[driver]
plugin = "simulated"
instances = 6
zones = ["a", "b"]
faults = [{ version = "v9", replace_raises = true }]

[check]
plugin = "http"
path = "/ready"
timeout = 0.5
expect_status = [200, 204]

[strategy]
type = "batches"
sizes = [1, "50%"]
pause = 5

[readiness]
period = 0.2
deadline = 5

[failure]
retries = 2
max_failed = "20%"

[failure.backoff]
initial = 0.5

[order]
type = "shuffled"
seed = 3

[waves]
attribute = "zone"
order = ["b", "a"]

[[steps]]
advance = 1

[[steps]]
pause = "promote"

[journal]
path = "deploy.journal"
"""


def write(tmp_path: Path, text: str, name: str = "deploy.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_full_file_builds_the_librarys_own_objects(tmp_path: Path) -> None:
    loaded = load_file(write(tmp_path, FULL))
    assert isinstance(loaded.driver.built, SimulatedFleet)
    assert len(loaded.driver.built.instances) == 6
    check = loaded.check.built if loaded.check else None
    assert isinstance(check, HTTPCheck)
    assert (check.path, check.timeout, check.expect_status) == ("/ready", 0.5, (200, 204))
    options = loaded.options
    assert options["strategy"] == Batches(1, "50%", pause=Pause(5))
    assert options["readiness"] == Readiness(check=check, period=0.2, deadline=5)
    failure = options["failure"]
    assert isinstance(failure, FailurePolicy)
    assert (failure.retries, failure.max_failed, failure.backoff.initial) == (2, "20%", 0.5)
    assert options["steps"] == [AdvanceStep(1), Pause()]
    assert options["progress_deadline"] == ProgressDeadline(90, DeadlineAction.REPORT)
    assert options["rollback"] == "halt"
    assert RollbackMode(options["rollback"]) is RollbackMode.HALT
    assert (options["effect_timeout"], options["seed"]) == (30, 7)
    assert options["order"].kind == "shuffled"
    fleet = loaded.driver.built.instances
    assert [len(group) for group in options["waves"].split(fleet)] == [3, 3]
    assert options["waves"].split(fleet)[0][0].zone == "b"
    assert loaded.journal == Path("deploy.journal")
    assert loaded.control == Path("deploy.journal.control")
    assert control_path(loaded.path) == loaded.control


def test_defaults_and_the_control_socket_next_to_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[driver]\nplugin = "simulated"\n')
    loaded = load_file(path)
    assert loaded.router is None
    assert loaded.check is None
    assert loaded.journal is None
    assert loaded.control == tmp_path / "deploy.toml.control"
    assert set(loaded.options) == {"readiness", "steps"}
    path = write(tmp_path, 'control = "/run/x.sock"\n[driver]\nplugin = "simulated"\n')
    assert load_file(path).control == Path("/run/x.sock")
    assert control_path(path) == Path("/run/x.sock")


@pytest.mark.parametrize(
    ("text", "line", "field", "words"),
    [
        # unknown keys: top level, a library table, a plugin's settings
        ('colour = 1\n[driver]\nplugin = "simulated"\n', 1, "colour", "not a known key"),
        (
            '[driver]\nplugin = "simulated"\n[readiness]\nperiode = 1\n',
            4,
            "readiness.periode",
            "period",
        ),
        ('[driver]\nplugin = "simulated"\ninstnces = 3\n', 3, "driver.instnces", "'instances'"),
        # wrong types and values, decided by the library's validators
        (
            '[driver]\nplugin = "simulated"\n[readiness]\n\nperiod = -1\n',
            5,
            "readiness.period",
            "> 0",
        ),
        ('[driver]\nplugin = "simulated"\ninstances = -2\n', 3, "driver.instances", ">= 0"),
        (
            '[driver]\nplugin = "simulated"\n[strategy]\nmax_unavailable = "x"\n',
            4,
            "strategy.max_unavailable",
            "percentage",
        ),
        ('rollback = "revrt"\n[driver]\nplugin = "simulated"\n', 1, "rollback", '"revert"'),
        (
            '[driver]\nplugin = "simulated"\n[failure]\nmax_failed_per_batch = "10%"\n',
            4,
            "failure.max_failed_per_batch",
            "Batches",
        ),
        (
            '[driver]\nplugin = "simulated"\n[[steps]]\nadvance = 3\n[[steps]]\nadvance = 1\n',
            5,
            "steps.1",
            "increasing",
        ),
        ('[driver]\nplugin = "simulated"\n[[steps]]\nwait = 3\n', 4, "steps.0.wait", "not a step"),
        (
            '[driver]\nplugin = "simulated"\n[strategy]\ntype = "canary"\n',
            4,
            "strategy.type",
            "batches",
        ),
        (
            '[driver]\nplugin = "simulated"\n[[steps]]\npause = "forever"\n',
            4,
            "steps.0.pause",
            "promote",
        ),
        # missing plugins and tables
        ('[driver]\nplugin = "proces"\n', 2, "driver.plugin", "did you mean 'process'"),
        ("[driver]\ninstances = 3\n", 1, "driver.plugin", "is missing"),
        ("seed = 1\n", None, "driver", "is missing"),
        ('[driver]\nplugin = "simulated"\n[check]\nplugin = "htp"\n', 4, "check.plugin", "'http'"),
        ('[driver]\nplugin = "process"\n', 1, "driver.command", "is required"),
        (
            '[driver]\nplugin = "process"\ncommand = "serve"\n',
            3,
            "driver.command",
            "list of strings",
        ),
        # reserved for metric analysis
        ('[driver]\nplugin = "simulated"\n[analysis]\nx = 1\n', None, "analysis", "not available"),
        ('schema = 2\n[driver]\nplugin = "simulated"\n', 1, "schema", "upgrade"),
        # not TOML at all
        ('[driver\nplugin = "simulated"\n', 1, "(file)", "not valid TOML"),
    ],
)
def test_bad_files_name_the_file_line_key_and_fix(
    tmp_path: Path, text: str, line: int | None, field: str, words: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(RolloutFileError) as caught:
        load_file(path)
    error = caught.value
    assert (error.path, error.line, error.field) == (path, line, field)
    assert words in str(error)
    assert str(error).startswith(f"{path}:{line}: " if line else f"{path}: ")
    assert error.fix


def test_env_references_are_substituted_and_never_printed(tmp_path: Path) -> None:
    text = '[driver]\nplugin = "simulated"\nversion = "${RELEASE}"\n[check]\nplugin = "http"\n'
    text += 'path = "/h?token=${TOKEN}"\ntimeout = "${TOKEN}"\n'
    path = write(tmp_path, text)
    with pytest.raises(RolloutFileError) as caught:
        load_file(path, env={"RELEASE": "v7", "TOKEN": "s3cr3t"})
    assert caught.value.field == "check.timeout"
    assert "s3cr3t" not in str(caught.value)
    assert "***" in str(caught.value)
    good = write(tmp_path, text.replace('timeout = "${TOKEN}"\n', ""), "ok.toml")
    loaded = load_file(good, env={"RELEASE": "v7", "TOKEN": "s3cr3t"})
    assert loaded.driver.built.instances[0].version == "v7"
    assert loaded.check is not None
    assert loaded.check.built.path == "/h?token=s3cr3t"
    assert loaded.redact("GET /h?token=s3cr3t") == "GET /h?token=***"
    # $${NAME} is a literal ${NAME}; a missing variable is an error at its line
    literal = write(tmp_path, '[driver]\nplugin = "simulated"\nversion = "$${HOME}"\n', "l.toml")
    assert load_file(literal, env={}).driver.built.instances[0].version == "${HOME}"
    with pytest.raises(RolloutFileError, match="RELEASE is not set") as missing:
        load_file(path, env={})
    assert (missing.value.line, missing.value.field) == (3, "driver.version")


def test_a_rolling_update_and_a_plain_deadline(tmp_path: Path) -> None:
    text = 'progress_deadline = 60\n[driver]\nplugin = "simulated"\n'
    text += "[strategy]\nmax_unavailable = 0\nmax_surge = 1\n"
    loaded = load_file(write(tmp_path, text))
    assert loaded.options["strategy"] == RollingUpdate(max_unavailable=0, max_surge=1)
    assert loaded.options["progress_deadline"] == 60

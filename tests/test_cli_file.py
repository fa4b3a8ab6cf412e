"""Rollout files: every table becomes the library's own object; errors name file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import assert_file_error
from rolling import Advance as AdvanceStep
from rolling import (
    Analysis,
    Analyze,
    Batches,
    ConfigError,
    DeadlineAction,
    FailurePolicy,
    Pause,
    ProgressDeadline,
    Readiness,
    RollbackMode,
    RollingUpdate,
)
from rolling.checks import HTTPCheck
from rolling.cli._analysis_file import parse_condition
from rolling.cli._file import RolloutFileError, control_path, load_file
from rolling.metrics import Compare, PrometheusQuery, Scrape, WebMetric
from rolling.plugins._metrics import compare_metric, label_matcher, prometheus_metric, web_metric
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


ANALYSIS = """\
[driver]
plugin = "simulated"
[analysis]
metrics = ["errors"]
[metrics.errors]
provider = "web"
failure = "> 0.05"
interval = 0.5
[metrics.errors.settings]
url = "http://127.0.0.1:9/ratio.json"
timeout = 1
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
            '[driver]\nplugin = "simulated"\n[strategy]\ntype = "canery"\n',
            4,
            "strategy.type",
            "blue-green",
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
        # metric analysis
        ('[driver]\nplugin = "simulated"\n[analysis]\nx = 1\n', 3, "analysis.metrics", "names"),
        ('metrics = 1\n[driver]\nplugin = "simulated"\n', 1, "metrics", "expected a table"),
        (ANALYSIS.replace('"> 0.05"', '"big"'), 7, "metrics.errors.failure", "operator"),
        (ANALYSIS.replace('"web"', '"wbe"'), 6, "metrics.errors.provider", "'web'"),
        (
            ANALYSIS.replace("interval = 0.5", "intervall = 1"),
            8,
            "metrics.errors.intervall",
            "known",
        ),
        (ANALYSIS.replace("interval = 0.5", "interval = -1"), 8, "metrics.errors.interval", ">"),
        (ANALYSIS.replace('"> 0.05"', '"worse"'), 7, "metrics.errors.failure", "compare"),
        (ANALYSIS.replace('metrics = ["errors"]', 'metrics = ["x"]'), 4, "analysis.metrics", "'x'"),
        (ANALYSIS.replace("[analysis]", "[analysis.x]"), None, "analysis.metrics", "names"),
        (ANALYSIS + '[metrics.spare]\nprovider = "web"\n', 12, "metrics.spare", "no analysis"),
        (
            ANALYSIS.replace('url = "http://127.0.0.1:9/ratio.json"', "url = 3"),
            10,
            "metrics.errors.settings.url",
            "url",
        ),
        (ANALYSIS + "[[steps]]\nanalyze = 3\n", 13, "steps.0.analyze", "list of metric"),
        (
            ANALYSIS + '[[steps]]\nanalyze = {metrics = ["errors"], on_timeout = "x"}\n',
            13,
            "steps.0.analyze.on_timeout",
            "rollback",
        ),
        (
            ANALYSIS.split("[metrics.errors.settings]", maxsplit=1)[0] + "settings = 1\n",
            9,
            "metrics.errors.settings",
            "table",
        ),
        (ANALYSIS.replace('provider = "web"\n', ""), 5, "metrics.errors.provider", "missing"),
        ('schema = 2\n[driver]\nplugin = "simulated"\n', 1, "schema", "upgrade"),
        # an unknown table is at its header; a key in an inline table at the key holding it
        ('[driver]\nplugin = "simulated"\n\n[foo]\nx = 1\n', 4, "foo", "not a known table"),
        (
            ANALYSIS.replace('provider = "web"', 'provider = "scrape"').replace(
                'url = "http://127.0.0.1:9/ratio.json"\ntimeout = 1',
                'metric = "x"\nerrors = { code = "5..(" }',
            ),
            11,
            "metrics.errors.settings.errors.code",
            "regular expression",
        ),
        # a key with no type to take it, or a type that takes no key: a fix, not an empty list
        (
            '[driver]\nplugin = "simulated"\n[order]\nreverse = true\n',
            4,
            "order.reverse",
            'type = "sorted"',
        ),
        ('[driver]\nplugin = "simulated"\n[order]\nseed = 3\n', 4, "order.seed", "shuffled"),
        # expect_status is a list of ints, refused at its line before any call
        *(
            (
                f'[driver]\nplugin = "simulated"\n[check]\nplugin = "http"\nexpect_status = {v}\n',
                5,
                "check.expect_status",
                "a list of ints",
            )
            for v in ('"200"', '["200"]', "200", "[]", "[true]")
        ),
        (
            '[driver]\nplugin = "simulated"\n[check]\nplugin = "http"\nexpect_status = [20]\n',
            5,
            "check.expect_status",
            "from 100 to 599",
        ),
        # a bad seed (a Rollout option) at its line, as rollback and effect_timeout are
        ('seed = [1]\n[driver]\nplugin = "simulated"\n', 1, "seed", "seed"),
        # not TOML at all
        ('[driver\nplugin = "simulated"\n', 1, "(file)", "not valid TOML"),
    ],
)
def test_bad_files_name_the_file_line_key_and_fix(
    tmp_path: Path, text: str, line: int | None, field: str, words: str
) -> None:
    assert_file_error(write(tmp_path, text), line, field, words)


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


def test_env_references_are_substituted_in_every_table(tmp_path: Path) -> None:
    """`${NAME}` in any string: the plugin names and the tables the CLI reads itself."""
    text = '[driver]\nplugin = "${DRIVER}"\ninstances = 2\n[journal]\npath = "${DIR}/d.journal"\n'
    text += '[[steps]]\npause = "${GATE}"\n'
    env = {"DRIVER": "simulated", "DIR": str(tmp_path), "GATE": "promote"}
    loaded = load_file(write(tmp_path, text), env=env)
    assert loaded.driver.name == "simulated"
    assert isinstance(loaded.driver.built, SimulatedFleet)
    assert loaded.journal == tmp_path / "d.journal"
    assert loaded.options["steps"] == [Pause()]
    with pytest.raises(RolloutFileError, match="DRIVER is not set") as missing:
        load_file(write(tmp_path, text), env={})
    assert (missing.value.line, missing.value.field) == (2, "driver.plugin")


def test_the_control_socket_is_found_with_the_variables_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`rolling status` finds the socket where `rolling run` opened it."""
    monkeypatch.setenv("DIR", str(tmp_path))
    path = write(tmp_path, '[driver]\nplugin = "simulated"\n[journal]\npath = "${DIR}/d.journal"\n')
    assert control_path(path) == tmp_path / "d.journal.control"
    assert control_path(path) == load_file(path).control


def test_a_rollout_error_names_the_files_key_whatever_the_option(tmp_path: Path) -> None:
    """The path a Rollout ConfigError takes to the file's line: `seed` as the others."""
    path = write(tmp_path, 'effect_timeout = 5\nseed = "x"\n[driver]\nplugin = "simulated"\n')
    assert_file_error(path, 2, "seed", "expected an int")


def test_a_rolling_update_and_a_plain_deadline(tmp_path: Path) -> None:
    text = 'progress_deadline = 60\n[driver]\nplugin = "simulated"\n'
    text += "[strategy]\nmax_unavailable = 0\nmax_surge = 1\n"
    loaded = load_file(write(tmp_path, text))
    assert loaded.options["strategy"] == RollingUpdate(max_unavailable=0, max_surge=1)
    assert loaded.options["progress_deadline"] == 60


def test_analysis_tables_build_the_librarys_objects(tmp_path: Path) -> None:
    text = ANALYSIS.replace("[analysis]", "[analysis]\nbake = 3")
    text += """
[metrics.p90]
provider = "scrape"
success = "< 0.1"
count = 2
[metrics.p90.settings]
metric = "demo_request_duration_seconds"
quantile = 0.9

[metrics.vs-old]
provider = "compare"
failure = "worse"
[metrics.vs-old.settings]
metric = "demo_requests_total"
errors = { code = "5.." }
min_effect = 0.02

[metrics.prom]
provider = "prometheus"
failure = ">= 1"
[metrics.prom.settings]
url = "http://127.0.0.1:9"
query = "up"
basic_auth = ["me", "pw"]

[[steps]]
advance = 1
[[steps]]
analyze = ["p90", "vs-old"]
[[steps]]
analyze = { metrics = ["prom"], name = "pc", inconclusive_timeout = 60, on_timeout = "continue" }
"""
    loaded = load_file(write(tmp_path, text))
    background = loaded.options["analysis"]
    assert isinstance(background, Analysis)
    assert background.bake == 3
    (errors,) = background.metrics
    assert isinstance(errors.provider, WebMetric)
    assert errors.interval == 0.5
    assert errors.failure is not None
    assert errors.failure(0.06)
    assert not errors.failure(0.05)
    steps = loaded.options["steps"]
    assert isinstance(steps[1], Analyze)
    assert isinstance(steps[2], Analyze)
    p90, vs_old = steps[1].analysis.metrics
    assert isinstance(p90.provider, Scrape)
    assert p90.provider.quantile == 0.9
    assert p90.count == 2
    assert isinstance(vs_old.provider, Compare)
    assert vs_old.provider.min_effect == 0.02
    assert vs_old.failure == vs_old.provider.worse
    assert vs_old.provider.errors is not None
    assert vs_old.provider.errors({"code": "503"})
    assert not vs_old.provider.errors({"code": "200"})
    assert steps[2].analysis.name == "pc"
    assert steps[2].on_timeout == "continue"
    assert steps[2].inconclusive_timeout == 60
    (prom,) = steps[2].analysis.metrics
    assert isinstance(prom.provider, PrometheusQuery)
    assert prom.provider.basic_auth == ("me", "pw")


@pytest.mark.parametrize(
    ("text", "every", "holds", "fails"),
    [
        (
            "< 0.02",
            True,
            [0.01, {(("a", "1"),): 0.0, (("a", "2"),): 0.01}],
            [0.02, {(("a", "1"),): 0.5, (("a", "2"),): 0.0}],
        ),
        (
            ">0.05",
            False,
            [0.06, {(("a", "1"),): 0.0, (("a", "2"),): 0.5}],
            [0.05, {(("a", "1"),): 0.0}],
        ),
        (">= 1e2", False, [100.0], [99.9]),
        ("<= -1", False, [-1.0], [0.0]),
        ("== 0", False, [0.0], [0.1]),
        ("!= 0", False, [0.1], [0.0]),
    ],
)
def test_conditions_compare_and_never_evaluate(
    text: str, every: bool, holds: list[object], fails: list[object]
) -> None:
    condition = parse_condition(text, every=every)
    for value in holds:
        assert condition(value), value
    for value in fails:
        assert not condition(value), value


@pytest.mark.parametrize("text", ["", "0.02", "< x", "< 1.2.3", "__import__('os')", 3, "<< 1"])
def test_bad_conditions(text: object) -> None:
    with pytest.raises(ConfigError, match="operator and a number"):
        parse_condition(text, every=True)


def test_metric_settings_in_declarative_form() -> None:
    with pytest.raises(ConfigError, match="label = regex"):
        label_matcher(["5.."])
    with pytest.raises(ConfigError, match="regular expression"):
        label_matcher({"code": "(("})
    with pytest.raises(ConfigError, match="user, password"):
        prometheus_metric(url="http://127.0.0.1:9", query="up", basic_auth="me")
    with pytest.raises(ConfigError, match="dotted path"):
        web_metric(url="http://127.0.0.1:9", extract=3)  # type: ignore[arg-type]
    web = web_metric(url="http://127.0.0.1:9", extract="data.0.ratio")
    assert web.extract({"data": [{"ratio": 0.5}]}) == 0.5
    assert web_metric(url="http://127.0.0.1:9").extract(0.25) == 0.25
    assert isinstance(compare_metric(metric="x_total", alpha=0.01), Compare)


def test_an_unknown_readiness_key_offers_only_keys_the_table_takes(tmp_path: Path) -> None:
    """`check` is a Readiness argument, but the file gives it in [check]: not offered here."""
    path = tmp_path / "deploy.toml"
    path.write_text('[driver]\nplugin = "simulated"\n[readiness]\nperod = 0.5\n')
    with pytest.raises(RolloutFileError) as caught:
        load_file(path)
    message = str(caught.value)
    assert "readiness.perod: is not a known key here" in message
    assert "use one of: initial_delay, period, timeout," in message
    assert "check" not in message.split("use one of:")[1]
    # With a [check] table, the check still reaches Readiness.
    path.write_text(
        '[driver]\nplugin = "simulated"\n[check]\nplugin = "tcp"\n[readiness]\nperiod = 0.5\n'
    )
    readiness = load_file(path).options["readiness"]
    assert readiness.check is not None
    assert readiness.period == 0.5

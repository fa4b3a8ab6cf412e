"""Second audit, bad input and configuration: every refusal is a ConfigError naming the field.

The docs promise (ConfigError's docstring, ``Rollout``'s, docs/cli.md "Errors") that bad input
is refused with a :class:`~rolling.ConfigError` that names the field and the fix, before any
driver call; and that the CLI reports it with exit status 78. These tests feed every public
configurable thing wrong types, out-of-range and conflicting values, with a driver of our own
that records every call; and check that the documented valid edge values are accepted.
"""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest

import rolling
from helpers import rolling_cli
from rolling import (
    Advance,
    Analysis,
    Analyze,
    Backoff,
    Batches,
    BlueGreen,
    Canary,
    ConfigError,
    EtcdJournal,
    EtcdLock,
    FailurePolicy,
    FlagRules,
    Gate,
    Metric,
    Order,
    Pause,
    ProgressDeadline,
    Readiness,
    RollingUpdate,
    Rollout,
    SetCanaryScale,
    SetFlag,
    SetWeight,
    Waves,
)
from rolling.drivers.process import ProcessDriver
from rolling.flags import FlagdFile
from rolling.metrics import Compare, PrometheusQuery, Scrape
from rolling.testing import SimulatedFleet

# -- a driver, router and checks of our own, from the documented protocol -----------------


@attrs.define(frozen=True)
class Box:
    id: str
    version: str


class RecordingDriver:
    """An in-place driver that records every call (rolling.typing.Driver)."""

    def __init__(self, size: int = 4) -> None:
        self.fleet = [Box(f"i-{n}", "v1") for n in range(size)]
        self.calls: list[str] = []

    async def list_instances(self) -> list[Box]:
        self.calls.append("list_instances")
        return list(self.fleet)

    async def replace(self, instance: Box, version: str) -> Box:
        self.calls.append(f"replace {instance.id}")
        return Box(instance.id, version)


class ElasticRecordingDriver(RecordingDriver):
    """Launches and terminates too (rolling.typing.ElasticDriver)."""

    async def launch(self, version: str) -> Box:
        self.calls.append("launch")
        return Box(f"n-{len(self.calls)}", version)

    async def terminate(self, instance: Box) -> None:
        self.calls.append(f"terminate {instance.id}")


class PlainRouter:
    async def attach(self, instance: Box) -> None:
        pass

    async def detach(self, instance: Box) -> None:
        pass


class WeightedRouter(PlainRouter):
    async def set_weight(self, instance: Box, weight: int) -> None:
        pass


async def yes() -> bool:
    return True


async def measure(context: Any) -> float:  # noqa: ARG001 - the provider protocol
    return 0.0


async def set_flag(flag: str, value: object) -> None:
    pass


ETCD = "127.0.0.1:2379"
PROM = "http://127.0.0.1:9090"
TOKEN = "token-of-a-test"  # noqa: S105 - not a secret
METRIC = Metric(name="errors", provider=measure, failure=lambda v: v > 1)


def bad(value: object) -> Any:
    """A value the annotations refuse, passed on purpose."""
    return value


def refused(field: str, build: Any) -> ConfigError:
    """``build()`` raises a ConfigError naming ``field``, with a problem and a fix."""
    with pytest.raises(ConfigError) as caught:
        build()
    error = caught.value
    assert error.field == field, str(error)
    assert error.problem, str(error)
    assert error.fix, str(error)
    assert field in str(error)
    return error


# -- fixed here: refusals that came out as a raw TypeError/OverflowError or not at all -----


@pytest.mark.parametrize("steps", [None, 5, 1.5, True, object()])
def test_steps_that_are_no_sequence_are_a_config_error(steps: object) -> None:
    """Rollout: "Everything is validated here ... an invalid setting raises ConfigError"."""
    refused("Rollout.steps", lambda: Rollout(RecordingDriver(), "v2", steps=bad(steps)))


@pytest.mark.parametrize("observers", [None, 5, print, "print"])
def test_observers_that_are_no_sequence_are_a_config_error(observers: object) -> None:
    """A lone function (a common slip for ``observers=[print]``) names the field."""
    refused("Rollout.observers", lambda: Rollout(RecordingDriver(), "v2", observers=bad(observers)))


@pytest.mark.parametrize("field", ["effect_timeout", "cleanup_timeout", "progress_deadline"])
def test_seconds_past_the_float_range_are_a_config_error(field: str) -> None:
    """``float(10**400)`` raised OverflowError out of Rollout(...)."""
    refused(f"Rollout.{field}", lambda: Rollout(RecordingDriver(), "v2", **bad({field: 10**400})))


@pytest.mark.parametrize("seconds", [-5, 0, math.nan, math.inf])
def test_bad_progress_deadline_seconds_name_the_argument(seconds: float) -> None:
    """Named ``Rollout.progress_deadline`` (as passed), not ProgressDeadline.seconds."""
    refused(
        "Rollout.progress_deadline",
        lambda: Rollout(RecordingDriver(), "v2", progress_deadline=seconds),
    )


@pytest.mark.parametrize("metrics", [None, 5, 1.5, "errors"])
def test_analysis_metrics_that_are_no_list_are_a_config_error(metrics: object) -> None:
    refused("Analysis.metrics", lambda: Analysis(metrics=bad(metrics)))


@pytest.mark.parametrize("reverse", ["no", "yes", 1, None])
def test_order_reverse_must_be_a_bool(reverse: object) -> None:
    """``reverse="no"`` is truthy: it was taken, and reversed the order."""
    refused("Order.reverse", lambda: Order.sorted(reverse=bad(reverse)))
    refused("Order.reverse", lambda: Order.by(lambda i: i.id, reverse=bad(reverse)))


def test_order_built_directly_is_validated() -> None:
    refused("Order.kind", lambda: Order(kind=bad("random")))
    refused("Order.seed", lambda: Order(kind="shuffled"))
    refused("Order.key", lambda: Order(kind="key"))
    refused("Order.seed", lambda: Order(kind="shuffled", seed=bad("x")))
    assert Order(kind="shuffled", seed=3) == Order.shuffled(3)


def test_set_flag_key_must_not_be_empty() -> None:
    """As FlagRules.flag: no flag system has an empty key."""
    refused("SetFlag.flag", lambda: SetFlag("", True, setter=set_flag))
    refused("FlagRules.flag", lambda: FlagRules(set_flag, ""))


def test_max_failed_per_batch_names_the_strategy_it_was_given() -> None:
    error = refused(
        "FailurePolicy.max_failed_per_batch",
        lambda: Rollout(
            ElasticRecordingDriver(),
            "v2",
            strategy=Canary(),
            router=WeightedRouter(),
            failure=FailurePolicy(max_failed_per_batch="30%"),
        ),
    )
    assert "Canary" in error.problem
    assert "RollingUpdate" not in error.problem


def command(version: str, port: int) -> list[str]:  # noqa: ARG001 - the Command protocol
    return [sys.executable, "-c", "pass"]


@pytest.mark.parametrize(
    ("field", "options"),
    [
        ("ProcessDriver.host", {"host": 0}),  # ip_address(0) is 0.0.0.0: it was accepted
        ("ProcessDriver.host", {"host": True}),
        ("ProcessDriver.env", {"env": "PORT=1"}),
        ("ProcessDriver.env", {"env": {"WORKERS": 4}}),
        ("ProcessDriver.log_dir", {"log_dir": 1.5}),
        ("ProcessDriver.state_file", {"state_file": 3}),
    ],
)
def test_process_driver_settings(field: str, options: dict[str, Any]) -> None:
    refused(field, lambda: ProcessDriver(command, **options))


def test_process_driver_takes_a_str_log_dir(tmp_path: Path) -> None:
    """A str path works as a Path does (it failed at the first launch: str / str)."""
    ProcessDriver(command, log_dir=bad(str(tmp_path)))


@pytest.mark.parametrize(
    ("field", "build"),
    [
        # numbers and NaN were taken (wait=nan), or failed raw in int()/iteration
        ("EtcdLock.ttl", lambda: EtcdLock(ETCD, fleet="web", ttl=bad("10"))),
        ("EtcdLock.ttl", lambda: EtcdLock(ETCD, fleet="web", ttl=bad(math.nan))),
        ("EtcdLock.wait", lambda: EtcdLock(ETCD, fleet="web", wait=math.nan)),
        ("EtcdLock.wait", lambda: EtcdLock(ETCD, fleet="web", wait=math.inf)),
        ("EtcdLock.doubt", lambda: EtcdLock(ETCD, fleet="web", doubt=math.nan)),
        ("EtcdLock.fleet", lambda: EtcdLock(ETCD, fleet=bad(3))),
        ("EtcdLock.prefix", lambda: EtcdLock(ETCD, fleet="web", prefix=bad(3))),
        ("EtcdLock.endpoints", lambda: EtcdLock(bad(None), fleet="web")),
        ("EtcdLock.endpoints", lambda: EtcdLock(bad([ETCD, 3]), fleet="web")),
        ("EtcdJournal.keep", lambda: EtcdJournal(ETCD, fleet="web", keep=bad(1.5))),
        ("EtcdJournal.keep", lambda: EtcdJournal(ETCD, fleet="web", keep=bad(True))),
        # "no" is truthy: it was taken as True
        ("Compare.higher_is_worse", lambda: Compare("latency", higher_is_worse=bad("no"))),
        # a number or "" was sent as "Authorization: Bearer 1.5"; both: one header, silently
        ("PrometheusQuery.bearer_token", lambda: PrometheusQuery(PROM, "up", bearer_token=bad(1))),
        ("PrometheusQuery.bearer_token", lambda: PrometheusQuery(PROM, "up", bearer_token="")),
        (
            "PrometheusQuery.bearer_token",
            lambda: PrometheusQuery(PROM, "up", bearer_token=TOKEN, basic_auth=("u", "p")),
        ),
        ("Scrape.of", lambda: Scrape("requests", of=bad(["new"]))),  # a raw TypeError
        # a str was split into its characters, a number failed raw
        ("SimulatedFleet.zones", lambda: SimulatedFleet(4, zones="abc")),
        ("SimulatedFleet.ids", lambda: SimulatedFleet(ids="abc")),
        ("SimulatedFleet.ids", lambda: SimulatedFleet(ids=bad(5))),
    ],
)
def test_adapter_settings_refused(field: str, build: Any) -> None:
    refused(field, build)


def test_adapter_settings_accepted() -> None:
    assert EtcdLock([ETCD], fleet="web", ttl=2, wait=0, doubt=None).ttl == 2
    assert EtcdJournal(ETCD, fleet="web", keep=0).keep == 0
    PrometheusQuery(PROM, "up", bearer_token=TOKEN)
    PrometheusQuery(PROM, "up", basic_auth=("u", "p"))
    fleet = SimulatedFleet(ids=bad(f"w-{n}" for n in range(3)))  # any iterable, even a generator
    assert sorted(i.id for i in fleet.instances) == ["w-0", "w-1", "w-2"]
    Compare("latency", higher_is_worse=False)


@pytest.mark.parametrize(
    ("field", "options"),
    [
        ("LoggingObserver.logger", {"logger": "rolling"}),  # a name, not a Logger
        ("LoggingObserver.level", {"level": "INFO"}),
        ("LoggingObserver.level", {"level": True}),
    ],
)
def test_logging_observer_settings(field: str, options: dict[str, Any]) -> None:
    """They failed at the first event, after list_instances, as the observer's own error."""
    refused(field, lambda: rolling.LoggingObserver(**options))


def test_logging_observer_takes_an_adapter() -> None:
    adapter = logging.LoggerAdapter(logging.getLogger("deploys"), {"team": "web"})
    rolling.LoggingObserver(bad(adapter), level=logging.DEBUG)


# -- held: the refusals that were already right ---------------------------------------


BAD_COUNTS: list[object] = [-1, 1.5, True, None, "", " ", "abc", "abc%", "150%", "-5%", math.nan]


@pytest.mark.parametrize("value", BAD_COUNTS)
def test_bad_counts_and_percentages(value: object) -> None:
    refused("RollingUpdate.max_unavailable", lambda: RollingUpdate(max_unavailable=bad(value)))
    refused("Advance.to", lambda: Advance(bad(value)))
    refused("Batches.sizes[1]", lambda: Batches(1, bad(value)))
    refused("FailurePolicy.max_failed", lambda: FailurePolicy(max_failed=bad(value)))
    if value != "150%":  # a surge may be any percentage, as in Kubernetes
        refused("RollingUpdate.max_surge", lambda: RollingUpdate(max_surge=bad(value)))


BAD_SECONDS: list[object] = [-1, math.nan, math.inf, -math.inf, "1s", True, 10**400]


@pytest.mark.parametrize("value", BAD_SECONDS)
def test_bad_seconds(value: Any) -> None:
    refused("Pause.seconds", lambda: Pause(value))
    refused("Gate.timeout", lambda: Gate(yes, timeout=value))
    refused("Readiness.period", lambda: Readiness(period=value))
    refused("Readiness.initial_delay", lambda: Readiness(initial_delay=value))
    refused("Backoff.initial", lambda: Backoff(initial=value))
    refused("Canary.scale_down_delay", lambda: Canary(scale_down_delay=value))
    refused("BlueGreen.scale_down_delay", lambda: BlueGreen(scale_down_delay=value))
    refused(
        "Metric.interval", lambda: Metric(name="m", provider=measure, success=bool, interval=value)
    )
    refused("Analysis.bake", lambda: Analysis(metrics=[METRIC], bake=value))
    refused("ProgressDeadline.seconds", lambda: ProgressDeadline(value))


@pytest.mark.parametrize(
    ("field", "build"),
    [
        ("RollingUpdate.max_unavailable", lambda: RollingUpdate(max_unavailable=0, max_surge="0%")),
        ("Batches.sizes", Batches),
        ("Batches.sizes[0]", lambda: Batches(0)),
        ("Batches.sizes[0]", lambda: Batches("0%")),
        ("Batches.pause", lambda: Batches(1, pause=bad(5))),
        ("Batches.surge", lambda: Batches(1, surge=bad("yes"))),
        ("SetWeight.percent", lambda: SetWeight(150)),
        ("SetWeight.percent", lambda: SetWeight(-1)),
        ("SetWeight.percent", lambda: SetWeight(math.nan)),
        ("SetWeight.percent", lambda: SetWeight(bad("50%"))),
        ("SetCanaryScale.replicas", SetCanaryScale),
        ("SetCanaryScale.replicas", lambda: SetCanaryScale(replicas=2, match_traffic_weight=True)),
        ("SetCanaryScale.replicas", lambda: SetCanaryScale(replicas="150%")),
        ("BlueGreen.auto_promote_after", lambda: BlueGreen(auto_promote_after=60)),
        ("BlueGreen.preview_replicas", lambda: BlueGreen(preview_replicas=0)),
        ("Readiness.deadline", lambda: Readiness(initial_delay=10, min_ready=20, deadline=30)),
        ("Readiness.success_threshold", lambda: Readiness(success_threshold=0)),
        ("Readiness.failure_threshold", lambda: Readiness(failure_threshold=bad(1.5))),
        ("Backoff.factor", lambda: Backoff(factor=0.5)),
        ("Backoff.jitter", lambda: Backoff(jitter=2)),
        ("FailurePolicy.retries", lambda: FailurePolicy(retries=bad(1.5))),
        ("FailurePolicy.max_failed_per_batch", lambda: FailurePolicy(max_failed_per_batch=bad(30))),
        ("FailurePolicy.circuit_breaker", lambda: FailurePolicy(circuit_breaker=0)),
        ("FailurePolicy.restore_failed", lambda: FailurePolicy(restore_failed=bad("no"))),
        ("ProgressDeadline.action", lambda: ProgressDeadline(60, bad("explode"))),
        ("Waves.order", lambda: Waves(lambda i: i.zone, order="ab")),
        ("Metric.success", lambda: Metric(name="m", provider=measure)),
        ("Metric.provider", lambda: Metric(name="m", provider=5, success=bool)),
        ("Metric.name", lambda: Metric(name="", provider=measure, success=bool)),
        (
            "Metric.on_no_data",
            lambda: Metric(name="m", provider=measure, success=bool, on_no_data=bad("x")),
        ),
        ("Analysis.metrics", lambda: Analysis(metrics=[])),
        ("Analysis.metrics", lambda: Analysis(metrics=bad(METRIC))),
        ("Analysis.metrics[1]", lambda: Analysis(metrics=[METRIC, METRIC])),
        ("Analyze.analysis", lambda: Analyze(bad(METRIC))),
        (
            "Analyze.on_timeout",
            lambda: Analyze(Analysis(metrics=[METRIC]), on_timeout=bad("later")),
        ),
        ("SetFlag.value", lambda: SetFlag("f", bad(None), setter=set_flag)),
        ("FlagRules.setter", lambda: FlagRules(bad(5), "f")),
    ],
)
def test_value_objects_refuse(field: str, build: Any) -> None:
    refused(field, build)


@pytest.mark.parametrize(
    ("field", "options"),
    [
        ("Rollout.target", {"target": ""}),
        ("Rollout.target", {"target": 2}),
        ("Rollout.strategy", {"strategy": "rolling"}),
        ("Rollout.readiness", {"readiness": {"period": 1}}),
        ("Rollout.router", {"router": object()}),
        ("Rollout.failure", {"failure": 3}),
        ("Rollout.rollback", {"rollback": "undo"}),
        ("Rollout.progress_deadline", {"progress_deadline": "10m"}),
        ("Rollout.steps", {"steps": Pause()}),
        ("Rollout.steps[0]", {"steps": ["pause"]}),
        ("Rollout.steps[1]", {"steps": [Advance(5), Advance(2)]}),
        ("Rollout.steps[1]", {"steps": [Advance("50%"), Advance("10%")]}),
        ("Rollout.steps[0]", {"steps": [SetWeight(5)]}),
        ("Rollout.steps[0]", {"steps": [SetCanaryScale(replicas=1)]}),
        ("Rollout.steps[0]", {"steps": [SetFlag("f", True)]}),  # no setter, no FlagRules
        ("Rollout.order", {"order": "sorted"}),
        ("Rollout.waves", {"waves": "zone"}),
        ("Rollout.observers[0]", {"observers": [5]}),
        ("Rollout.effect_timeout", {"effect_timeout": 0}),
        ("Rollout.cleanup_timeout", {"cleanup_timeout": math.nan}),
        ("Rollout.seed", {"seed": 1.5}),
        ("Rollout.journal", {"journal": "deploy.journal"}),
        ("Rollout.lock", {"lock": 3}),
        ("Rollout.analysis", {"analysis": METRIC}),
        ("Rollout.flags", {"flags": set_flag}),
        ("RollingUpdate.max_surge", {"strategy": RollingUpdate(max_surge=1)}),  # cannot launch
        ("Batches.surge", {"strategy": Batches(1, surge=True)}),
        ("Rollout.strategy", {"strategy": BlueGreen()}),
    ],
)
def test_rollout_refuses_at_construction(field: str, options: dict[str, Any]) -> None:
    driver = RecordingDriver()
    target = options.pop("target", "v2")
    refused(field, lambda: Rollout(driver, target, **options))
    assert driver.calls == []


@pytest.mark.parametrize(
    ("field", "options"),
    [
        ("Rollout.router", {"strategy": Canary()}),  # no router
        ("Rollout.router", {"strategy": Canary(), "router": PlainRouter()}),  # no set_weight
        (
            "Rollout.steps[0]",
            {"strategy": Canary(), "router": WeightedRouter(), "steps": [Advance(1)]},
        ),
        ("Rollout.steps[0]", {"strategy": BlueGreen(), "steps": [Pause(5)]}),
    ],
)
def test_combinations_the_docs_forbid(field: str, options: dict[str, Any]) -> None:
    driver = ElasticRecordingDriver()
    refused(field, lambda: Rollout(driver, "v2", **options))
    assert driver.calls == []
    refused("Canary.promotion", lambda: Canary(promotion=bad(Batches(1))))


def test_driver_without_the_protocol() -> None:
    class NoList:
        async def replace(self, instance: Box, version: str) -> Box:
            return Box(instance.id, version)

    class NoChange:
        async def list_instances(self) -> list[Box]:
            return []

    refused("Rollout.driver", lambda: Rollout(bad(NoList()), "v2"))
    refused("Rollout.driver", lambda: Rollout(bad(NoChange()), "v2"))


def test_valid_edges_are_accepted() -> None:
    """The documented edge values: they must not be refused."""
    elastic = ElasticRecordingDriver()
    Rollout(elastic, "v2", strategy=RollingUpdate(max_unavailable=0, max_surge=1))
    Rollout(elastic, "v2", strategy=RollingUpdate(max_unavailable="100%"))
    Rollout(elastic, "v2", strategy=RollingUpdate(max_surge="200%"))
    Rollout(RecordingDriver(), "v2", strategy=RollingUpdate(max_surge="0%"))
    Rollout(RecordingDriver(), "v2", steps=[Advance("100%"), Pause(0)])
    Rollout(elastic, "v2", strategy=Canary(), router=WeightedRouter())  # no steps: promotes
    Rollout(
        elastic,
        "v2",
        strategy=Canary(promotion=RollingUpdate(max_unavailable=0, max_surge=1)),
        router=WeightedRouter(),
        steps=[SetWeight(0), SetCanaryScale(replicas=0), SetWeight(100), SetWeight(0.5)],
    )
    BlueGreen(auto_promote=False, auto_promote_after=0)
    Readiness(initial_delay=0, min_ready=0, deadline=0.001)
    Backoff(factor=1, jitter=1, initial=0)
    FailurePolicy(max_failed="100%", max_failed_per_batch="0%")
    assert RollingUpdate(max_unavailable=" 25 % ").resolve(4).max_unavailable == 1


def test_percentages_round_as_documented() -> None:
    """concepts.md / the docstrings: surge rounds up, unavailable down, Ansible's serial."""
    window = RollingUpdate(max_unavailable="25%", max_surge="25%").resolve(10)
    assert (window.max_unavailable, window.max_surge) == (2, 3)
    window = RollingUpdate(max_unavailable="10%").resolve(5)
    assert window.max_unavailable == 1  # both zero: one may be unavailable
    assert RollingUpdate(max_unavailable=0, max_surge=1).resolve(0).max_unavailable == 0
    assert Batches(1, 5, "20%").resolve(12) == [1, 5, 2, 2, 2]
    assert Batches("20%").resolve(3) == [1, 1, 1]  # int(0.6) or 1
    assert Advance("25%").resolve(10) == 3
    assert Advance(50).resolve(10) == 10
    assert BlueGreen(preview_replicas="30%").preview(10) == 3
    assert BlueGreen(preview_replicas="25%").preview(5) == 2
    assert FailurePolicy(max_failed="25%").budget(10) == 2
    assert RollingUpdate(max_unavailable="8.8%").resolve(375).max_unavailable == 33


@pytest.mark.anyio
async def test_steps_that_go_back_for_this_fleet_are_refused_after_listing_only() -> None:
    """concepts.md: a count/percentage mix is checked right after list_instances()."""
    driver = RecordingDriver(size=20)
    rollout = Rollout(driver, "v2", steps=[Advance(5), Advance("10%")])
    with pytest.raises(ConfigError) as caught:
        await rollout.run()
    assert caught.value.field == "Rollout.steps[1]"
    assert driver.calls == ["list_instances"]


# -- the command line: exit 78 and the key --------------------------------------------


SIMULATED = '[driver]\nplugin = "simulated"\ninstances = 4\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "deploy.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (SIMULATED + '[order]\ntype = "sorted"\nreverse = "yes"\n', ":6: order.reverse: "),
        (SIMULATED + '[order]\ntype = "shuffled"\n', ":4: order.seed: is missing"),
        ("progress_deadline = -5\n" + SIMULATED, ":1: progress_deadline: must be > 0"),
        ("progress_deadline = 1e400\n" + SIMULATED, ":1: progress_deadline: must be finite"),
        (SIMULATED + "[journal]\npath = 3\n", ":5: journal.path: expected a non-empty path"),
        (SIMULATED + "[waves]\nattribute = 3\n", ":5: waves.attribute: expected a name, got 3"),
        (
            SIMULATED + '[strategy]\ntype = "batches"\nsizes = "25%"\n',
            ":6: strategy.sizes: expected a list",
        ),
        (SIMULATED + '[strategy]\nmax_unavailable = "abc%"\n', ":5: strategy.max_unavailable: "),
        ("seed = true\n" + SIMULATED, ":1: seed: "),
        (
            SIMULATED + "[[steps]]\nset_weight = 25\n",
            ":4: steps.0: SetWeight applies to the Canary",
        ),
        # the plugins' settings, named as the file writes them
        (
            '[driver]\nplugin = "simulated"\nlatency = { replace = -1 }\n',
            ":3: driver.latency.replace: must be >= 0",
        ),
        ('[driver]\nplugin = "simulated"\nfaults = [ { bogus = 1 } ]\n', ":3: driver.faults: "),
        ('[driver]\nplugin = "simulated"\nzones = "abc"\n', ":3: driver.zones: "),
        ('[driver]\nplugin = "process"\ncommand = ["x"]\nlog_dir = 3\n', ":4: driver.log_dir: "),
        (
            SIMULATED + '[metrics.m]\nprovider = "scrape"\nname = "other"\nfailure = "> 1"\n'
            '[metrics.m.settings]\nmetric = "x"\n[analysis]\nmetrics = ["m"]\n',
            ":6: metrics.m.name: ",
        ),
    ],
)
@pytest.mark.parametrize("command", ["validate", "plan"])
def test_cli_refuses_a_bad_file_naming_the_key(
    tmp_path: Path, text: str, where: str, command: str
) -> None:
    path = write(tmp_path, text)
    extra = ["--to", "v2"] if command == "plan" else []
    done = rolling_cli(command, path, *extra, cwd=tmp_path)
    assert done.returncode == 78, done.stderr + done.stdout
    assert f"deploy.toml{where}" in done.stderr


def test_cli_plan_refuses_advances_that_go_back_for_the_listed_fleet(tmp_path: Path) -> None:
    """plan lists the fleet: it refuses (78) what run() would, instead of planning it."""
    path = write(tmp_path, SIMULATED + '[[steps]]\nadvance = 3\n[[steps]]\nadvance = "50%"\n')
    assert rolling_cli("validate", path, cwd=tmp_path).returncode == 0  # no fleet: not known yet
    done = rolling_cli("plan", path, "--to", "v2", cwd=tmp_path)
    assert done.returncode == 78, done.stderr + done.stdout
    assert "Advance('50%') is 2 of 4 instances" in done.stderr


def test_cli_run_exits_78_on_a_config_error_found_after_listing(tmp_path: Path) -> None:
    """cli.md: 78 is "an option the library refuses"; it was 3 (halted), with an ExceptionGroup."""
    path = write(tmp_path, SIMULATED + '[[steps]]\nadvance = 3\n[[steps]]\nadvance = "50%"\n')
    done = rolling_cli("run", path, "--to", "v2", cwd=tmp_path)
    assert done.returncode == 78, done.stderr + done.stdout
    assert "ExceptionGroup" not in done.stderr
    assert "Rollout.steps[1]: Advance('50%')" in done.stderr


class _BytesPath:
    def __fspath__(self) -> bytes:
        return b"/tmp/journal"


@pytest.mark.parametrize(
    ("build", "field"),
    [
        (rolling.FileJournal, "FileJournal.path"),
        (rolling.FileLock, "FileLock.path"),
        (FlagdFile, "FlagdFile.path"),
    ],
)
@pytest.mark.parametrize("path", [None, 3, b"/tmp/j", "", _BytesPath()])
def test_a_file_path_that_is_no_path_is_a_config_error(
    build: Any, field: str, path: object
) -> None:
    with pytest.raises(rolling.ConfigError, match=field) as caught:
        build(path)
    assert "pass a str or a pathlib.Path" in str(caught.value)


@pytest.mark.parametrize("build", [rolling.FileJournal, rolling.FileLock, FlagdFile])
def test_a_file_path_may_be_a_str_or_any_path_like(build: Any, tmp_path: Path) -> None:
    class Named:
        def __fspath__(self) -> str:
            return str(tmp_path / "f")

    for path in (str(tmp_path / "f"), tmp_path / "f", Named()):
        assert build(path).path == tmp_path / "f"

# pyright: reportTypedDictNotRequiredAccess=false
# (the tests read the keys each recipe is documented to return; a missing one fails the test)
"""rolling.recipes: each tool's arithmetic, checked against the tool's own documented examples.

Each test cites the page and the example it checks. What rolling resolves (a window's floor
and ceiling, batch sizes, thresholds, the step list) is checked, and the recipes that run on
today's engine (RollingUpdate and Batches) also run a short rollout on a SimulatedFleet with
an InvariantMonitor, so the floor and ceiling are shown to hold, not only computed.
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

import pytest

import rolling
from rolling import recipes
from rolling.recipes import RolloutOptions
from rolling.testing import Fault, InvariantMonitor, Latency, SimulatedFleet

if TYPE_CHECKING:
    from rolling._strategy import ResolvedWindow

STALLED = 24 * 3600


def window(options: RolloutOptions, desired: int) -> ResolvedWindow:
    strategy = options["strategy"]
    assert isinstance(strategy, rolling.RollingUpdate)
    return strategy.resolve(desired)


def batches(options: RolloutOptions, fleet: int) -> list[int]:
    strategy = options["strategy"]
    assert isinstance(strategy, rolling.Batches)
    return strategy.resolve(fleet)


def config_error(field: str) -> Any:
    return pytest.raises(rolling.ConfigError, match=f"^{re.escape(field)}:")


def merged(options: RolloutOptions, readiness: rolling.Readiness, **extra: Any) -> dict[str, Any]:
    """``options`` with the fleet's readiness check (a recipe's own readiness timing wins)."""
    mine = options.get("readiness")
    check = (
        readiness
        if mine is None
        else rolling.Readiness(
            check=readiness.check, min_ready=mine.min_ready, deadline=mine.deadline
        )
    )
    return {**options, "readiness": check, **extra}


async def run_watched(
    options: RolloutOptions, size: int, *, max_unavailable: int, max_surge: int, **extra: Any
) -> tuple[rolling.RolloutResult, SimulatedFleet, InvariantMonitor]:
    """Run ``options`` on a fleet of ``size`` with latencies, watched by an InvariantMonitor."""
    fleet = SimulatedFleet(
        size, latency=Latency(replace=7, launch=11, terminate=2, detach=1, attach=1)
    )
    monitor = InvariantMonitor(fleet, max_unavailable=max_unavailable, max_surge=max_surge)
    return await run_on(fleet, options, rolling.Readiness(check=fleet), **extra), fleet, monitor


async def run_on(
    fleet: SimulatedFleet, options: RolloutOptions, readiness: rolling.Readiness, **extra: Any
) -> rolling.RolloutResult:
    """Roll ``fleet`` to v2 with ``options`` (behind the fleet's router), bounded in time."""
    rollout = rolling.Rollout(fleet, "v2", router=fleet, **merged(options, readiness, **extra))
    with rolling_timeout():
        return await rollout.run()


def rolling_timeout() -> Any:
    import anyio  # noqa: PLC0415 - only the async helpers need it

    return anyio.fail_after(STALLED)


# ------------------------------------------------------------------------------ Kubernetes


def test_kubernetes_defaults_on_ten_replicas() -> None:
    # kubernetes.io/docs/concepts/workloads/controllers/deployment/ ("Max Unavailable",
    # "Max Surge"): 25 % by default; surge rounds up, unavailable down. On 10 replicas:
    # 3 extra pods (ceil 2.5) and 2 unavailable (floor 2.5), so 8 to 13 pods.
    resolved = window(recipes.kubernetes_deployment(), 10)
    assert (resolved.max_surge, resolved.max_unavailable) == (3, 2)
    assert (resolved.floor, resolved.ceiling) == (8, 13)


def test_kubernetes_thirty_percent_example() -> None:
    # Same page: "when this value is set to 30%, the old ReplicaSet can be scaled down to
    # 70% of desired Pods immediately" and "...does not exceed 130% of desired Pods".
    options = recipes.kubernetes_deployment(max_surge="30%", max_unavailable="30%")
    resolved = window(options, 10)
    assert (resolved.floor, resolved.ceiling) == (7, 13)


def test_kubernetes_both_zero_resolving_means_one_unavailable() -> None:
    # Same page: maxUnavailable "cannot be 0 if maxSurge is 0"; percentages that both
    # round to 0 (10 % of 3 replicas) leave one pod unavailable.
    resolved = window(recipes.kubernetes_deployment(max_surge="10%", max_unavailable="10%"), 3)
    assert (resolved.max_surge, resolved.max_unavailable) == (1, 0)
    resolved = window(recipes.kubernetes_deployment(max_surge="0%", max_unavailable="10%"), 3)
    assert (resolved.max_surge, resolved.max_unavailable) == (0, 1)
    with config_error("kubernetes_deployment.max_unavailable"):
        recipes.kubernetes_deployment(max_surge=0, max_unavailable=0)


def test_kubernetes_readiness_deadline_and_no_rollback() -> None:
    async def check(_instance: object) -> bool:
        return True

    options = recipes.kubernetes_deployment(
        min_ready_seconds=30, progress_deadline_seconds=120, check=check
    )
    assert options["readiness"].min_ready == 30
    assert options["readiness"].deadline == 120
    assert options["readiness"].check is check
    assert options["progress_deadline"] == rolling.ProgressDeadline(120, "report")
    assert options["rollback"] is rolling.RollbackMode.HALT
    with config_error("kubernetes_deployment.progress_deadline_seconds"):
        recipes.kubernetes_deployment(min_ready_seconds=600)  # Kubernetes refuses it too
    with config_error("kubernetes_deployment.max_surge"):
        recipes.kubernetes_deployment(max_surge="lots")
    with config_error("kubernetes_deployment.min_ready_seconds"):
        recipes.kubernetes_deployment(min_ready_seconds=-1)


def test_kubernetes_refuses_what_its_validation_refuses() -> None:
    # k8s.io/apimachinery IsValidPercent: a percentage is ^[0-9]+%$ (whole ASCII digits, no
    # blanks); counts and the seconds fields are int32, so 10**400 is a ConfigError, not the
    # OverflowError of float(10**400).
    for bad in ("2.5%", " 25 % ", "25 %", "²%", "25", "-5%"):
        with config_error("kubernetes_deployment.max_surge"):
            recipes.kubernetes_deployment(max_surge=bad)
    with config_error("kubernetes_deployment.max_unavailable"):
        recipes.kubernetes_deployment(max_unavailable="12.5%")
    with config_error("kubernetes_deployment.max_surge"):
        recipes.kubernetes_deployment(max_surge=2**31)
    with config_error("kubernetes_deployment.progress_deadline_seconds"):
        recipes.kubernetes_deployment(progress_deadline_seconds=10**400)
    with config_error("kubernetes_deployment.min_ready_seconds"):
        recipes.kubernetes_deployment(min_ready_seconds=10**400, progress_deadline_seconds=10**401)
    largest = recipes.kubernetes_deployment(progress_deadline_seconds=2**31 - 1)
    assert largest["readiness"].deadline == 2**31 - 1
    assert window(recipes.kubernetes_deployment(max_surge="007%"), 100).max_surge == 7


@pytest.mark.anyio
async def test_kubernetes_rollout_holds_its_floor_and_ceiling() -> None:
    options = recipes.kubernetes_deployment()
    resolved = window(options, 10)
    result, fleet, monitor = await run_watched(
        options, 10, max_unavailable=resolved.max_unavailable, max_surge=resolved.max_surge
    )
    assert result.status is rolling.RolloutStatus.SUCCEEDED, result.reason
    monitor.check_result(result, fleet)
    assert fleet.version_counts() == {"v2": 10}
    assert monitor.max_existing == 13  # the ceiling is reached, never passed
    assert monitor.min_serving >= 8


# ------------------------------------------------------------------------------------- ECS


def test_ecs_four_task_examples() -> None:
    # docs.aws.amazon.com/AmazonECS/latest/APIReference/API_DeploymentConfiguration.html:
    # 4 tasks with minimumHealthyPercent 50 % "may stop two existing tasks ... before starting
    # two new tasks"; with maximumPercent 200 % it "may start four new tasks before stopping
    # the four older tasks".
    resolved = window(recipes.ecs_rolling_update(minimum_healthy_percent=50), 4)
    assert resolved.max_unavailable == 2
    assert resolved.max_surge == 4
    assert (resolved.floor, resolved.ceiling) == (2, 8)


@pytest.mark.parametrize("desired", range(1, 31))
def test_ecs_floor_rounds_up_and_ceiling_down(desired: int) -> None:
    # Same page: the floor is minimumHealthyPercent of desiredCount "rounded up to the nearest
    # integer", the ceiling maximumPercent of it "rounded down to the nearest integer".
    for minimum in range(0, 101, 5):
        for maximum in (100, 110, 125, 150, 175, 200, 250):
            floor = math.ceil(minimum * desired / 100)
            ceiling = maximum * desired // 100
            if floor == ceiling == desired and desired > 0:
                continue  # ECS could never progress; refused below
            options = recipes.ecs_rolling_update(
                minimum_healthy_percent=minimum, maximum_percent=maximum, desired=desired
            )
            resolved = window(options, desired)
            assert (resolved.floor, resolved.ceiling) == (floor, ceiling), (minimum, maximum)


def test_ecs_surge_without_the_fleet_size() -> None:
    # 200 % (the default) and 300 % need no rounding; 150 % of 3 tasks is 4 for ECS (down)
    # where a max_surge of "50%" would give 5 (up), so the recipe asks for desired.
    assert window(recipes.ecs_rolling_update(), 3).ceiling == 6
    assert window(recipes.ecs_rolling_update(maximum_percent=300), 3).ceiling == 9
    with config_error("ecs_rolling_update.desired"):
        recipes.ecs_rolling_update(maximum_percent=150)
    assert window(recipes.ecs_rolling_update(maximum_percent=150, desired=3), 3).ceiling == 4
    with config_error("ecs_rolling_update.desired"):
        recipes.ecs_rolling_update(minimum_healthy_percent=50, maximum_percent=100)
    with config_error("ecs_rolling_update.maximum_percent"):
        recipes.ecs_rolling_update(maximum_percent=100, desired=4)  # floor 4, ceiling 4
    with config_error("ecs_rolling_update.maximum_percent"):
        recipes.ecs_rolling_update(maximum_percent=90)
    with config_error("ecs_rolling_update.minimum_healthy_percent"):
        recipes.ecs_rolling_update(minimum_healthy_percent=101)


@pytest.mark.parametrize(
    ("desired", "threshold"),
    [(0, 3), (1, 3), (6, 3), (7, 4), (25, 13), (399, 200), (400, 200), (800, 200)],
)
def test_ecs_circuit_breaker_threshold(desired: int, threshold: int) -> None:
    # docs.aws.amazon.com/AmazonECS/latest/APIReference/API_ServiceDeploymentCircuitBreaker.html:
    # "a minimum threshold of 3 and a maximum threshold of 200", "0.5 * desired task count";
    # the developer guide (deployment-circuit-breaker.html) rounds the result up.
    assert recipes.ecs_circuit_breaker_threshold(desired) == threshold
    if desired == 0:
        with config_error("ecs_rolling_update.desired"):
            recipes.ecs_rolling_update(deployment_circuit_breaker=True, desired=desired)
        return
    options = recipes.ecs_rolling_update(deployment_circuit_breaker=True, desired=desired)
    assert options["failure"].circuit_breaker == threshold


def test_ecs_threshold_configuration() -> None:
    # API_ThresholdConfiguration.html: COUNT is the value itself; the percentage types
    # multiply the value by the desired count, UNBOUNDED_PERCENT without the 3..200 bounds.
    assert (
        recipes.ecs_circuit_breaker_threshold(1000, threshold_type="COUNT", threshold_value=7) == 7
    )
    assert recipes.ecs_circuit_breaker_threshold(1000, threshold_type="UNBOUNDED_PERCENT") == 500
    assert recipes.ecs_circuit_breaker_threshold(2, threshold_type="UNBOUNDED_PERCENT") == 1
    assert recipes.ecs_circuit_breaker_threshold(10, threshold_value=10) == 3
    with config_error("ecs_rolling_update.threshold_type"):
        recipes.ecs_circuit_breaker_threshold(10, threshold_type="HALF")  # type: ignore[arg-type]
    with config_error("ecs_rolling_update.threshold_value"):
        recipes.ecs_circuit_breaker_threshold(10, threshold_value=0)
    with config_error("ecs_rolling_update.desired"):
        recipes.ecs_rolling_update(deployment_circuit_breaker=True)
    count = recipes.ecs_rolling_update(
        deployment_circuit_breaker=True, threshold_type="COUNT", threshold_value=5
    )
    assert count["failure"].circuit_breaker == 5
    # resetOnHealthyTask false: failures add up over the deployment, a healthy task resets
    # nothing, so it is a global budget that the threshold-th failure exceeds.
    cumulative = recipes.ecs_rolling_update(
        deployment_circuit_breaker=True, desired=10, reset_on_healthy_task=False, rollback=True
    )
    assert cumulative["failure"].max_failed == 4
    assert cumulative["failure"].circuit_breaker is None
    assert cumulative["rollback"] is rolling.RollbackMode.REVERT
    off = recipes.ecs_rolling_update()
    assert off["failure"].budget(50) == 50  # no breaker: ECS keeps trying, nothing trips
    assert off["rollback"] is rolling.RollbackMode.HALT
    with config_error("ecs_rolling_update.rollback"):
        recipes.ecs_rolling_update(rollback="yes")  # type: ignore[arg-type]


def test_ecs_threshold_configuration_is_checked_with_the_breaker_off() -> None:
    # ECS validates thresholdConfiguration's type and value whether or not the circuit
    # breaker is enabled; a bad one was accepted silently.
    with config_error("ecs_rolling_update.threshold_type"):
        recipes.ecs_rolling_update(threshold_type="BOGUS")  # type: ignore[arg-type]
    for bad in (0, "x", True, 2.5):
        with config_error("ecs_rolling_update.threshold_value"):
            recipes.ecs_rolling_update(threshold_value=bad)  # type: ignore[arg-type]
    assert recipes.ecs_rolling_update(threshold_type="COUNT", threshold_value=3)["failure"] == (
        rolling.FailurePolicy(max_failed="100%")
    )


@pytest.mark.anyio
async def test_ecs_rollout_holds_its_floor_and_ceiling() -> None:
    options = recipes.ecs_rolling_update(minimum_healthy_percent=50, maximum_percent=150, desired=5)
    resolved = window(options, 5)
    assert (resolved.floor, resolved.ceiling) == (3, 7)  # ceil(2.5), floor(7.5)
    result, fleet, monitor = await run_watched(
        options, 5, max_unavailable=resolved.max_unavailable, max_surge=resolved.max_surge
    )
    assert result.status is rolling.RolloutStatus.SUCCEEDED, result.reason
    monitor.check_result(result, fleet)
    assert fleet.version_counts() == {"v2": 5}
    assert monitor.max_existing <= 7
    assert monitor.min_serving >= 3


@pytest.mark.anyio
async def test_ecs_circuit_breaker_trips_and_rolls_back() -> None:
    options = recipes.ecs_rolling_update(
        maximum_percent=125, desired=4, deployment_circuit_breaker=True, rollback=True
    )
    fleet = SimulatedFleet(4, latency=Latency(launch=3))
    fleet.inject(Fault(never_ready=True), version="v2")
    monitor = InvariantMonitor(fleet, max_unavailable=0, max_surge=1)
    result = await run_on(fleet, options, rolling.Readiness(check=fleet, deadline=30))
    assert result.status is rolling.RolloutStatus.ROLLED_BACK
    assert "circuit breaker: 3 failures in a row" in result.reason
    monitor.check_result(result, fleet)
    assert fleet.version_counts() == {"v1": 4}
    assert len(fleet.launched_ids) == 3  # the third failed task trips it


# ------------------------------------------------------------------------ Elastic Beanstalk


def test_beanstalk_policies() -> None:
    # docs.aws.amazon.com/elasticbeanstalk/latest/dg/using-features.rolling-version-deploy.html
    # and the aws:elasticbeanstalk:command namespace: BatchSizeType Percentage or Fixed,
    # BatchSize 100 % by default (one batch, as AllAtOnce).
    assert batches(recipes.elastic_beanstalk(), 10) == [10]
    assert batches(recipes.elastic_beanstalk("Rolling"), 10) == [10]
    rolling_30 = recipes.elastic_beanstalk("Rolling", batch_size=30)
    assert batches(rolling_30, 10) == [3, 3, 3, 1]
    fixed = recipes.elastic_beanstalk("Rolling", batch_size_type="Fixed", batch_size=4)
    assert batches(fixed, 10) == [4, 4, 2]
    extra = recipes.elastic_beanstalk("RollingWithAdditionalBatch", batch_size=30)
    assert isinstance(extra["strategy"], rolling.Batches)
    assert extra["strategy"].surge
    assert batches(extra, 10) == [3, 3, 3, 1]
    immutable = recipes.elastic_beanstalk("Immutable")
    resolved = window(immutable, 10)
    assert (resolved.floor, resolved.ceiling) == (10, 20)
    assert immutable["steps"] == (rolling.Advance(1),)


def test_beanstalk_traffic_splitting() -> None:
    # Same page, "Traffic-splitting deployments", and the aws:elasticbeanstalk:trafficsplitting
    # namespace: NewVersionPercent 10 and EvaluationTime 5 (minutes) by default, on a full
    # new set of instances.
    options = recipes.elastic_beanstalk("TrafficSplitting")
    assert options["strategy"] == rolling.Canary(promotion=None, scale_down_delay=0.0)
    assert options["steps"] == (
        rolling.SetCanaryScale(replicas="100%"),
        rolling.SetWeight(10),
        rolling.Pause(300),
    )
    custom = recipes.elastic_beanstalk(
        "TrafficSplitting", new_version_percent=25, evaluation_time=3
    )
    assert custom["steps"][1:] == (rolling.SetWeight(25), rolling.Pause(180))


def test_beanstalk_traffic_splitting_ranges() -> None:
    # The aws:elasticbeanstalk:trafficsplitting namespace: NewVersionPercent 1 to 100,
    # EvaluationTime 3 to 600 (minutes). 100 % sends every request to the new set for the
    # evaluation; the old set stays until it ends.
    everything = recipes.elastic_beanstalk(
        "TrafficSplitting", new_version_percent=100, evaluation_time=600
    )
    assert everything["steps"][1:] == (rolling.SetWeight(100), rolling.Pause(36_000))
    for percent in (0, 101, "0%", -1):
        with config_error("elastic_beanstalk.new_version_percent"):
            recipes.elastic_beanstalk("TrafficSplitting", new_version_percent=percent)  # type: ignore[arg-type]
    for minutes in (0, 1, 2, 2.5, 601, 10**400, True):
        with config_error("elastic_beanstalk.evaluation_time"):
            recipes.elastic_beanstalk("TrafficSplitting", evaluation_time=minutes)  # type: ignore[arg-type]
    # Beanstalk checks an option's value when it is set, whatever the policy.
    with config_error("elastic_beanstalk.evaluation_time"):
        recipes.elastic_beanstalk("Rolling", evaluation_time=1)


def test_beanstalk_bad_input() -> None:
    with config_error("elastic_beanstalk.deployment_policy"):
        recipes.elastic_beanstalk("BlueGreen")  # type: ignore[arg-type]
    with config_error("elastic_beanstalk.batch_size_type"):
        recipes.elastic_beanstalk("Rolling", batch_size_type="percent")  # type: ignore[arg-type]
    with config_error("elastic_beanstalk.batch_size"):
        recipes.elastic_beanstalk("Rolling", batch_size=0)
    with config_error("elastic_beanstalk.batch_size"):
        recipes.elastic_beanstalk("Rolling", batch_size_type="Fixed", batch_size=0)
    with config_error("elastic_beanstalk.evaluation_time"):
        recipes.elastic_beanstalk("TrafficSplitting", evaluation_time=-1)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("policy", "max_unavailable", "max_surge"),
    [("Rolling", 3, 0), ("RollingWithAdditionalBatch", 0, 3), ("Immutable", 0, 10)],
)
async def test_beanstalk_rollouts_hold_their_limits(
    policy: Any, max_unavailable: int, max_surge: int
) -> None:
    options = recipes.elastic_beanstalk(policy, batch_size=30)
    result, fleet, monitor = await run_watched(
        options, 10, max_unavailable=max_unavailable, max_surge=max_surge
    )
    assert result.status is rolling.RolloutStatus.SUCCEEDED, result.reason
    monitor.check_result(result, fleet)
    assert fleet.version_counts() == {"v2": 10}


# ---------------------------------------------------------------------------- Argo Rollouts


def test_argo_canary_documented_steps() -> None:
    # argoproj.github.io/argo-rollouts/features/canary/ (Overview): the example's steps.
    options = recipes.argo_canary(
        [
            {"setWeight": 20},
            {"pause": {}},
            {"setWeight": 40},
            {"pause": {"duration": 10}},
            {"setWeight": 60},
            {"pause": {"duration": 10}},
            {"setWeight": 80},
            {"pause": {"duration": 10}},
        ]
    )
    assert options["steps"] == (
        rolling.SetWeight(20),
        rolling.Pause(),
        rolling.SetWeight(40),
        rolling.Pause(10),
        rolling.SetWeight(60),
        rolling.Pause(10),
        rolling.SetWeight(80),
        rolling.Pause(10),
    )
    # scaleDownDelaySeconds defaults to 30 with traffic routing; promotion is all at once.
    assert options["strategy"] == rolling.Canary(promotion=None, scale_down_delay=30.0)


def test_argo_durations_and_canary_scale() -> None:
    # Same page, "pause" durations: "duration: 10 # 10 seconds", "10s", "10m", "1h".
    assert [recipes.argo_duration(v) for v in (10, "10", "10s", "10m", "1h", "1h30m")] == [
        10,
        10,
        10,
        600,
        3600,
        5400,
    ]
    # Same page, "Dynamic Canary Scale (with Traffic Routing)": setCanaryScale takes replicas,
    # weight (a share of spec.replicas) or matchTrafficWeight.
    options = recipes.argo_canary(
        [
            {"setCanaryScale": {"replicas": 3}},
            {"setCanaryScale": {"weight": 25}},
            {"setCanaryScale": {"matchTrafficWeight": True}},
        ]
    )
    assert options["steps"] == (
        rolling.SetCanaryScale(replicas=3),
        rolling.SetCanaryScale(replicas="25%"),
        rolling.SetCanaryScale(match_traffic_weight=True),
    )


@pytest.mark.parametrize(
    ("duration", "seconds"),
    [
        ("30m1h", 5400),  # Go's ParseDuration takes units in any order
        (".5h", 1800),
        ("1.5h", 5400),
        ("1h1.5m", 3690),
        ("5.s", 5),
        ("+5s", 5),
        ("010", 10),  # strconv.ParseInt first: whole seconds without a unit
        ("1\u00b5s", 0),  # µs, and the Greek mu below, are Go units
        ("1\u03bcs", 0),
        # Argo keeps int32(d.Seconds()), truncated toward zero, as RolloutPause.DurationSeconds.
        ("500ms", 0),
        ("1m30.5s", 90),
        ("-500ms", 0),
        ("596523h14m7s", 2**31 - 1),
        (2**31 - 1, 2**31 - 1),
    ],
)
def test_argo_durations_are_go_durations(duration: object, seconds: int) -> None:
    assert recipes.argo_duration(duration) == seconds


@pytest.mark.parametrize(
    "duration",
    [
        "²",  # passes str.isdigit(), but Go (and Argo) only read ASCII digits
        "3h\u0663m",
        "1h 30m",
        " 10s",
        "",
        ".",
        "1..5s",
        "1e3s",
        "1_000s",
        "1hh",
        "1h-5m",
        "-5s",
        "-10",
        "2147483648",  # past ParseInt's 32 bits, and no unit for ParseDuration
        "596523h14m8s",  # past int32 seconds
        "9223372036854775808ns",  # past Go's int64 nanoseconds
        1.5,  # the duration is an IntOrString: no floats
        -1,
        2**31,
        True,
        None,
    ],
)
def test_argo_durations_refuse_what_argo_refuses(duration: object) -> None:
    with config_error("argo_canary.steps"):
        recipes.argo_duration(duration)
    if duration is not None:  # {"duration": None} is no duration: a pause until promoted
        with config_error("argo_canary.steps[0]"):
            recipes.argo_canary([{"pause": {"duration": duration}}])


def test_argo_int32_fields_refuse_other_types() -> None:
    # Argo's CanaryStep.SetWeight, SetCanaryScale.Replicas and .Weight are *int32.
    for step in (
        {"setWeight": 20.5},
        {"setWeight": "20"},
        {"setWeight": True},
        {"setCanaryScale": {"replicas": "25%"}},
        {"setCanaryScale": {"replicas": 2.0}},
        {"setCanaryScale": {"replicas": 2**31}},
        {"setCanaryScale": {"weight": 12.5}},
    ):
        with config_error("argo_canary.steps[0]"):
            recipes.argo_canary([step])
    with config_error("argo_blue_green.auto_promotion_seconds"):
        recipes.argo_blue_green(auto_promotion_seconds=10**400)
    with config_error("argo_blue_green.preview_replica_count"):
        recipes.argo_blue_green(preview_replica_count=2**31)


def test_argo_analysis_steps_and_bad_steps() -> None:
    async def provider(_context: object) -> float:
        return 0.0

    analysis = rolling.Analysis(
        name="errors",
        metrics=[rolling.Metric(name="errors", provider=provider, success=lambda v: v < 1)],
    )
    options = recipes.argo_canary([{"setWeight": 5}, {"analysis": analysis}], analysis=analysis)
    assert options["steps"] == (rolling.SetWeight(5), rolling.Analyze(analysis))
    assert options["analysis"] is analysis
    with config_error("argo_canary.steps[1]"):
        recipes.argo_canary(
            [{"setWeight": 5}, {"analysis": {"templates": [{"templateName": "x"}]}}]
        )
    with config_error("argo_canary.steps[0]"):
        recipes.argo_canary([{"experiment": {}}])
    with config_error("argo_canary.steps[0]"):
        recipes.argo_canary([{"setWeight": 5, "pause": {}}])
    with config_error("argo_canary.steps[0]"):
        recipes.argo_canary([{"setWeight": 101}])
    with config_error("argo_canary.steps[0]"):
        recipes.argo_canary([{"pause": {"duration": "soon"}}])
    with config_error("argo_canary.steps[0]"):
        recipes.argo_canary([{"setCanaryScale": {"replicas": 2, "weight": 5}}])
    with config_error("argo_canary.steps[0]"):
        recipes.argo_canary([{"rollback": {}}])
    with config_error("argo_canary.steps"):
        recipes.argo_canary({"setWeight": 5})  # type: ignore[arg-type]


def test_argo_blue_green() -> None:
    # argoproj.github.io/argo-rollouts/features/bluegreen/: autoPromotionEnabled defaults to
    # true, scaleDownDelaySeconds to 30; autoPromotionSeconds promotes after that long.
    assert recipes.argo_blue_green()["strategy"] == rolling.BlueGreen(
        auto_promote=True, scale_down_delay=30.0
    )
    manual = recipes.argo_blue_green(auto_promotion_enabled=False, preview_replica_count=1)
    assert manual["strategy"] == rolling.BlueGreen(
        auto_promote=False, preview_replicas=1, scale_down_delay=30.0
    )
    timed = recipes.argo_blue_green(auto_promotion_seconds=60, scale_down_delay_seconds=0)
    assert timed["strategy"] == rolling.BlueGreen(
        auto_promote=False, auto_promote_after=60.0, scale_down_delay=0.0
    )
    with config_error("argo_blue_green.auto_promotion_seconds"):
        recipes.argo_blue_green(auto_promotion_enabled=False, auto_promotion_seconds=60)
    with config_error("argo_blue_green.pre_promotion_analysis"):
        recipes.argo_blue_green(pre_promotion_analysis="error-rate")  # type: ignore[arg-type]
    with config_error("argo_blue_green.preview_replica_count"):
        recipes.argo_blue_green(preview_replica_count=0)


# -------------------------------------------------------------------------------- Spinnaker


def test_spinnaker_red_black_and_highlander() -> None:
    # Spinnaker's deploy stage strategies (spinnaker.io, "Deployment strategies"): red/black
    # keeps maxRemainingAsgs server groups (2 by default) and waits delayBeforeDisableSec
    # with both enabled; highlander destroys every old one.
    assert recipes.spinnaker_red_black()["strategy"] == rolling.BlueGreen(scale_down_delay=0.0)
    kept = recipes.spinnaker_red_black(scale_down=True, delay_before_scale_down_sec=600)
    assert kept["strategy"] == rolling.BlueGreen(scale_down_delay=600.0)
    both = recipes.spinnaker_red_black(delay_before_disable_sec=120)
    assert both["strategy"] == rolling.Canary(promotion=None, scale_down_delay=0.0)
    assert both["steps"] == (
        rolling.SetCanaryScale(replicas="100%"),
        rolling.SetWeight(50),
        rolling.Pause(120),
    )
    assert recipes.spinnaker_highlander()["strategy"] == rolling.BlueGreen(scale_down_delay=0.0)
    with config_error("spinnaker_red_black.max_remaining_asgs"):
        recipes.spinnaker_red_black(max_remaining_asgs=3)
    with config_error("spinnaker_red_black.delay_before_scale_down_sec"):
        recipes.spinnaker_red_black(max_remaining_asgs=1, delay_before_scale_down_sec=60)
    with config_error("spinnaker_red_black.scale_down"):
        recipes.spinnaker_red_black(scale_down="yes")  # type: ignore[arg-type]


def test_spinnaker_rolling_red_black() -> None:
    async def healthy() -> bool:
        return True

    gate = rolling.Gate(healthy, name="validate")
    options = recipes.spinnaker_rolling_red_black([25, 50, 100], validation=gate)
    assert options["steps"] == (
        rolling.SetCanaryScale(replicas="25%"),
        rolling.SetWeight(25),
        gate,
        rolling.SetCanaryScale(replicas="50%"),
        rolling.SetWeight(50),
        gate,
        rolling.SetCanaryScale(replicas="100%"),
        rolling.SetWeight(100),
        gate,
    )
    # Spinnaker's RollingRedBlackStrategy (orca) adds 100 when the list does not end with it.
    assert recipes.spinnaker_rolling_red_black([25, 50], validation=gate) == options
    assert recipes.spinnaker_rolling_red_black([])["steps"] == (
        rolling.SetCanaryScale(replicas="100%"),
        rolling.SetWeight(100),
    )
    with config_error("spinnaker_rolling_red_black.target_percentages"):
        recipes.spinnaker_rolling_red_black("100")  # type: ignore[arg-type]
    with config_error(r"spinnaker_rolling_red_black.target_percentages[0]"):
        recipes.spinnaker_rolling_red_black([101])
    with config_error(r"spinnaker_rolling_red_black.target_percentages[1]"):
        recipes.spinnaker_rolling_red_black([50, 25, 100])
    with config_error("spinnaker_rolling_red_black.validation"):
        recipes.spinnaker_rolling_red_black([100], validation="judge")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- Ansible


def test_ansible_serial_examples() -> None:
    # docs.ansible.com/ansible/latest/playbook_guide/playbooks_strategies.html, "Setting the
    # batch size with serial": serial 3 over 6 hosts runs 3 then 3; a list such as [1, 5, 10]
    # repeats its last size; ["10%", "20%", "100%"] ends with every host left.
    assert batches(recipes.ansible(3), 6) == [3, 3]
    assert batches(recipes.ansible([1, 5, 10]), 20) == [1, 5, 10, 4]
    assert batches(recipes.ansible(["10%", "20%", "100%"]), 20) == [2, 4, 14]
    assert batches(recipes.ansible("30%"), 20) == [6, 6, 6, 2]  # int(6.0) each
    assert batches(recipes.ansible("30%"), 3) == [1, 1, 1]  # int(0.9) or 1
    assert batches(recipes.ansible([2, 0]), 9) == [2, 7]  # 0: every host left
    assert batches(recipes.ansible(), 9) == [9]
    assert batches(recipes.ansible("4"), 9) == [4, 4, 1]
    with config_error("ansible.serial[1]"):
        recipes.ansible([1, 2.5])  # type: ignore[list-item]


def ansible_batch_sizes(serial: Any, hosts: int) -> list[int]:
    """Ansible's own batching (PlaybookExecutor._get_serialized_batches with pct_to_int)."""

    def pct_to_int(value: Any) -> int:
        if isinstance(value, str) and value.endswith("%"):
            return int((int(value.replace("%", "")) / 100.0) * hosts) or 1
        return int(value)

    entries: list[Any] = [] if serial is None else [serial]
    if not isinstance(serial, int | str | None):
        entries = list(serial)  # a list of entries
    entries = entries or [-1]
    sizes: list[int] = []
    left, index = hosts, 0
    while left > 0:
        size = pct_to_int(entries[index])
        if size <= 0:
            sizes.append(left)
            break
        sizes.append(min(size, left))
        left -= sizes[-1]
        index = min(index + 1, len(entries) - 1)
    return sizes


@pytest.mark.parametrize(
    "serial",
    [None, [], 0, -1, "-1", "0%", ["0%"], [1, "0%"], [2, -1], "150%", [1, "150%"], " 3 ", "50%"],
)
@pytest.mark.parametrize("hosts", [1, 7, 20])
def test_ansible_serial_edge_values_batch_as_ansible_does(serial: Any, hosts: int) -> None:
    # Ansible's pct_to_int: "0%" is int(0) or 1, one host at a time; a batch size of 0 or
    # less (0, -1, an empty list, no serial) is every host left; int() reads " 3 " as 3.
    assert batches(recipes.ansible(serial), hosts) == ansible_batch_sizes(serial, hosts)


def test_ansible_serial_refuses_what_pct_to_int_refuses() -> None:
    # int("20.5") raises in pct_to_int, so Ansible refuses a fractional percentage; "²"
    # passes str.isdigit() but not int(), and must be a ConfigError, not a ValueError.
    for serial in ("20.5%", "2.5%", "0.0%", "x%", "²", "³%", "3 hosts"):
        with config_error("ansible.serial"):
            recipes.ansible(serial)
    with config_error("ansible.serial[1]"):
        recipes.ansible([1, "12.5%"])
    with config_error("ansible.serial"):
        recipes.ansible("-10%")  # int(-0.1 * N) or 1 flips with N: no rolling equivalent


def test_ansible_max_fail_percentage_is_more_than() -> None:
    # Same page, "Setting a maximum failure percentage": "if serial were set to 4 and you
    # wanted the task to abort the play when 2 of the systems failed, set the
    # max_fail_percentage at 49 rather than 50"; and 30 over 10 hosts aborts when "more
    # than 3" fail.
    at_49 = recipes.ansible(4, max_fail_percentage=49)["failure"]
    at_50 = recipes.ansible(4, max_fail_percentage=50)["failure"]
    assert at_49.batch_exceeded(2, 4)
    assert not at_50.batch_exceeded(2, 4)
    at_30 = recipes.ansible(10, max_fail_percentage="30%")["failure"]
    assert not at_30.batch_exceeded(3, 10)
    assert at_30.batch_exceeded(4, 10)
    assert at_30.budget(100) == 100  # only the per-batch rule stops it
    assert recipes.ansible(max_fail_percentage=12.5)["failure"].max_failed_per_batch == "12.5%"
    with config_error("ansible.max_fail_percentage"):
        recipes.ansible(max_fail_percentage=101)
    with config_error("ansible.max_fail_percentage"):
        recipes.ansible(max_fail_percentage="most")


def ansible_stops(failed: int, batch: int, max_fail_percentage: float) -> bool:
    """Ansible's rule: the linear strategy's float test, or a whole failed batch."""
    return failed / batch > max_fail_percentage / 100.0 or failed == batch


@pytest.mark.parametrize(
    "value",
    [
        12.3456789,  # 10 failed of 81: Ansible stops (6-digit rounding did not)
        33.33334,  # 1 failed of 3: Ansible goes on (6-digit rounding stopped)
        0.00001,  # "1e-05%" was refused under FailurePolicy.max_failed_per_batch
        1e-7,
        0,
        49,
        100 / 3,  # the float just below 1/3: 1/3 rounds to it, which is not more
        math.nextafter(100 / 3, 100),
        200 / 3,
        99.9999,
        99.99991,
        100,  # never more than 100 %, so only a whole failed batch stops the play
    ],
)
def test_ansible_max_fail_percentage_decides_as_ansible(value: float) -> None:
    policy = recipes.ansible(max_fail_percentage=value)["failure"]
    assert policy.max_failed_per_batch is not None
    for batch in range(1, 200):
        for failed in range(batch + 1):
            assert policy.batch_exceeded(failed, batch) == ansible_stops(failed, batch, value), (
                failed,
                batch,
                policy.max_failed_per_batch,
            )
    for batch in (999, 12_345, 654_321, 999_999):
        share = int(batch * value / 100)
        for failed in {0, share - 1, share, share + 1, batch - 1, batch} - {-1, batch + 1}:
            assert policy.batch_exceeded(failed, batch) == ansible_stops(failed, batch, value)


def test_ansible_max_fail_percentage_keeps_the_value_as_written() -> None:
    def written(value: object) -> str | None:
        return recipes.ansible(max_fail_percentage=value)["failure"].max_failed_per_batch  # type: ignore[arg-type]

    assert written(12.3456789) == "12.3456789%"
    assert written(33.33334) == "33.33334%"
    assert written(0.00001) == "0.00001%"
    assert written(" 30 %") == "30%"  # Ansible drops the "%" and calls float()
    assert written("1e1") == "10%"
    assert written(100) == recipes.WHOLE_BATCH_FAILED
    for bad in (float("nan"), float("inf"), -0.5, 100.5, 10**400, "1e400", True, [30]):
        with config_error("ansible.max_fail_percentage"):
            recipes.ansible(max_fail_percentage=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [1, 2, 10, 1000, 999_999])
def test_ansible_default_stops_only_when_a_whole_batch_failed(size: int) -> None:
    # playbooks_error_handling.html: without max_fail_percentage, failed hosts drop out and
    # the play goes on, until every host of a batch has failed.
    options = recipes.ansible(size)
    assert options["failure"].batch_exceeded(size, size)
    assert not options["failure"].batch_exceeded(size - 1, size)
    assert options["rollback"] is rolling.RollbackMode.HALT
    fatal = recipes.ansible(size, any_errors_fatal=True)["failure"]
    assert fatal.budget(size) == 0


@pytest.mark.anyio
async def test_ansible_rollout_holds_its_batches() -> None:
    options = recipes.ansible("30%")
    result, fleet, monitor = await run_watched(options, 20, max_unavailable=6, max_surge=0)
    assert result.status is rolling.RolloutStatus.SUCCEEDED, result.reason
    monitor.check_result(result, fleet)
    assert fleet.version_counts() == {"v2": 20}


@pytest.mark.anyio
async def test_ansible_max_fail_percentage_halts_the_play() -> None:
    options = recipes.ansible(4, max_fail_percentage=49)
    fleet = SimulatedFleet(8, latency=Latency(replace=5))
    for instance_id in ("i-001", "i-002"):
        fleet.inject(Fault(replace_raises=True), instance_id=instance_id)
    monitor = InvariantMonitor(fleet, max_unavailable=4, max_surge=0)
    result = await run_on(fleet, options, rolling.Readiness(check=fleet))
    assert result.status is rolling.RolloutStatus.HALTED
    assert "max_failed_per_batch=49%" in result.reason
    monitor.check_result(result, fleet)
    counts = fleet.version_counts()
    assert counts == {"v1": 6, "v2": 2}  # batch 1 finished; batch 2 never started


def test_recipes_are_documented_and_exported() -> None:
    for name in recipes.__all__:
        assert getattr(recipes, name).__doc__, name
    assert recipes.__all__ == sorted(recipes.__all__, key=lambda n: (not n.isupper(), n))


def test_recipes_refuse_what_is_not_the_tools_type() -> None:
    async def healthy() -> bool:
        return True

    gate = rolling.Gate(healthy)
    assert recipes.argo_canary([{"analysis": gate}])["steps"] == (gate,)
    with config_error("argo_canary.steps[0]"):
        recipes.argo_canary([{"setCanaryScale": {"weight": 120}}])
    with config_error("argo_canary.steps[0]"):
        recipes.argo_canary([{"pause": {"seconds": 5}}])
    with config_error("argo_canary.analysis"):
        recipes.argo_canary([], analysis="error-rate")  # type: ignore[arg-type]
    with config_error("argo_blue_green.auto_promotion_enabled"):
        recipes.argo_blue_green(auto_promotion_enabled="no")  # type: ignore[arg-type]
    with config_error("ansible.any_errors_fatal"):
        recipes.ansible(any_errors_fatal=1)  # type: ignore[arg-type]
    # ECS takes whole percentages, as ints or as "50%".
    assert window(recipes.ecs_rolling_update(minimum_healthy_percent="50%"), 4).floor == 2  # type: ignore[arg-type]
    with config_error("ecs_rolling_update.minimum_healthy_percent"):
        recipes.ecs_rolling_update(minimum_healthy_percent="half")  # type: ignore[arg-type]
    # Only ASCII digits: "\u0665\u0660%" (Arabic-Indic 50) passed \\d and int().
    with config_error("ecs_rolling_update.minimum_healthy_percent"):
        recipes.ecs_rolling_update(minimum_healthy_percent="\u0665\u0660%")  # type: ignore[arg-type]
    with config_error("elastic_beanstalk.batch_size"):
        recipes.elastic_beanstalk("Rolling", batch_size="\u00b2%")  # type: ignore[arg-type]

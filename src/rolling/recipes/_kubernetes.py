"""Kubernetes Deployments and Amazon ECS rolling updates: a sliding window with limits."""

from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Any, Literal

from rolling import (
    ConfigError,
    DeadlineAction,
    FailurePolicy,
    ProgressDeadline,
    Readiness,
    RollbackMode,
    RollingUpdate,
)

from ._options import (
    INT32_MAX,
    RolloutOptions,
    check_choice,
    check_percent,
    check_whole,
    renamed,
)

__all__ = ["ecs_circuit_breaker_threshold", "ecs_rolling_update", "kubernetes_deployment"]


_K8S_PERCENT = re.compile(r"[0-9]+%")  # Kubernetes' IsValidPercent: ^[0-9]+%$, ASCII digits


def _int_or_percent(field: str, value: object, *, tool_name: str) -> None:
    """A Kubernetes IntOrString of a count: an int32, or whole digits followed by ``%``."""
    if isinstance(value, str):
        if _K8S_PERCENT.fullmatch(value) is None:
            raise ConfigError(
                field,
                f"{tool_name} must be a whole percentage, digits then %, as Kubernetes'"
                f" ^[0-9]+%$, got {value!r}",
                'pass a percentage such as "25%" or a count such as 1',
            )
    elif isinstance(value, int) and not isinstance(value, bool) and value > INT32_MAX:
        raise ConfigError(
            field,
            f"{tool_name} must fit Kubernetes' int32, got {value!r}",
            "pass a count such as 1",
        )


def kubernetes_deployment(
    *,
    max_surge: int | str = "25%",
    max_unavailable: int | str = "25%",
    min_ready_seconds: int = 0,
    progress_deadline_seconds: int = 600,
    check: Any = None,
) -> RolloutOptions:
    """A Kubernetes Deployment's ``RollingUpdate`` strategy, with its defaults.

    ``max_surge`` and ``max_unavailable`` keep Kubernetes' rounding (a
    percentage of the surge rounds up, of the unavailable down, and one
    instance may be unavailable when both resolve to 0): :class:`~rolling.RollingUpdate`
    rounds the same way, so percentages pass through unchanged and no fleet
    size is needed. ``min_ready_seconds`` becomes :attr:`Readiness.min_ready
    <rolling.Readiness.min_ready>`; ``progress_deadline_seconds`` becomes a
    :class:`~rolling.ProgressDeadline` that only reports, as Kubernetes' does,
    and also bounds each instance's readiness wait (Kubernetes has no other
    bound). As Kubernetes does not roll back on its own, the rollback policy
    is ``halt``.

    Args:
        max_surge: ``maxSurge``: a count or a percentage string, whole digits
            then ``%`` (Kubernetes' ``^[0-9]+%$``: ``"2.5%"`` and ``" 25 %"``
            are refused, as Kubernetes refuses them).
        max_unavailable: ``maxUnavailable``: the same, at most ``"100%"``.
        min_ready_seconds: ``minReadySeconds``, an int32.
        progress_deadline_seconds: ``progressDeadlineSeconds``, an int32 above
            ``min_ready_seconds``, as Kubernetes requires.
        check: The readiness check (the pod's readiness probe), if any.

    Returns:
        ``strategy``, ``readiness``, ``progress_deadline`` and ``rollback``.

    Raises:
        ConfigError: A value Kubernetes would refuse, named as the setting.

    .. versionadded:: 0.4.0
    """
    _int_or_percent("kubernetes_deployment.max_surge", max_surge, tool_name="maxSurge")
    _int_or_percent(
        "kubernetes_deployment.max_unavailable", max_unavailable, tool_name="maxUnavailable"
    )
    with renamed("kubernetes_deployment.max_surge"):
        RollingUpdate(max_unavailable=1, max_surge=max_surge)
    with renamed("kubernetes_deployment.max_unavailable"):
        strategy = RollingUpdate(max_unavailable=max_unavailable, max_surge=max_surge)
    min_ready = check_whole(
        "kubernetes_deployment.min_ready_seconds",
        min_ready_seconds,
        minimum=0,
        maximum=INT32_MAX,
        tool_name="minReadySeconds",
    )
    deadline = check_whole(
        "kubernetes_deployment.progress_deadline_seconds",
        progress_deadline_seconds,
        minimum=1,
        maximum=INT32_MAX,
        tool_name="progressDeadlineSeconds",
    )
    if deadline <= min_ready:
        raise ConfigError(
            "kubernetes_deployment.progress_deadline_seconds",
            f"progressDeadlineSeconds ({deadline}) must be greater than"
            f" minReadySeconds ({min_ready}), as Kubernetes requires",
            "raise progress_deadline_seconds or lower min_ready_seconds",
        )
    with renamed("kubernetes_deployment.check"):
        readiness = Readiness(check=check, min_ready=float(min_ready), deadline=float(deadline))
    return {
        "strategy": strategy,
        "readiness": readiness,
        "progress_deadline": ProgressDeadline(float(deadline), DeadlineAction.REPORT),
        "rollback": RollbackMode.HALT,
    }


ThresholdType = Literal["BOUNDED_PERCENT", "UNBOUNDED_PERCENT", "COUNT"]
"""How ECS turns the circuit breaker's ``thresholdConfiguration.value`` into a count."""

_THRESHOLD_TYPES = ("BOUNDED_PERCENT", "UNBOUNDED_PERCENT", "COUNT")
_BOUNDS = (3, 200)


def ecs_circuit_breaker_threshold(
    desired: int, *, threshold_type: ThresholdType = "BOUNDED_PERCENT", threshold_value: int = 50
) -> int:
    """The failed tasks at which ECS' deployment circuit breaker trips, for ``desired`` tasks.

    By default (``BOUNDED_PERCENT`` of 50) it is half the desired count,
    rounded up, and at least 3 and at most 200:
    ``min(200, max(3, ceil(0.5 * desired)))``. ``UNBOUNDED_PERCENT`` drops the
    bounds (rolling still rounds up, and counts at least 1); ``COUNT`` is the value
    itself.

    Raises:
        ConfigError: A negative ``desired``, an unknown type or a value below 1.

    .. versionadded:: 0.4.0
    """
    check_whole("ecs_rolling_update.desired", desired, minimum=0, tool_name="desiredCount")
    kind = check_choice(
        "ecs_rolling_update.threshold_type",
        threshold_type,
        _THRESHOLD_TYPES,
        tool_name="thresholdConfiguration.type",
    )
    value = check_whole(
        "ecs_rolling_update.threshold_value",
        threshold_value,
        minimum=1,
        tool_name="thresholdConfiguration.value",
    )
    if kind == "COUNT":
        return value
    exact = math.ceil(Fraction(value, 100) * desired)
    if kind == "UNBOUNDED_PERCENT":
        return max(1, exact)
    low, high = _BOUNDS
    return min(high, max(low, exact))


def _ecs_window(minimum: Fraction, maximum: Fraction, desired: int | None) -> RollingUpdate:
    """The rolling window for ECS' floor (rounded up) and ceiling (rounded down)."""
    unavailable = f"{100 - minimum}%"
    surge_percent = maximum - 100
    if desired is not None:
        surge: int | str = math.floor(maximum * desired / 100) - desired
    elif surge_percent == 0 and minimum > 0:
        raise ConfigError(
            "ecs_rolling_update.desired",
            f"with maximumPercent 100 and minimumHealthyPercent {minimum},"
            " whether any task may stop depends on the fleet size",
            "pass desired=<the service's desiredCount>",
        )
    elif surge_percent % 100 == 0:
        surge = f"{surge_percent}%"  # a whole multiple of the fleet: no rounding at all
    else:
        raise ConfigError(
            "ecs_rolling_update.desired",
            f"maximumPercent {maximum} rounds down to a task count, and rolling's"
            " max_surge percentages round up, so the surge must be counted for one fleet size",
            "pass desired=<the service's desiredCount>",
        )
    if desired is not None and surge == 0 and math.ceil(minimum * desired / 100) == desired > 0:
        raise ConfigError(
            "ecs_rolling_update.maximum_percent",
            f"with {desired} tasks, minimumHealthyPercent {minimum} and"
            f" maximumPercent {maximum} leave no task free to stop or start,"
            " so the deployment could never progress",
            "raise maximum_percent or lower minimum_healthy_percent",
        )
    with renamed("ecs_rolling_update.minimum_healthy_percent"):
        return RollingUpdate(max_unavailable=unavailable, max_surge=surge)


def ecs_rolling_update(
    *,
    minimum_healthy_percent: int = 100,
    maximum_percent: int = 200,
    desired: int | None = None,
    deployment_circuit_breaker: bool = False,
    rollback: bool = False,
    reset_on_healthy_task: bool = True,
    threshold_type: ThresholdType = "BOUNDED_PERCENT",
    threshold_value: int = 50,
) -> RolloutOptions:
    """An ECS service's rolling update (``ECS`` deployment controller), with its defaults.

    ECS rounds ``minimumHealthyPercent`` of the desired count *up* to a floor
    and ``maximumPercent`` *down* to a ceiling. The floor needs no fleet
    size: ``desired - ceil(desired * m / 100)`` is ``floor(desired * (100 - m) / 100)``,
    which is Kubernetes' rounding of a ``max_unavailable`` of ``100 - m`` %. The
    ceiling rounds the other way from Kubernetes' ``max_surge``, so unless
    ``maximum_percent - 100`` is a multiple of 100 (the default 200 % is)
    the recipe needs ``desired`` and gives the surge as a count. So does the
    circuit breaker with a percentage threshold.

    Without the circuit breaker ECS keeps launching tasks; rolling tolerates
    any number of failed instances (``max_failed="100%"``), each put back on
    its old version and reported. With it, the consecutive model
    (``reset_on_healthy_task``, the default) is
    :attr:`FailurePolicy.circuit_breaker <rolling.FailurePolicy.circuit_breaker>`,
    the cumulative one ``max_failed`` (one less than the threshold).
    ``rollback`` chooses ``revert`` over ``halt`` when the breaker trips.

    Args:
        minimum_healthy_percent: ``minimumHealthyPercent``, 0 to 100.
        maximum_percent: ``maximumPercent``, 100 or more (rolling never
            shrinks a fleet during a rollout).
        desired: The service's ``desiredCount``, when the arithmetic needs it.
        deployment_circuit_breaker: ``deploymentCircuitBreaker.enable``.
        rollback: ``deploymentCircuitBreaker.rollback``.
        reset_on_healthy_task: ``resetOnHealthyTask``: a healthy task resets
            the failure count.
        threshold_type: ``thresholdConfiguration.type``, checked even with
            the breaker off, as ECS checks it.
        threshold_value: ``thresholdConfiguration.value``, likewise.

    Returns:
        ``strategy``, ``failure`` and ``rollback``.

    Raises:
        ConfigError: A value ECS would refuse, one rolling cannot express, or
            a missing ``desired``.

    .. versionadded:: 0.4.0
    """
    minimum = check_percent(
        "ecs_rolling_update.minimum_healthy_percent",
        minimum_healthy_percent,
        tool_name="minimumHealthyPercent",
    )
    maximum = check_percent(
        "ecs_rolling_update.maximum_percent",
        maximum_percent,
        tool_name="maximumPercent",
        maximum=None,
    )
    if maximum < 100:  # noqa: PLR2004 - a percentage
        raise ConfigError(
            "ecs_rolling_update.maximum_percent",
            f"maximumPercent {maximum_percent} is below 100, which would shrink the service"
            " during the deployment; rolling never runs fewer instances than desired on purpose",
            "pass 100 or more (lower minimum_healthy_percent to let tasks go first)",
        )
    for flag, value in (
        ("deployment_circuit_breaker", deployment_circuit_breaker),
        ("rollback", rollback),
        ("reset_on_healthy_task", reset_on_healthy_task),
    ):
        if not isinstance(value, bool):
            raise ConfigError(
                f"ecs_rolling_update.{flag}",
                f"expected a bool, got {value!r}",
                "pass True or False",
            )
    if desired is not None:  # a service with no tasks has nothing to deploy
        check_whole("ecs_rolling_update.desired", desired, minimum=1, tool_name="desiredCount")
    strategy = _ecs_window(minimum, maximum, desired)
    # ECS checks thresholdConfiguration whether or not the breaker is enabled.
    check_choice(
        "ecs_rolling_update.threshold_type",
        threshold_type,
        _THRESHOLD_TYPES,
        tool_name="thresholdConfiguration.type",
    )
    check_whole(
        "ecs_rolling_update.threshold_value",
        threshold_value,
        minimum=1,
        tool_name="thresholdConfiguration.value",
    )
    failure = FailurePolicy(max_failed="100%")
    if deployment_circuit_breaker:
        if threshold_type != "COUNT" and desired is None:
            raise ConfigError(
                "ecs_rolling_update.desired",
                "the circuit breaker's threshold is a share of the desired count",
                "pass desired=<the service's desiredCount>, or threshold_type='COUNT'",
            )
        threshold = ecs_circuit_breaker_threshold(
            desired or 0, threshold_type=threshold_type, threshold_value=threshold_value
        )
        failure = (
            FailurePolicy(max_failed="100%", circuit_breaker=threshold)
            if reset_on_healthy_task
            else FailurePolicy(max_failed=threshold - 1)
        )
    return {
        "strategy": strategy,
        "failure": failure,
        "rollback": RollbackMode.REVERT if rollback else RollbackMode.HALT,
    }

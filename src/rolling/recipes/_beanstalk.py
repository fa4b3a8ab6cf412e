"""AWS Elastic Beanstalk's deployment policies."""

from __future__ import annotations

from typing import Literal

from rolling import (
    Advance,
    Batches,
    Canary,
    ConfigError,
    Pause,
    RollingUpdate,
    SetCanaryScale,
    SetWeight,
)

from ._options import RolloutOptions, check_choice, check_percent, check_whole

__all__ = ["elastic_beanstalk"]

DeploymentPolicy = Literal[
    "AllAtOnce", "Rolling", "RollingWithAdditionalBatch", "Immutable", "TrafficSplitting"
]
"""Elastic Beanstalk's ``DeploymentPolicy`` values."""

_POLICIES = ("AllAtOnce", "Rolling", "RollingWithAdditionalBatch", "Immutable", "TrafficSplitting")


def _batch(batch_size_type: object, batch_size: object) -> int | str:
    kind = check_choice(
        "elastic_beanstalk.batch_size_type",
        batch_size_type,
        ("Percentage", "Fixed"),
        tool_name="BatchSizeType",
    )
    if kind == "Fixed":
        return check_whole(
            "elastic_beanstalk.batch_size", batch_size, minimum=1, tool_name="BatchSize"
        )
    percent = check_percent("elastic_beanstalk.batch_size", batch_size, tool_name="BatchSize")
    if percent == 0:
        raise ConfigError(
            "elastic_beanstalk.batch_size",
            "a Percentage BatchSize of 0 would deploy to no instance",
            "pass 1 to 100",
        )
    return f"{percent}%"


def elastic_beanstalk(
    deployment_policy: DeploymentPolicy = "AllAtOnce",
    *,
    batch_size_type: Literal["Percentage", "Fixed"] = "Percentage",
    batch_size: int = 100,
    new_version_percent: int = 10,
    evaluation_time: int = 5,
) -> RolloutOptions:
    """An Elastic Beanstalk environment's ``DeploymentPolicy`` and its batch settings.

    * ``AllAtOnce``: one in-place batch of the whole fleet (with its downtime).
    * ``Rolling``: in-place :class:`~rolling.Batches` of ``batch_size``.
    * ``RollingWithAdditionalBatch``: the same batches with ``surge=True``,
      so capacity never drops (Beanstalk launches one extra batch first and
      terminates it at the end; rolling launches each batch's replacements
      first and terminates the old instances instead).
    * ``Immutable``: a whole new set beside the old one, one instance first:
      ``RollingUpdate(max_unavailable=0, max_surge="100%")`` with
      ``Advance(1)``; each old instance goes once its replacement is ready.
    * ``TrafficSplitting``: a :class:`~rolling.Canary` with the whole new set
      (``SetCanaryScale(replicas="100%")``), ``new_version_percent`` of the
      traffic for ``evaluation_time`` minutes, then all of it. A
      ``new_version_percent`` of 100 (which Beanstalk allows) is
      ``SetWeight(100)``: every request goes to the new set during the
      evaluation, and the old set is kept until it ends.

    A ``Percentage`` batch size rounds down, at least one instance, as
    Ansible's ``serial`` does; Beanstalk does not document its rounding.

    Args:
        deployment_policy: ``DeploymentPolicy``.
        batch_size_type: ``BatchSizeType``: ``"Percentage"`` or ``"Fixed"``.
        batch_size: ``BatchSize``: a percentage (1 to 100) or a count.
        new_version_percent: ``NewVersionPercent`` (TrafficSplitting), a
            whole percentage from 1 to 100, as Beanstalk's option range.
        evaluation_time: ``EvaluationTime`` (TrafficSplitting), whole
            minutes from 3 to 600, as Beanstalk's option range.

    Returns:
        ``strategy``, and ``steps`` for Immutable and TrafficSplitting.

    Raises:
        ConfigError: A value Beanstalk would refuse, named as the setting;
            the traffic-splitting options are checked whatever the policy, as
            Beanstalk checks an option's value when it is set.

    .. versionadded:: 0.4.0
    """
    policy = check_choice(
        "elastic_beanstalk.deployment_policy",
        deployment_policy,
        _POLICIES,
        tool_name="DeploymentPolicy",
    )
    size = _batch(batch_size_type, batch_size)
    # The aws:elasticbeanstalk:trafficsplitting options' ranges, checked whatever the policy
    # (Beanstalk checks an option's value when it is set).
    percent = check_percent(
        "elastic_beanstalk.new_version_percent", new_version_percent, tool_name="NewVersionPercent"
    )
    if percent == 0:
        raise ConfigError(
            "elastic_beanstalk.new_version_percent",
            "NewVersionPercent must be from 1 to 100, got 0",
            "pass a share such as 10",
        )
    minutes = check_whole(
        "elastic_beanstalk.evaluation_time",
        evaluation_time,
        minimum=3,
        maximum=600,
        tool_name="EvaluationTime (minutes)",
    )
    if policy == "AllAtOnce":
        return {"strategy": Batches("100%")}
    if policy == "Rolling":
        return {"strategy": Batches(size)}
    if policy == "RollingWithAdditionalBatch":
        return {"strategy": Batches(size, surge=True)}
    if policy == "Immutable":
        return {
            "strategy": RollingUpdate(max_unavailable=0, max_surge="100%"),
            "steps": (Advance(1),),
        }
    return {
        "strategy": Canary(promotion=None, scale_down_delay=0.0),
        "steps": (
            SetCanaryScale(replicas="100%"),
            SetWeight(float(percent)),
            Pause(float(minutes * 60)),
        ),
    }

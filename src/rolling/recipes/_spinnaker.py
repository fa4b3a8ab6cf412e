"""Spinnaker's server group strategies: red/black, rolling red/black and highlander."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from rolling import (
    Analyze,
    BlueGreen,
    Canary,
    ConfigError,
    Gate,
    Pause,
    SetCanaryScale,
    SetWeight,
    Step,
)

from ._options import RolloutOptions, check_number, check_whole

__all__ = ["spinnaker_highlander", "spinnaker_red_black", "spinnaker_rolling_red_black"]


def _old_set_delay(
    recipe: str, max_remaining_asgs: object, scale_down: object, delay_before_scale_down_sec: object
) -> float:
    """Seconds the old set is kept after the switch (rolling's ``scale_down_delay``)."""
    remaining = check_whole(
        f"{recipe}.max_remaining_asgs",
        max_remaining_asgs,
        minimum=1,
        tool_name="maxRemainingAsgs",
    )
    if remaining > 2:  # noqa: PLR2004 - the new server group and one old one
        raise ConfigError(
            f"{recipe}.max_remaining_asgs",
            f"maxRemainingAsgs {remaining} keeps server groups of earlier deploys;"
            " a rollout knows only the set it replaces, and keeps no older ones",
            "pass 2 (keep the replaced set for a while) or 1 (terminate it at once)",
        )
    if not isinstance(scale_down, bool):
        raise ConfigError(
            f"{recipe}.scale_down", f"expected a bool, got {scale_down!r}", "pass True or False"
        )
    delay = check_number(
        f"{recipe}.delay_before_scale_down_sec",
        delay_before_scale_down_sec,
        tool_name="delayBeforeScaleDownSec",
    )
    if remaining == 1 and delay > 0:
        raise ConfigError(
            f"{recipe}.delay_before_scale_down_sec",
            "maxRemainingAsgs 1 destroys the replaced server group at once",
            "pass max_remaining_asgs=2 to keep it for the delay",
        )
    return delay


def _validation(recipe: str, value: object) -> Step | None:
    if value is None or isinstance(value, Gate | Analyze | Pause):
        return value
    raise ConfigError(
        f"{recipe}.validation",
        f"expected a Gate, an Analyze or a Pause, got {value!r}",
        "pass rolling.Gate(check), rolling.Analyze(analysis),"
        " or rolling.Pause() for a manual judgment",
    )


def spinnaker_red_black(
    *,
    max_remaining_asgs: int = 2,
    delay_before_disable_sec: float = 0,
    scale_down: bool = False,
    delay_before_scale_down_sec: float = 0,
) -> RolloutOptions:
    """Spinnaker's red/black (blue/green) deploy of a whole new server group.

    With no ``delay_before_disable_sec`` it is a :class:`~rolling.BlueGreen`
    that switches as soon as the new set is ready. With one, both sets serve
    for that long before the old one is disabled: since a load balancer
    splits requests by instance and both sets have the full size, that is a
    :class:`~rolling.Canary` with the whole new set at 50 % of the traffic
    for that long (it needs a :class:`~rolling.typing.WeightedRouter`).

    Spinnaker keeps the replaced server group (disabled, or scaled down with
    ``scale_down``) until a later deploy pushes it past ``max_remaining_asgs``;
    a rollout cannot keep it past its own end, so the old set is kept
    ``delay_before_scale_down_sec`` seconds (a rollback in that time switches
    back) and then terminated. ``max_remaining_asgs`` above 2 has no
    equivalent.

    Args:
        max_remaining_asgs: ``maxRemainingAsgs``: 1 or 2.
        delay_before_disable_sec: ``delayBeforeDisableSec``.
        scale_down: ``scaleDown``; the old set is terminated after the delay
            either way.
        delay_before_scale_down_sec: ``delayBeforeScaleDownSec``.

    Returns:
        ``strategy``, and ``steps`` when both sets serve for a while.

    Raises:
        ConfigError: A value with no equivalent, or a bad one.

    .. versionadded:: 0.4.0
    """
    keep = _old_set_delay(
        "spinnaker_red_black", max_remaining_asgs, scale_down, delay_before_scale_down_sec
    )
    both = check_number(
        "spinnaker_red_black.delay_before_disable_sec",
        delay_before_disable_sec,
        tool_name="delayBeforeDisableSec",
    )
    if both == 0:
        return {"strategy": BlueGreen(auto_promote=True, scale_down_delay=keep)}
    return {
        "strategy": Canary(promotion=None, scale_down_delay=keep),
        "steps": (SetCanaryScale(replicas="100%"), SetWeight(50), Pause(both)),
    }


def spinnaker_rolling_red_black(
    target_percentages: Sequence[int] = (100,),
    *,
    validation: Gate | Analyze | Pause | None = None,
    max_remaining_asgs: int = 2,
    scale_down: bool = False,
    delay_before_scale_down_sec: float = 0,
) -> RolloutOptions:
    """Spinnaker's rolling red/black: the new server group grows through ``target_percentages``.

    At each target *p* the new set has *p* % of the capacity in traffic and
    the old set the rest; a load balancer that splits by instance sends
    *p* % of requests to the new set. That is a :class:`~rolling.Canary`
    step pair per target, ``SetCanaryScale(replicas="p%")`` and
    ``SetWeight(p)``, each followed by ``validation`` (the pipeline Spinnaker
    runs between steps: a :class:`~rolling.Gate`, an :class:`~rolling.Analyze`,
    or a :class:`~rolling.Pause` for a manual judgment). The old set is kept
    as in :func:`spinnaker_red_black`. As Spinnaker does, a list that does not
    end with 100 (or is empty) gets a last target of 100.

    Args:
        target_percentages: ``targetPercentages``, rising, up to 100.
        validation: Run after each target.
        max_remaining_asgs: ``maxRemainingAsgs``: 1 or 2.
        scale_down: ``scaleDown``.
        delay_before_scale_down_sec: ``delayBeforeScaleDownSec``.

    Returns:
        ``strategy`` and ``steps``.

    Raises:
        ConfigError: Targets that do not rise, a target above 100, or a bad
            value.

    .. versionadded:: 0.4.0
    """
    keep = _old_set_delay(
        "spinnaker_rolling_red_black",
        max_remaining_asgs,
        scale_down,
        delay_before_scale_down_sec,
    )
    check = _validation("spinnaker_rolling_red_black", validation)
    raw: object = target_percentages
    if not isinstance(raw, Sequence) or isinstance(raw, str):
        raise ConfigError(
            "spinnaker_rolling_red_black.target_percentages",
            f"expected a list of percentages, got {target_percentages!r}",
            "pass rising percentages such as [25, 50, 100]",
        )
    items = cast("Sequence[object]", raw)
    targets: list[int] = []
    previous = 0
    for index, item in enumerate(items):
        field = f"spinnaker_rolling_red_black.target_percentages[{index}]"
        target = check_whole(field, item, minimum=1, tool_name="a target percentage")
        if not previous < target <= 100:  # noqa: PLR2004 - a percentage
            raise ConfigError(
                field,
                f"targets must rise, up to 100; got {target} after {previous}",
                "pass rising percentages such as [25, 50, 100]",
            )
        targets.append(target)
        previous = target
    if previous != 100:  # noqa: PLR2004 - a percentage
        targets.append(100)  # Spinnaker (orca) adds 100 to a list that does not end with it
    steps: list[Step] = []
    for target in targets:
        steps += [SetCanaryScale(replicas=f"{target}%"), SetWeight(target)]
        if check is not None:
            steps.append(check)
    return {"strategy": Canary(promotion=None, scale_down_delay=keep), "steps": tuple(steps)}


def spinnaker_highlander() -> RolloutOptions:
    """Spinnaker's highlander: a whole new server group, then every old one destroyed.

    A :class:`~rolling.BlueGreen` that switches as soon as the new set is
    ready and terminates the old one at once (``scale_down_delay=0``).

    Returns:
        ``strategy``.

    .. versionadded:: 0.4.0
    """
    return {"strategy": BlueGreen(auto_promote=True, scale_down_delay=0.0)}

"""Argo Rollouts: canary steps and the blue-green strategy."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, cast

from rolling import (
    Analysis,
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

from ._options import RolloutOptions, check_number, check_whole, renamed

__all__ = ["argo_blue_green", "argo_canary", "argo_duration"]

_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")
_UNITS = (3600.0, 60.0, 1.0)
_NO_EQUIVALENT = {
    "experiment": "an Experiment runs extra ReplicaSets beside the rollout",
    "setHeaderRoute": "routing by header needs a router that matches requests",
    "setMirrorRoute": "mirroring traffic needs a router that copies requests",
    "plugin": "step plugins run Argo controller code",
}


def argo_duration(value: object, field: str = "argo_canary.steps") -> float:
    """Seconds in an Argo duration: a number of seconds, or a string such as ``"1h"``, ``"90s"``.

    Raises:
        ConfigError: Anything else.

    .. versionadded:: 0.4.0
    """
    if isinstance(value, str) and value.strip().isdigit():
        return float(value)
    match = _DURATION.match(value.strip()) if isinstance(value, str) else None
    if match is not None and any(match.groups()):
        return sum(
            float(part) * unit for part, unit in zip(match.groups(), _UNITS, strict=True) if part
        )
    if isinstance(value, int | float) and not isinstance(value, bool):
        return check_number(field, value, tool_name="pause.duration")
    raise ConfigError(
        field,
        f"{value!r} is not an Argo duration",
        'pass seconds (30) or a string with units: "30s", "5m", "1h"',
    )


def _analysis_step(field: str, value: object) -> Step:
    if isinstance(value, Analyze | Gate):
        return value
    if isinstance(value, Analysis):
        return Analyze(value)
    raise ConfigError(
        field,
        f"an Argo analysis step names AnalysisTemplates, which rolling cannot read; got {value!r}",
        "write the metrics as a rolling.Analysis and pass {'analysis': rolling.Analysis(...)}",
    )


def _scale_step(field: str, body: Mapping[str, Any]) -> Step:
    keys = set(body)
    if keys == {"replicas"}:
        with renamed(field):
            return SetCanaryScale(replicas=body["replicas"])
    if keys == {"weight"}:
        weight = body["weight"]
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:  # noqa: PLR2004 - a percentage
            raise ConfigError(
                field, f"setCanaryScale.weight must be 0 to 100, got {weight!r}", "pass 25"
            )
        return SetCanaryScale(replicas=f"{weight}%")
    if keys == {"matchTrafficWeight"} and body["matchTrafficWeight"] is True:
        return SetCanaryScale(match_traffic_weight=True)
    raise ConfigError(
        field,
        "setCanaryScale takes exactly one of replicas, weight, matchTrafficWeight: true;"
        f" got {dict(body)!r}",
        "pass {'setCanaryScale': {'replicas': 3}} or {'setCanaryScale': {'weight': 25}}",
    )


def _step(field: str, raw: object) -> Step:
    if not isinstance(raw, Mapping) or len(cast("Mapping[str, Any]", raw)) != 1:
        raise ConfigError(
            field,
            f"an Argo step is a mapping with one key, got {raw!r}",
            "pass {'setWeight': 20}, {'pause': {}} ...",
        )
    ((kind, body),) = cast("Mapping[str, Any]", raw).items()
    if kind == "setWeight":
        with renamed(field):
            return SetWeight(body)
    if kind == "pause":
        if not isinstance(body, Mapping) or set(cast("Mapping[str, Any]", body)) - {"duration"}:
            raise ConfigError(
                field,
                f"pause takes {{}} or {{'duration': ...}}, got {body!r}",
                "pass {'pause': {}}",
            )
        duration = cast("Mapping[str, Any]", body).get("duration")
        return Pause(None if duration is None else argo_duration(duration, field))
    if kind == "setCanaryScale" and isinstance(body, Mapping):
        return _scale_step(field, cast("Mapping[str, Any]", body))
    if kind == "analysis":
        return _analysis_step(field, body)
    if kind in _NO_EQUIVALENT:
        raise ConfigError(
            field,
            f"the {kind} step has no rolling equivalent: {_NO_EQUIVALENT[kind]}",
            "drop the step, or do its work in a Gate",
        )
    raise ConfigError(
        field,
        f"unknown Argo canary step {kind!r}",
        "use setWeight, pause, setCanaryScale or analysis",
    )


def argo_canary(
    steps: Sequence[Mapping[str, Any]],
    *,
    scale_down_delay_seconds: float = 30,
    analysis: Analysis | None = None,
) -> RolloutOptions:
    """An Argo Rollouts canary with traffic routing, its steps written as in the Rollout spec.

    Steps are mappings with one key, as Argo's YAML reads in Python:
    ``{"setWeight": 20}``; ``{"pause": {}}`` (until promoted) or
    ``{"pause": {"duration": "1h"}}`` (seconds, or a string with ``s``,
    ``m``, ``h``); ``{"setCanaryScale": {"replicas": 3}}``, ``{"weight": 25}``
    or ``{"matchTrafficWeight": True}``; and ``{"analysis": ...}`` with a
    rolling :class:`~rolling.Analysis` (or an :class:`~rolling.Analyze` or
    :class:`~rolling.Gate`) in place of Argo's template references. After the
    last step the rollout is promoted all at once, and the old set is kept
    ``scale_down_delay_seconds`` (Argo's default with traffic routing, 30 s).

    Args:
        steps: ``strategy.canary.steps``.
        scale_down_delay_seconds: ``scaleDownDelaySeconds``.
        analysis: ``strategy.canary.analysis`` (background analysis), as a
            rolling :class:`~rolling.Analysis`.

    Returns:
        ``strategy``, ``steps`` and, with ``analysis``, ``analysis``.

    Raises:
        ConfigError: A step rolling cannot express, or a bad value, named as
            ``argo_canary.steps[i]``.

    .. versionadded:: 0.4.0
    """
    if isinstance(steps, Mapping | str) or not isinstance(steps, Sequence):  # pyright: ignore[reportUnnecessaryIsInstance] - callers may pass anything
        raise ConfigError(
            "argo_canary.steps",
            f"expected a list of steps, got {steps!r}",
            "pass [{'setWeight': 20}, {'pause': {}}]",
        )
    converted = tuple(_step(f"argo_canary.steps[{i}]", raw) for i, raw in enumerate(steps))
    delay = check_number(
        "argo_canary.scale_down_delay_seconds",
        scale_down_delay_seconds,
        tool_name="scaleDownDelaySeconds",
    )
    options: RolloutOptions = {
        "strategy": Canary(promotion=None, scale_down_delay=delay),
        "steps": converted,
    }
    if analysis is not None:
        if not isinstance(analysis, Analysis):  # pyright: ignore[reportUnnecessaryIsInstance] - callers may pass anything
            raise ConfigError(
                "argo_canary.analysis",
                f"expected a rolling.Analysis, got {analysis!r}",
                "write the metrics as rolling.Analysis(...)",
            )
        options["analysis"] = analysis
    return options


def argo_blue_green(
    *,
    auto_promotion_enabled: bool = True,
    auto_promotion_seconds: int | None = None,
    scale_down_delay_seconds: float = 30,
    preview_replica_count: int | None = None,
    pre_promotion_analysis: Analysis | None = None,
    post_promotion_analysis: Analysis | None = None,
) -> RolloutOptions:
    """An Argo Rollouts blue-green strategy.

    ``auto_promotion_enabled=False`` waits for a promote; ``auto_promotion_seconds``
    (with ``auto_promotion_enabled`` left true, as Argo needs it) promotes
    after that many seconds unless promoted sooner. The analyses are rolling
    :class:`~rolling.Analysis` objects in place of Argo's template references.

    Args:
        auto_promotion_enabled: ``autoPromotionEnabled``.
        auto_promotion_seconds: ``autoPromotionSeconds``.
        scale_down_delay_seconds: ``scaleDownDelaySeconds``.
        preview_replica_count: ``previewReplicaCount``.
        pre_promotion_analysis: ``prePromotionAnalysis``.
        post_promotion_analysis: ``postPromotionAnalysis``.

    Returns:
        ``strategy``.

    Raises:
        ConfigError: A bad value, or ``auto_promotion_seconds`` with
            ``auto_promotion_enabled=False`` (Argo then never promotes on its
            own: argoproj/argo-rollouts#2000).

    .. versionadded:: 0.4.0
    """
    if not isinstance(auto_promotion_enabled, bool):
        raise ConfigError(
            "argo_blue_green.auto_promotion_enabled",
            f"expected a bool, got {auto_promotion_enabled!r}",
            "pass True or False",
        )
    after: float | None = None
    if auto_promotion_seconds is not None:
        after = float(
            check_whole(
                "argo_blue_green.auto_promotion_seconds",
                auto_promotion_seconds,
                minimum=1,
                tool_name="autoPromotionSeconds",
            )
        )
        if not auto_promotion_enabled:
            raise ConfigError(
                "argo_blue_green.auto_promotion_seconds",
                "with autoPromotionEnabled false Argo never promotes on its own,"
                " whatever autoPromotionSeconds says",
                "leave auto_promotion_enabled True to promote after the delay,"
                " or drop auto_promotion_seconds to wait for a promote",
            )
    if preview_replica_count is not None:
        check_whole(
            "argo_blue_green.preview_replica_count",
            preview_replica_count,
            minimum=1,
            tool_name="previewReplicaCount",
        )
    delay = check_number(
        "argo_blue_green.scale_down_delay_seconds",
        scale_down_delay_seconds,
        tool_name="scaleDownDelaySeconds",
    )
    with renamed("argo_blue_green.pre_promotion_analysis"):
        BlueGreen(pre_promotion=pre_promotion_analysis)
    with renamed("argo_blue_green.post_promotion_analysis"):
        BlueGreen(post_promotion=post_promotion_analysis)
    strategy = BlueGreen(
        preview_replicas=preview_replica_count,
        pre_promotion=pre_promotion_analysis,
        post_promotion=post_promotion_analysis,
        auto_promote=auto_promotion_enabled and after is None,
        auto_promote_after=after,
        scale_down_delay=delay,
    )
    return {"strategy": strategy}

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

from ._options import INT32_MAX, RolloutOptions, check_number, check_whole, renamed

__all__ = ["argo_blue_green", "argo_canary", "argo_duration"]

_GO_UNITS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # µ, MICRO SIGN
    "\u03bcs": 1_000,  # μ, GREEK SMALL LETTER MU
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_NS_LIMIT = 1 << 63
_SECOND = 1_000_000_000
_INT32_MIN = -(2**31)
_SECONDS_INT = re.compile(r"[+-]?[0-9]+")  # strconv.ParseInt(s, 10, 32): ASCII digits only


def _digits(text: str) -> int:
    """How many ASCII digits ``text`` starts with."""
    count = 0
    while count < len(text) and "0" <= text[count] <= "9":
        count += 1
    return count


def _go_term(rest: str) -> tuple[int, str] | None:
    """Go's ``time.ParseDuration`` on one number and unit at the start of ``rest``.

    Returns the nanoseconds and what follows, or None where Go errs: no digits
    (``".s"``), a missing or unknown unit, or more than int64 nanoseconds.
    """
    length = _digits(rest)
    whole = int(rest[:length]) if length else 0
    rest = rest[length:]
    fraction, scale, fraction_length = 0, 1.0, 0
    if rest[:1] == ".":
        rest = rest[1:]
        fraction_length = _digits(rest)
        for digit in rest[:fraction_length]:  # Go stops adding digits past int64
            if fraction > (_NS_LIMIT - 1) // 10 or fraction * 10 + int(digit) > _NS_LIMIT:
                break
            fraction = fraction * 10 + int(digit)
            scale *= 10
        rest = rest[fraction_length:]
    unit_length = 0
    while unit_length < len(rest) and rest[unit_length] != "." and not _digits(rest[unit_length]):
        unit_length += 1
    unit = _GO_UNITS.get(rest[:unit_length])
    if (length == 0 and fraction_length == 0) or unit is None or whole > _NS_LIMIT // unit:
        return None
    # A fraction is scaled in floats, as Go does ("nanosecond accurate for fractions of hours").
    nanoseconds = whole * unit + (int(float(fraction) * (float(unit) / scale)) if fraction else 0)
    return None if nanoseconds > _NS_LIMIT else (nanoseconds, rest[unit_length:])


def _go_duration(text: str) -> int | None:
    """Nanoseconds in ``text`` by Go's ``time.ParseDuration`` rules; None where Go errs.

    An optional sign, then one or more numbers (ASCII digits with an optional
    fraction: ``"1.5"``, ``".5"``, ``"5."``) each with a unit among ``ns``,
    ``us`` (or ``µs``), ``ms``, ``s``, ``m``, ``h``, in any order (``"30m1h"``);
    ``"0"`` alone needs no unit. A total past int64 nanoseconds is an error.
    """
    negative = text[:1] == "-"
    rest = text[1:] if text[:1] in {"-", "+"} else text
    if rest == "0":
        return 0
    if not rest:
        return None
    total = 0
    while rest:
        if rest[0] != "." and not _digits(rest[0]):
            return None
        term = _go_term(rest)
        if term is None or total + term[0] > _NS_LIMIT:
            return None
        total, rest = total + term[0], term[1]
    if negative:
        return -total
    return None if total > _NS_LIMIT - 1 else total


def _go_seconds(nanoseconds: int) -> float:
    """Go's ``Duration.Seconds()``: whole seconds plus the rest, in floats."""
    whole = abs(nanoseconds) // _SECOND * (1 if nanoseconds >= 0 else -1)  # Go truncates
    return float(whole) + float(nanoseconds - whole * _SECOND) / 1e9


_NO_EQUIVALENT = {
    "experiment": "an Experiment runs extra ReplicaSets beside the rollout",
    "setHeaderRoute": "routing by header needs a router that matches requests",
    "setMirrorRoute": "mirroring traffic needs a router that copies requests",
    "plugin": "step plugins run Argo controller code",
}


def _refuse_duration(field: str, value: object, problem: str) -> ConfigError:
    return ConfigError(
        field,
        f"{value!r} {problem}",
        'pass whole seconds (30) or a Go duration: "30s", "5m", "1h30m", "500ms"',
    )


def argo_duration(value: object, field: str = "argo_canary.steps") -> float:
    """Seconds in an Argo pause duration, as Argo's ``RolloutPause.DurationSeconds`` reads it.

    The duration is Kubernetes' IntOrString: an int is seconds (an int32, 0 or
    more); a string is whole seconds (``"10"``, ``strconv.ParseInt``) or a Go
    duration (``time.ParseDuration``: ``"90s"``, ``"1h30m"``, ``"30m1h"``,
    ``"500ms"``, ``".5h"``). Argo keeps whole seconds, ``int32(d.Seconds())``,
    truncated toward zero: ``"500ms"`` is 0 and ``"1m30.5s"`` is 90, as in Argo.

    Raises:
        ConfigError: What Argo refuses: a float, a bool, a string Go cannot
            parse (``"1h 30m"``, ``"²"``), a negative duration, or one past
            int32 seconds.

    .. versionadded:: 0.4.0
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= INT32_MAX:
            raise _refuse_duration(field, value, "is not an Argo duration: seconds 0 to 2**31-1")
        return float(value)
    if not isinstance(value, str):
        raise _refuse_duration(field, value, "is not an Argo duration: an int or a string")
    if _SECONDS_INT.fullmatch(value) and _INT32_MIN <= int(value) <= INT32_MAX:
        seconds = int(value)  # Argo: strconv.ParseInt(value, 10, 32) first
    else:
        nanoseconds = _go_duration(value)
        if nanoseconds is None:
            raise _refuse_duration(field, value, "is not a Go duration")
        exact = _go_seconds(nanoseconds)
        if not _INT32_MIN <= exact < INT32_MAX + 1:
            raise _refuse_duration(field, value, "is more seconds than Argo's int32 holds")
        seconds = int(exact)  # int32(d.Seconds()): truncated toward zero
    if seconds < 0:
        raise _refuse_duration(field, value, "is negative, which Argo refuses")
    return float(seconds)


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
        replicas = body["replicas"]
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas > INT32_MAX:
            raise ConfigError(
                field,
                f"setCanaryScale.replicas is a count (an int32), got {replicas!r}",
                "pass {'setCanaryScale': {'replicas': 3}}, or {'weight': 25} for a share",
            )
        with renamed(field):
            return SetCanaryScale(replicas=replicas)
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
        if isinstance(body, bool) or not isinstance(body, int) or not 0 <= body <= 100:  # noqa: PLR2004 - a percentage
            raise ConfigError(
                field,
                f"setWeight is a whole percentage (an int32) from 0 to 100, got {body!r}",
                "pass {'setWeight': 20}",
            )
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
    ``{"setWeight": 20}`` (an int from 0 to 100, as Argo's int32 field);
    ``{"pause": {}}`` (until promoted) or ``{"pause": {"duration": "1h"}}``
    (see :func:`argo_duration`: whole seconds, or a Go duration such as
    ``"1h30m"``, truncated to whole seconds as Argo does);
    ``{"setCanaryScale": {"replicas": 3}}`` (an int count),
    ``{"weight": 25}`` (an int from 0 to 100) or
    ``{"matchTrafficWeight": True}``; and ``{"analysis": ...}`` with a rolling
    :class:`~rolling.Analysis` (or an :class:`~rolling.Analyze` or
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
                maximum=INT32_MAX,
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
            maximum=INT32_MAX,
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

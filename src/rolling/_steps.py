"""Steps that gate progress: advance to a share of the fleet, pause, or check a gate."""

from __future__ import annotations

import enum
import math
from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from ._analysis import Analysis
from ._errors import ConfigError
from ._validate import CountOrPercent, check_count_or_percent, percent_of
from .validate import check_bool, check_callable, check_seconds, validator

__all__ = [
    "Advance",
    "Analyze",
    "Gate",
    "GateCheck",
    "InconclusiveAction",
    "Pause",
    "SetCanaryScale",
    "SetFlag",
    "SetWeight",
    "Step",
    "check_setter",
]

GateCheck = Callable[[], Awaitable["bool | tuple[bool, str]"]]
"""An async function with no arguments that says whether the rollout may go on."""


@attrs.frozen
class Pause:
    """Stop advancing for ``seconds``, or until :meth:`~rolling.RolloutHandle.promote` when None.

    Instances already in flight finish; no new one starts while paused.

    Attributes:
        seconds: How long to wait; None: until promoted.

    .. versionadded:: 0.1.0
    """

    seconds: float | None = attrs.field(
        default=None, validator=validator(check_seconds, allow_none=True)
    )


def _check_name(field: str, value: object) -> None:
    if not isinstance(value, str):
        raise ConfigError(
            field, f"expected a str, got {value!r}", 'pass a short label such as "error-rate"'
        )


@attrs.frozen
class Gate:
    """Ask ``check`` whether the rollout may go on; a false answer fails the rollout.

    A failed gate triggers the rollout's rollback policy, like an exceeded
    failure budget. ``check`` may return a ``bool`` or a ``(bool, reason)``
    tuple; an exception counts as a false answer, and so does taking longer
    than ``timeout`` seconds.

    Attributes:
        check: The async function with no arguments that answers.
        name: A short label, used in events and reasons.
        timeout: Longest ``check`` may take, in seconds; None: no limit.

    .. versionadded:: 0.1.0
    """

    check: GateCheck = attrs.field(validator=validator(check_callable))
    name: str = attrs.field(default="gate", validator=validator(_check_name))
    timeout: float | None = attrs.field(
        default=None, validator=validator(check_seconds, allow_none=True, allow_zero=False)
    )


@attrs.frozen
class Advance:
    """Update instances until ``to`` of the fleet (a count or percentage) is on the target.

    The steps after it run once that share is reached. With
    :class:`~rolling.Batches`, the share is checked at batch boundaries, so the
    batch that crosses it completes first.

    Attributes:
        to: Count, or percentage of the fleet (rounded up), to have on the target.

    .. versionadded:: 0.1.0
    """

    to: CountOrPercent = attrs.field(validator=validator(check_count_or_percent, allow_zero=False))

    def resolve(self, desired: int) -> int:
        """How many of a fleet of ``desired`` instances it wants on the target.

        A count is capped at ``desired``; a percentage is rounded up:
        ``Advance("25%").resolve(10)`` is 3.

        .. versionadded:: 0.4.0
        """
        to = self.to
        if isinstance(to, int):
            return min(to, desired)
        return math.ceil(percent_of(to) * desired / 100)


class InconclusiveAction(enum.StrEnum):
    """What an :class:`Analyze` step does when nobody decides an inconclusive verdict in time.

    .. versionadded:: 0.3.0
    """

    ROLLBACK = "rollback"
    """Trigger the rollback policy, as a failed verdict does."""
    CONTINUE = "continue"
    """Go on with the rollout, as a promote does."""


def _check_analysis(_instance: object, _attribute: object, value: Any) -> None:
    if not isinstance(value, Analysis):
        raise ConfigError(
            "Analyze.analysis",
            f"expected an Analysis, got {value!r}",
            "pass rolling.Analysis(metrics=[rolling.Metric(...)])",
        )


def _inconclusive_action(value: InconclusiveAction | str) -> InconclusiveAction:
    try:
        return InconclusiveAction(value)
    except ValueError:
        raise ConfigError(
            "Analyze.on_timeout", f"unknown action {value!r}", 'pass "rollback" or "continue"'
        ) from None


@attrs.frozen
class Analyze:
    """Measure ``analysis`` and wait for its verdict before the next step.

    A failed verdict triggers the rollout's rollback policy. An inconclusive
    one pauses the rollout for a person: :meth:`~rolling.RolloutHandle.promote`
    or :meth:`~rolling.RolloutHandle.resume` go on,
    :meth:`~rolling.RolloutHandle.abort` rolls back; after
    ``inconclusive_timeout`` seconds (if given) ``on_timeout`` decides.
    A promote while it measures skips the rest of the analysis.

    Attributes:
        analysis: What to measure.
        inconclusive_timeout: Seconds to wait for a person on an
            inconclusive verdict; None: as long as it takes.
        on_timeout: What happens when that time passes.

    .. versionadded:: 0.3.0
    """

    analysis: Analysis = attrs.field(validator=_check_analysis)
    inconclusive_timeout: float | None = attrs.field(
        default=None,
        kw_only=True,
        validator=validator(check_seconds, allow_none=True, allow_zero=False),
    )
    on_timeout: InconclusiveAction = attrs.field(
        default=InconclusiveAction.ROLLBACK, kw_only=True, converter=_inconclusive_action
    )

    @property
    def name(self) -> str:
        """The analysis's name."""
        return self.analysis.name


def check_setter(field: str, value: object, *, allow_none: bool = False) -> None:
    """A flag setter: an object with an async ``set(flag, value)``, or an async callable."""
    if value is None and allow_none:
        return
    if not callable(getattr(value, "set", None)) and not callable(value):
        raise ConfigError(
            field,
            f"expected a flag setter, got {value!r}",
            "pass rolling.flags.FlagdFile(path), an object with async set(flag, value),"
            " or an async function (flag, value)",
        )


def _check_flag_key(field: str, value: object) -> None:
    # Non-empty, as FlagRules.flag is: no flag system has a flag with an empty key.
    if not isinstance(value, str) or not value:
        raise ConfigError(field, f"expected a non-empty str, got {value!r}", 'pass "new-format"')


def _check_flag_value(field: str, value: object) -> None:
    if not isinstance(value, bool | int | float | str):
        raise ConfigError(
            field, f"expected a bool, int, float or str, got {value!r}", "pass True or False"
        )


@attrs.frozen
class SetFlag:
    """Set a feature flag when the pass reaches this step.

    A failed set (the setter raised, or took longer than ``effect_timeout``)
    fails the rollout like a failed :class:`Gate`: the rollback policy decides.

    Attributes:
        flag: The flag's key.
        value: What to set it to.
        setter: Who sets it; None: the setter of the rollout's
            :class:`~rolling.FlagRules`.

    .. versionadded:: 0.4.0
    """

    flag: str = attrs.field(validator=validator(_check_flag_key))
    value: bool | int | float | str = attrs.field(validator=validator(_check_flag_value))
    setter: Any = attrs.field(
        default=None, kw_only=True, validator=validator(check_setter, allow_none=True)
    )

    @property
    def name(self) -> str:
        """The flag's key."""
        return self.flag


def _check_percent(field: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100:  # noqa: PLR2004 - a percentage
        raise ConfigError(
            field, f"expected a number from 0 to 100, got {value!r}", "pass a percentage such as 5"
        )


@attrs.frozen
class SetWeight:
    """Send ``percent`` % of new requests to the canary instances (:class:`~rolling.Canary`).

    The canary set grows first when it has to (see :class:`SetCanaryScale`):
    new instances are launched and ready, and join the router at weight 0,
    before any weight moves to them. Then every instance's weight is set so the
    canary set gets the share asked for and the stable set the rest, as
    closely as whole weights allow (:class:`~rolling.TrafficShifted` says the
    share achieved). A canary set smaller than the availability floor never
    takes every request: at 100 % the stable set keeps the least weight.

    Attributes:
        percent: The canary set's share of new requests, 0 to 100.

    .. versionadded:: 0.4.0
    """

    percent: float = attrs.field(validator=validator(_check_percent))


def _check_replicas(field: str, value: object) -> None:
    if value is not None:
        check_count_or_percent(field, value)


@attrs.frozen(kw_only=True)
class SetCanaryScale:
    """How many canary instances a :class:`~rolling.Canary` runs from this step on.

    Give exactly one: ``replicas`` (a count, or a percentage of the fleet,
    rounded up), or ``match_traffic_weight=True`` (the default before any
    ``SetCanaryScale``: as many instances as the weight's share of the fleet,
    rounded up, and at least one while the weight is above 0). As in Argo
    Rollouts, an explicit scale stays until the next ``SetCanaryScale``.

    Attributes:
        replicas: Canary instances, or a percentage of the fleet.
        match_traffic_weight: Follow the weight instead.

    .. versionadded:: 0.4.0
    """

    replicas: CountOrPercent | None = attrs.field(
        default=None, validator=validator(_check_replicas)
    )
    match_traffic_weight: bool = attrs.field(default=False, validator=validator(check_bool))

    def __attrs_post_init__(self) -> None:
        if (self.replicas is None) == (not self.match_traffic_weight):
            raise ConfigError(
                "SetCanaryScale.replicas",
                "give exactly one of replicas and match_traffic_weight=True",
                'pass SetCanaryScale(replicas=2), SetCanaryScale(replicas="20%")'
                " or SetCanaryScale(match_traffic_weight=True)",
            )


Step = Advance | Pause | Gate | Analyze | SetFlag | SetWeight | SetCanaryScale
"""Any step."""

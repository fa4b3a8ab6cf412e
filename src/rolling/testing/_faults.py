"""What the simulated fleet is scripted with: how long each operation takes, and what goes wrong."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from typing import Literal, get_args

import attrs

from rolling import ConfigError
from rolling.validate import check_bool, check_seconds, validator

__all__ = [
    "OPERATIONS",
    "Fault",
    "Latency",
    "LatencyValue",
    "Operation",
    "check_latency",
    "sample",
]

Operation = Literal["replace", "launch", "terminate", "detach", "attach", "check"]
"""The name of one operation of the simulated fleet."""

OPERATIONS: tuple[Operation, ...] = get_args(Operation)
"""Every operation name, in a fixed order."""

LatencyValue = float | Callable[[random.Random], float]
"""Seconds, or a function of the fleet's seeded random generator that returns seconds."""


def check_latency(field: str, value: object) -> None:
    """Check that ``value`` is a number of seconds >= 0 or a function."""
    if callable(value):
        return
    check_seconds(field, value)


@attrs.frozen(kw_only=True)
class Latency:
    """How long each operation of a :class:`~rolling.testing.SimulatedFleet` takes.

    Each value is a number of seconds or a function that receives the fleet's
    seeded :class:`random.Random` and returns seconds, so jitter stays
    reproducible: ``Latency(replace=lambda rng: rng.uniform(5, 15))``. A
    negative sample counts as zero. Time is spent with :func:`anyio.sleep`,
    so under a virtual clock it costs nothing.

    Attributes:
        replace: Seconds an in-place update takes.
        launch: Seconds a new instance takes to start.
        terminate: Seconds an instance takes to go away.
        detach: Seconds to take an instance out of traffic (its drain time).
        attach: Seconds to put an instance in traffic.
        check: Seconds one health check takes.

    .. versionadded:: 0.1.0
    """

    replace: LatencyValue = attrs.field(default=0.0, validator=validator(check_latency))
    launch: LatencyValue = attrs.field(default=0.0, validator=validator(check_latency))
    terminate: LatencyValue = attrs.field(default=0.0, validator=validator(check_latency))
    detach: LatencyValue = attrs.field(default=0.0, validator=validator(check_latency))
    attach: LatencyValue = attrs.field(default=0.0, validator=validator(check_latency))
    check: LatencyValue = attrs.field(default=0.0, validator=validator(check_latency))

    def of(self, operation: Operation) -> LatencyValue:
        """Return the latency of ``operation``."""
        value: LatencyValue = getattr(self, operation)
        return value


def sample(value: LatencyValue, rng: random.Random) -> float:
    """Turn a latency value into seconds, drawing from ``rng`` when it is a function."""
    seconds = value(rng) if callable(value) else value
    if not math.isfinite(seconds):
        raise ConfigError(
            "Latency", f"a latency function returned {seconds!r}", "return a finite number"
        )
    return max(0.0, float(seconds))


def _check_raises(field: str, value: object) -> None:
    if isinstance(value, bool):
        return
    if not isinstance(value, int) or value < 0:
        raise ConfigError(
            field,
            f"expected a bool or a count >= 0, got {value!r}",
            "pass True (always fail), False (never) or N (fail the first N calls)",
        )


def _check_flapping(field: str, value: object) -> None:
    check_seconds(field, value, allow_none=True, allow_zero=False)


def _to_operations(value: Iterable[str] | str) -> frozenset[str]:
    # A lone string is one name, not a set of letters.
    return frozenset((value,) if isinstance(value, str) else value)


def _check_operations(field: str, value: frozenset[str]) -> None:
    unknown = sorted(value - set(OPERATIONS))
    if unknown:
        raise ConfigError(
            field, f"unknown operations {unknown}", f"name operations among {list(OPERATIONS)}"
        )


@attrs.frozen(kw_only=True)
class Fault:
    """What goes wrong with some instances of a :class:`~rolling.testing.SimulatedFleet`.

    Inject it with :meth:`SimulatedFleet.inject <rolling.testing.SimulatedFleet.inject>`
    for one instance id, for one version, or both. The ``*_raises`` fields
    take ``True`` (every call fails), ``False`` (none does) or a count ``N``
    (the first ``N`` matching calls fail, then calls succeed: a transient
    fault that retries get past). A failed call raises
    :class:`~rolling.testing.SimulatedFault` after the operation's latency
    and changes nothing.

    Attributes:
        replace_raises: ``replace`` fails.
        launch_raises: ``launch`` fails; no instance is created.
        terminate_raises: ``terminate`` fails; the instance stays.
        detach_raises: ``detach`` fails; the instance stays in traffic.
        attach_raises: ``attach`` fails; the instance stays out of traffic.
        check_raises: The health check raises instead of answering.
        never_ready: Health checks answer unhealthy, with reason ``"never ready"``,
            and the instance does not count as serving.
        flapping: Period in seconds: health checks answer healthy for this
            long (from the instance's first check), then unhealthy as long, and
            so on. Flapping is noise in the checks, not lost capacity: the
            instance still counts as serving.
        hang: Names of operations (``"replace"``, ``"launch"``,
            ``"terminate"``, ``"detach"``, ``"attach"``, ``"check"``) that never
            return. They can be cancelled, which leaves the instance as it was.
        unhealthy_at_start: The instance answers unhealthy, and does not count
            as serving, until its version changes. Applies to matching
            instances when injected and to matching instances launched later.

    .. versionadded:: 0.1.0
    """

    replace_raises: bool | int = attrs.field(default=False, validator=validator(_check_raises))
    launch_raises: bool | int = attrs.field(default=False, validator=validator(_check_raises))
    terminate_raises: bool | int = attrs.field(default=False, validator=validator(_check_raises))
    detach_raises: bool | int = attrs.field(default=False, validator=validator(_check_raises))
    attach_raises: bool | int = attrs.field(default=False, validator=validator(_check_raises))
    check_raises: bool | int = attrs.field(default=False, validator=validator(_check_raises))
    never_ready: bool = attrs.field(default=False, validator=validator(check_bool))
    flapping: float | None = attrs.field(default=None, validator=validator(_check_flapping))
    hang: frozenset[str] = attrs.field(
        default=frozenset[str](),
        converter=_to_operations,
        validator=validator(_check_operations),
    )
    unhealthy_at_start: bool = attrs.field(default=False, validator=validator(check_bool))

    def raise_limit(self, operation: Operation) -> int | None:
        """How many calls of ``operation`` fail: ``None`` for every one, ``0`` for none."""
        value: bool | int = getattr(self, f"{operation}_raises")
        if value is True:
            return None
        return int(value)

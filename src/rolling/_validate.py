"""Validation helpers for the value objects; every failure is a ConfigError naming the field."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from ._errors import ConfigError

__all__ = [
    "CountOrPercent",
    "check_callable",
    "check_count_or_percent",
    "check_int",
    "check_seconds",
    "percent_of",
]

CountOrPercent = int | str
"""A count (``3``) or a percentage of the fleet (``"25%"``)."""

_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")


def percent_of(value: str) -> Fraction:
    """Return the number in a validated percentage string such as ``"25%"``, exactly.

    A Fraction, not a float, so that ``"8.8%"`` of 375 is exactly 33 and rounds
    neither up to 34 nor (for other values) down by one.
    """
    match = _PERCENT.match(value)
    if match is None:  # pragma: no cover - only called on validated strings
        raise ValueError(value)
    return Fraction(match.group(1))


def check_count_or_percent(
    field: str, value: object, *, allow_zero: bool = True, capped: bool = True
) -> None:
    """Check that ``value`` is a non-negative int or a percentage string from 0% to 100%.

    With ``capped=False`` any percentage is allowed (Kubernetes' ``maxSurge``).
    """
    smallest = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigError(
            field,
            f"expected an int or a percentage string, got {value!r}",
            'pass a count such as 1 or a percentage such as "25%"',
        )
    if isinstance(value, int):
        if value < smallest:
            raise ConfigError(
                field, f"must be >= {smallest}, got {value}", f"pass a count of at least {smallest}"
            )
        return
    match = _PERCENT.match(value)
    if match is None:
        raise ConfigError(
            field,
            f"{value!r} is not a percentage",
            'write a percentage as digits followed by "%", such as "25%"',
        )
    pct = Fraction(match.group(1))
    if capped and pct > 100:  # noqa: PLR2004 - a percentage's upper bound
        raise ConfigError(field, f"{value!r} is more than 100%", "pass a percentage up to 100%")
    if pct == 0 and not allow_zero:
        raise ConfigError(field, f"{value!r} is 0%", "pass a percentage above 0%")


def check_int(field: str, value: object, *, minimum: int, allow_none: bool = False) -> None:
    """Check that ``value`` is an int of at least ``minimum`` (or None when allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(
            field,
            f"expected an int, got {value!r}",
            f"pass a whole number >= {minimum}" + (" or None" if allow_none else ""),
        )
    if value < minimum:
        raise ConfigError(field, f"must be >= {minimum}, got {value}", f"pass at least {minimum}")


def check_seconds(
    field: str,
    value: object,
    *,
    allow_none: bool = False,
    allow_zero: bool = True,
) -> None:
    """Check that ``value`` is a finite, non-negative number of seconds."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(
            field,
            f"expected a number of seconds, got {value!r}",
            "pass an int or float" + (" or None" if allow_none else ""),
        )
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int too large for a float is no usable number of seconds
        finite = False
    if not finite:
        raise ConfigError(
            field,
            f"must be finite, got {value!r}",
            "pass a finite number" + (" or None for no limit" if allow_none else ""),
        )
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(field, f"must be {bound}, got {value!r}", f"pass a number {bound}")


def check_callable(field: str, value: object, *, allow_none: bool = False) -> None:
    """Check that ``value`` is callable (or None when allowed)."""
    if value is None and allow_none:
        return
    if not callable(value):
        raise ConfigError(
            field,
            f"expected a callable, got {value!r}",
            "pass a function or an object with the documented method",
        )


def validator(check: Callable[..., None], **kwargs: Any) -> Callable[[Any, Any, Any], None]:
    """Wrap a check function as an attrs validator that names ``Class.field``."""

    def _validate(instance: Any, attribute: Any, value: Any) -> None:
        check(f"{type(instance).__name__}.{attribute.name}", value, **kwargs)

    return _validate

"""Validation of counts and percentages of the fleet, for strategies, steps and policies.

The general checks (numbers, seconds, callables) are public, in :mod:`rolling.validate`.
Also here: the check of a file path given to a journal, a lock or a flag file.
"""

from __future__ import annotations

import os
import re
from fractions import Fraction
from pathlib import Path
from typing import cast

from ._errors import ConfigError

__all__ = ["CountOrPercent", "check_count_or_percent", "path_of", "percent_of"]

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


def path_of(field: str, value: object) -> Path:
    """``value`` as a path: a non-empty str or an ``os.PathLike`` of str.

    Raises:
        ConfigError: It is neither (bytes, a number, an open file, an empty string).
    """
    if isinstance(value, os.PathLike):
        # Typed as str, yet a PathLike may hand back bytes: checked below.
        fspath: object = os.fspath(cast("os.PathLike[str]", value))
        if isinstance(fspath, str) and fspath:
            return Path(fspath)
    elif isinstance(value, str) and value:
        return Path(value)
    raise ConfigError(
        field, f"expected a file path, got {value!r}", "pass a str or a pathlib.Path naming a file"
    )

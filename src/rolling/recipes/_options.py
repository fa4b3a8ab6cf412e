"""What every recipe returns, and the checks they share.

Every recipe validates its input in the tool's own terms: a bad value raises
:class:`~rolling.ConfigError` whose ``field`` is ``"<recipe>.<setting>"`` (such
as ``"ecs_rolling_update.maximum_percent"``), before any rolling object is
built. An error a rolling object would raise on a value the recipe let through
is renamed the same way, so the user always sees the setting they wrote.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Generator, Sequence
from fractions import Fraction
from typing import TypedDict

from rolling import (
    Analysis,
    ConfigError,
    FailurePolicy,
    ProgressDeadline,
    Readiness,
    RollbackMode,
    Step,
    Strategy,
)

__all__ = [
    "INT32_MAX",
    "RolloutOptions",
    "check_choice",
    "check_number",
    "check_percent",
    "check_whole",
    "renamed",
]


class RolloutOptions(TypedDict, total=False):
    """Keyword arguments for :class:`~rolling.Rollout`, as a recipe builds them.

    Pass them on with ``Rollout(driver, target, router=..., **options)``; a key
    a recipe leaves out keeps the ``Rollout`` default. To change one, merge:
    ``Rollout(driver, target, **{**options, "rollback": "revert"})``.

    .. versionadded:: 0.4.0
    """

    strategy: Strategy
    """The strategy."""
    readiness: Readiness
    """How a new instance proves it is ready (no ``check`` unless the recipe was given one)."""
    failure: FailurePolicy
    """The failure budget."""
    rollback: RollbackMode
    """What a trigger does: revert, or halt as tools without a rollback do."""
    progress_deadline: ProgressDeadline
    """The progress deadline."""
    steps: tuple[Step, ...]
    """The steps, in order."""
    analysis: Analysis
    """A background analysis for the whole rollout."""


@contextlib.contextmanager
def renamed(field: str) -> Generator[None]:
    """Re-raise a :class:`~rolling.ConfigError` from a rolling object as one about ``field``."""
    try:
        yield
    except ConfigError as error:
        raise ConfigError(field, error.problem, error.fix) from error


INT32_MAX = 2**31 - 1
"""The largest int32: Kubernetes' and Argo's counts and seconds are int32 fields."""


def check_whole(
    field: str, value: object, *, minimum: int, tool_name: str, maximum: int | None = None
) -> int:
    """An int (not a bool) of at least ``minimum`` (and at most ``maximum``, if given)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < minimum
        or (maximum is not None and value > maximum)
    ):
        bounds = f"of at least {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise ConfigError(
            field,
            f"{tool_name} must be a whole number {bounds}, got {value!r}",
            f"pass an int such as {max(minimum, 1)}",
        )
    return value


def _fits_a_float(value: float) -> bool:
    """Whether ``value`` is finite and, as an int, not too large for a float."""
    try:
        return math.isfinite(value)
    except OverflowError:  # an int past the largest float, such as 10**400
        return False


def check_number(field: str, value: object, *, tool_name: str, positive: bool = False) -> float:
    """A finite, non-negative int or float (above 0 with ``positive``)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not _fits_a_float(value)
        or value < 0
        or (positive and value == 0)
    ):
        bound = "above 0" if positive else "0 or more"
        raise ConfigError(
            field,
            f"{tool_name} must be a finite number {bound}, got {value!r}",
            "pass a number such as 30",
        )
    return float(value)


def check_choice(field: str, value: object, choices: Sequence[str], *, tool_name: str) -> str:
    """One of ``choices``, spelled as the tool spells it."""
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(
            field,
            f"{tool_name} must be one of {', '.join(choices)}, got {value!r}",
            f"pass {choices[0]!r}, spelled as the tool spells it",
        )
    return value


_PERCENT = re.compile(r"^\s*([0-9]+)\s*%\s*$")  # ASCII digits: int() would read "٣"


def check_percent(
    field: str, value: object, *, tool_name: str, maximum: int | None = 100
) -> Fraction:
    """A whole percentage given as an int (``25``) or a string (``"25%"``), as a Fraction."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and (match := _PERCENT.match(value)):
        number = int(match.group(1))
    if number is None or number < 0 or (maximum is not None and number > maximum):
        upper = f" up to {maximum}" if maximum is not None else ""
        raise ConfigError(
            field,
            f"{tool_name} must be a whole percentage{upper}, got {value!r}",
            "pass an int such as 25",
        )
    return Fraction(number)

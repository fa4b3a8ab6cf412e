"""Validation for adapter authors: raise :class:`~rolling.ConfigError` naming the field and the fix.

Every check takes the field's name first (as users know it, such as
``"Balancer.timeout"``) and raises a :class:`~rolling.ConfigError` that names
it, says what is wrong and how to fix it, so that a bad argument fails where
it is given, before anything touches a fleet. Call them in ``__init__``::

    from rolling.validate import check_callable, check_int, check_seconds

    class MyDriver:
        def __init__(self, connect, *, workers=4, timeout=10.0):
            check_callable("MyDriver.connect", connect)
            check_int("MyDriver.workers", workers, minimum=1)
            check_seconds("MyDriver.timeout", timeout, allow_zero=False)

or, for attrs classes, wrap them with :func:`validator`, which names the field
``Class.attribute`` itself::

    @attrs.frozen(kw_only=True)
    class MyCheck:
        timeout: float = attrs.field(default=2.0, validator=validator(check_seconds))

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ._errors import ConfigError
from .typing import MAX_WEIGHT

__all__ = [
    "check_bool",
    "check_callable",
    "check_int",
    "check_seconds",
    "check_weight",
    "validator",
]


def check_bool(field: str, value: object) -> None:
    """Check that ``value`` is True or False (not a string such as ``"no"``, which is truthy).

    Raises:
        ConfigError: It is not.

    .. versionadded:: 0.4.0
    """
    if not isinstance(value, bool):
        raise ConfigError(field, f"expected a bool, got {value!r}", "pass True or False")


def check_int(field: str, value: object, *, minimum: int, allow_none: bool = False) -> None:
    """Check that ``value`` is an int (not a bool) of at least ``minimum``, or None when allowed.

    Raises:
        ConfigError: It is not.
    """
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


def check_weight(field: str, value: object) -> None:
    """Check a router weight: an int from 0 to :data:`~rolling.typing.MAX_WEIGHT`.

    For :class:`~rolling.typing.WeightedRouter` implementations, before they
    change anything.

    .. versionadded:: 0.4.0

    Raises:
        ConfigError: It is not.
    """
    limit = MAX_WEIGHT
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise ConfigError(
            field,
            f"expected a weight, an int from 0 to {limit}, got {value!r}",
            f"pass a whole number from 0 (no new traffic) to {limit}",
        )


def check_seconds(
    field: str,
    value: object,
    *,
    allow_none: bool = False,
    allow_zero: bool = True,
) -> None:
    """Check that ``value`` is a finite, non-negative number of seconds (an int or a float).

    Args:
        field: The field's name, for the error.
        value: What was passed.
        allow_none: Accept None too (say, for "no limit").
        allow_zero: Accept 0; when False, the number must be above 0.

    Raises:
        ConfigError: It is not.
    """
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
    """Check that ``value`` is callable, or None when allowed.

    Raises:
        ConfigError: It is not.
    """
    if value is None and allow_none:
        return
    if not callable(value):
        raise ConfigError(
            field,
            f"expected a callable, got {value!r}",
            "pass a function or an object with the documented method",
        )


def validator(check: Callable[..., None], **kwargs: Any) -> Callable[[Any, Any, Any], None]:
    """Wrap a check function as an attrs validator that names the field ``Class.attribute``.

    Args:
        check: A function called as ``check(field, value, **kwargs)``, such as
            :func:`check_seconds`, or one of your own with that signature.
        kwargs: Passed on to ``check`` (``allow_none=True``, say).
    """

    def _validate(instance: Any, attribute: Any, value: Any) -> None:
        check(f"{type(instance).__name__}.{attribute.name}", value, **kwargs)

    return _validate

"""Ansible: a play's ``serial`` batches and its ``max_fail_percentage``."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from fractions import Fraction
from typing import cast

from rolling import Batches, ConfigError, FailurePolicy, RollbackMode

from ._options import RolloutOptions, renamed

__all__ = ["WHOLE_BATCH_FAILED", "ansible"]

WHOLE_BATCH_FAILED = "99.9999%"
"""``max_failed_per_batch`` exceeded only when a whole batch (of under a million) failed.

Ansible's rule when ``max_fail_percentage`` is not set: failed hosts drop
out, and the play stops only when every host of a batch failed.
"""

SerialSize = int | str
"""One ``serial`` entry: a count (``3``), a percentage (``"30%"``), or 0 or less for all left."""


def _refuse_size(field: str, value: object, problem: str) -> ConfigError:
    return ConfigError(
        field,
        f"{problem}, got {value!r}",
        'pass an int such as 3 or a percentage such as "30%"',
    )


def _size(field: str, value: object) -> int | str:
    """One ``serial`` entry read as Ansible's ``pct_to_int`` reads it, as a Batches size."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _refuse_size(field, value, "serial entries are counts or percentages")
    if isinstance(value, str) and value.endswith("%"):
        try:  # Ansible: int(value.replace("%", "")), so a whole number only
            percent = int(value.replace("%", ""))
        except ValueError:
            raise _refuse_size(
                field, value, "Ansible reads a serial percentage as a whole number"
            ) from None
        if percent < 0:
            raise _refuse_size(
                field, value, "a negative serial percentage has no rolling equivalent"
            )
        if percent == 0:
            return 1  # Ansible: int(0 * N / 100) or 1, one host per batch
        return f"{min(percent, 100)}%"  # more than 100 % is every host left, as 100 %
    if isinstance(value, str):
        try:  # Ansible: int(value), so "3" is 3
            value = int(value)
        except ValueError:
            raise _refuse_size(field, value, "serial entries are counts or percentages") from None
    if value <= 0:
        return "100%"  # Ansible: a batch size of 0 or less takes every host left
    return value


_EXACT_BELOW = 1_000_000
"""Batches of fewer hosts than this get Ansible's ``max_fail_percentage`` decision exactly."""

_WHOLE_BATCH = Fraction(WHOLE_BATCH_FAILED[:-1]) / 100


def _simplest_between(low: Fraction, high: Fraction) -> Fraction:
    """The fraction with the smallest denominator strictly between ``0 <= low < high``."""
    # x = (p0 * y + p1) / (q0 * y + q1), y the rest of x's continued fraction.
    p0, q0, p1, q1 = 1, 0, 0, 1
    upper: Fraction | None = high
    while True:
        whole = math.floor(low)
        if upper is None or whole + 1 < upper:
            return Fraction(p0 * (whole + 1) + p1, q0 * (whole + 1) + q1)
        low, upper = 1 / (upper - whole), (None if low == whole else 1 / (low - whole))
        p0, p1 = p0 * whole + p1, p0
        q0, q1 = q0 * whole + q1, q0


def _same_decisions(share: Fraction, edge: Fraction) -> bool:
    """Whether "more than ``share``" and "more than ``edge``" agree for every batch we promise."""
    if share == edge:
        return True
    if share > edge and share.denominator < _EXACT_BELOW:
        return False  # failed / batch == share: Ansible stops, "more than share" does not
    low, high = min(share, edge), max(share, edge)
    return _simplest_between(low, high).denominator >= _EXACT_BELOW


def _factor_count(number: int, prime: int) -> int:
    count = 0
    while number % prime == 0:
        number //= prime
        count += 1
    return count


def _decimal(scaled: int, digits: int) -> str:
    """``scaled / 10**digits`` written out, such as ``"12.5"`` for ``(125, 1)``."""
    text = f"{scaled:0{digits + 1}d}"
    return text if digits == 0 else f"{text[:-digits]}.{text[-digits:]}".rstrip("0").rstrip(".")


def _fail_percentage(value: object) -> str:
    """``max_fail_percentage`` as the shortest ``max_failed_per_batch`` that decides as Ansible.

    Ansible reads the setting with ``float()`` (dropping any ``%``) and stops a
    batch when ``failed / batch_size > max_fail_percentage / 100.0``, both in
    floats, or when the whole batch failed. ``failed / batch_size`` rounds to
    the nearest float, so it is more than the float ``share`` exactly when the
    true ratio is past the midpoint between ``share`` and the next float up:
    that midpoint is the exact threshold. It has dozens of digits, so this
    takes the value as written when it decides the same for every batch of
    fewer than ``_EXACT_BELOW`` hosts (``"30%"`` for 30), else the shortest
    decimal that does.
    """
    field = "ansible.max_fail_percentage"
    number: float | None = None
    try:  # Ansible's "percent" attributes: float(value), without its "%"
        if isinstance(value, str):
            number = float(value.replace("%", ""))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
    except (ValueError, OverflowError):
        number = None
    if number is None or not 0 <= number <= 100:  # noqa: PLR2004 - a percentage
        raise ConfigError(
            field,
            f"max_fail_percentage must be a number from 0 to 100, got {value!r}",
            "pass a percentage such as 30",
        )
    share = number / 100.0
    edge = (Fraction(share) + Fraction(math.nextafter(share, math.inf))) / 2
    if edge >= _WHOLE_BATCH:
        return WHOLE_BATCH_FAILED  # only a whole failed batch is more, which stops Ansible too
    written = Fraction(repr(number))  # the value as written, such as 12.3456789
    digits = max(_factor_count(written.denominator, 2), _factor_count(written.denominator, 5))
    if _same_decisions(written / 100, edge):
        return f"{_decimal(int(written * 10**digits), digits)}%"
    percent = edge * 100
    for digits in itertools.count():
        scale = 10**digits
        for rounded in (math.floor(percent * scale), math.ceil(percent * scale)):
            if _same_decisions(Fraction(rounded, scale * 100), edge):
                return f"{_decimal(rounded, digits)}%"
    raise AssertionError  # pragma: no cover - the loop ends at the exact midpoint


def ansible(
    serial: SerialSize | Sequence[SerialSize] | None = None,
    *,
    max_fail_percentage: float | str | None = None,
    any_errors_fatal: bool = False,
) -> RolloutOptions:
    """An Ansible play's ``serial`` and failure settings, in place and in lockstep batches.

    ``serial`` becomes :class:`~rolling.Batches`, read as Ansible's
    ``pct_to_int`` reads it: a percentage is a whole number of percent of
    every host in the play, ``int(pct * N / 100) or 1`` (so ``"0%"`` is one
    host at a time, and ``"20.5%"`` is refused, as Ansible refuses it), a
    string without ``%`` is ``int()`` of it, and the last entry repeats. A
    count of 0 or less (``0``, ``-1``) takes every host left, and no ``serial``
    (or an empty list) is one batch of all.

    ``max_fail_percentage`` (read with ``float()``, as Ansible does) stops the
    play when the failed hosts of a batch are *more than* that share of it,
    decided as Ansible decides it, ``failed / batch > pct / 100.0`` in
    floats: :attr:`FailurePolicy.max_failed_per_batch
    <rolling.FailurePolicy.max_failed_per_batch>` gets the shortest
    percentage with the same decisions for every batch of under a million
    hosts (``"30%"`` for 30). As in Ansible, a batch whose every host failed
    stops the play too; without ``max_fail_percentage`` that is the only
    rule, and failed hosts are tolerated (``WHOLE_BATCH_FAILED``).
    ``any_errors_fatal`` stops at the first failure. Ansible has no rollback,
    so the rollback policy is ``halt``.

    Args:
        serial: ``serial``: a count, a percentage, or a list of them.
        max_fail_percentage: ``max_fail_percentage``, 0 to 100, a number or a
            string such as ``"30%"``.
        any_errors_fatal: ``any_errors_fatal``.

    Returns:
        ``strategy``, ``failure`` and ``rollback``.

    Raises:
        ConfigError: A value Ansible would refuse, or one rolling cannot express
            (a negative percentage, a ``max_fail_percentage`` outside 0 to
            100), named as the setting (``ansible.serial[1]``).

    .. versionadded:: 0.4.0
    """
    raw: object = serial
    entries: list[object]
    if isinstance(raw, int | str):
        entries = [raw]
    elif raw is None or (isinstance(raw, Sequence) and not cast("Sequence[object]", raw)):
        entries = [0]  # Ansible: no serial, or an empty list, is one batch of every host
    elif isinstance(raw, Sequence):
        entries = list(cast("Sequence[object]", raw))
    else:
        raise ConfigError(
            "ansible.serial",
            f"expected a count, a percentage or a list of them, got {serial!r}",
            'pass 3, "30%" or [1, 5, "20%"]',
        )
    listed = not (serial is None or isinstance(serial, int | str))
    sizes = [
        _size(f"ansible.serial[{index}]" if listed else "ansible.serial", entry)
        for index, entry in enumerate(entries)
    ]
    with renamed("ansible.serial"):
        strategy = Batches(*sizes)
    if not isinstance(any_errors_fatal, bool):
        raise ConfigError(
            "ansible.any_errors_fatal",
            f"expected a bool, got {any_errors_fatal!r}",
            "pass True or False",
        )
    if any_errors_fatal:
        failure = FailurePolicy(max_failed=0)
    elif max_fail_percentage is None:
        failure = FailurePolicy(max_failed="100%", max_failed_per_batch=WHOLE_BATCH_FAILED)
    else:
        failure = FailurePolicy(
            max_failed="100%", max_failed_per_batch=_fail_percentage(max_fail_percentage)
        )
    return {"strategy": strategy, "failure": failure, "rollback": RollbackMode.HALT}

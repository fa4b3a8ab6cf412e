"""Ansible: a play's ``serial`` batches and its ``max_fail_percentage``."""

from __future__ import annotations

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
"""One ``serial`` entry: a count (``3``), a percentage (``"30%"``), or 0 for all the rest."""


def _size(field: str, value: object) -> int | str:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)  # Ansible reads "3" as 3
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigError(
            field,
            f"serial entries are counts or percentages, got {value!r}",
            'pass an int such as 3 or a percentage such as "30%"',
        )
    if value == 0 or (isinstance(value, str) and value.replace(" ", "") in {"0%", "0.0%"}):
        return "100%"  # Ansible: a batch size of 0 takes every host left
    if isinstance(value, int) and value < 0:
        raise ConfigError(field, f"serial must not be negative, got {value}", "pass 0 or more")
    return value


def _fail_percentage(value: object) -> str:
    field = "ansible.max_fail_percentage"
    if isinstance(value, str) and value.strip().endswith("%"):
        value = value.strip()[:-1]
    try:
        number = Fraction(str(value)) if not isinstance(value, bool) else None
    except ValueError:
        number = None
    if number is None or not 0 <= number <= 100:  # noqa: PLR2004 - a percentage
        raise ConfigError(
            field,
            f"max_fail_percentage must be a number from 0 to 100, got {value!r}",
            "pass a percentage such as 30",
        )
    text = str(number) if number.denominator == 1 else f"{float(number):g}"
    return f"{text}%"


def ansible(
    serial: SerialSize | Sequence[SerialSize] | None = None,
    *,
    max_fail_percentage: float | str | None = None,
    any_errors_fatal: bool = False,
) -> RolloutOptions:
    """An Ansible play's ``serial`` and failure settings, in place and in lockstep batches.

    ``serial`` becomes :class:`~rolling.Batches`, which has Ansible's rules:
    a percentage is of every host in the play, ``int(pct * N / 100) or 1``,
    and the last entry repeats; ``0`` (or ``"0%"``) takes every host left, and
    no ``serial`` is one batch of all. ``max_fail_percentage`` stops the play
    when the failed hosts of a batch are *more than* that share of it:
    :attr:`FailurePolicy.max_failed_per_batch
    <rolling.FailurePolicy.max_failed_per_batch>` has the same "more than"
    rule. Without it, as in Ansible, failed hosts are tolerated and the play
    stops only when a whole batch failed (``WHOLE_BATCH_FAILED``);
    ``any_errors_fatal`` stops at the first failure. Ansible has no rollback,
    so the rollback policy is ``halt``.

    Args:
        serial: ``serial``: a count, a percentage, or a list of them.
        max_fail_percentage: ``max_fail_percentage``, 0 to 100.
        any_errors_fatal: ``any_errors_fatal``.

    Returns:
        ``strategy``, ``failure`` and ``rollback``.

    Raises:
        ConfigError: An entry Ansible would refuse, named as the setting.

    .. versionadded:: 0.4.0
    """
    raw: object = serial
    entries: list[object]
    if raw is None:
        entries = [0]
    elif isinstance(raw, int | str):
        entries = [raw]
    elif isinstance(raw, Sequence) and len(cast("Sequence[object]", raw)) > 0:
        entries = list(cast("Sequence[object]", raw))
    else:
        raise ConfigError(
            "ansible.serial",
            f"expected a count, a percentage or a non-empty list of them, got {serial!r}",
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

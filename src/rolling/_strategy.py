"""Strategies: how many instances may be out or extra at once, and in which groups.

Percentages are resolved against the fleet here, with the rounding rules of the
tools users already know (Kubernetes for ``RollingUpdate``, Ansible's
``serial`` for ``Batches``), so the engine only ever sees whole numbers.
"""

from __future__ import annotations

import math
from typing import cast

import attrs

from ._errors import ConfigError
from ._steps import Gate, Pause
from ._validate import CountOrPercent, check_count_or_percent, percent_of
from .validate import validator

__all__ = ["Batches", "ResolvedWindow", "RollingUpdate", "Strategy"]


@attrs.frozen(kw_only=True)
class ResolvedWindow:
    """A ``RollingUpdate`` resolved against one fleet size.

    Attributes:
        desired: Instances the fleet should serve with.
        max_unavailable: Instances that may be out of service at once.
        max_surge: Instances that may exist beyond ``desired`` at once.
    """

    desired: int
    max_unavailable: int
    max_surge: int

    @property
    def floor(self) -> int:
        """The fewest serving instances the rollout may leave: ``desired - max_unavailable``."""
        return max(0, self.desired - self.max_unavailable)

    @property
    def ceiling(self) -> int:
        """The most instances that may exist at once: ``desired + max_surge``."""
        return self.desired + self.max_surge


def _resolve(value: CountOrPercent, desired: int, *, round_up: bool) -> int:
    if isinstance(value, int):
        return value
    exact = percent_of(value) * desired / 100
    return math.ceil(exact) if round_up else math.floor(exact)


@attrs.frozen(kw_only=True)
class RollingUpdate:
    """A sliding window over the fleet, with Kubernetes' ``maxUnavailable`` and ``maxSurge``.

    The moment one instance finishes, the next may start. A percentage of
    ``max_surge`` rounds up and one of ``max_unavailable`` rounds down; when
    both resolve to zero, one instance may be unavailable. ``max_surge > 0``
    needs an :class:`~rolling.typing.ElasticDriver`: new instances are added
    first; with ``max_surge == 0`` old ones are taken out first.

    Attributes:
        max_unavailable: Count or percentage (up to 100%) of the fleet that may
            be out at once.
        max_surge: Count or percentage (any, such as ``"200%"``) of the fleet
            that may exist above its size.

    .. versionadded:: 0.1.0
    """

    max_unavailable: CountOrPercent = attrs.field(
        default=1, validator=validator(check_count_or_percent)
    )
    # Uncapped, as in Kubernetes: the ceiling is desired + surge, whatever its size; only
    # max_unavailable stops at 100 %.
    max_surge: CountOrPercent = attrs.field(
        default=0, validator=validator(check_count_or_percent, capped=False)
    )

    def __attrs_post_init__(self) -> None:
        if _is_zero(self.max_unavailable) and _is_zero(self.max_surge):
            raise ConfigError(
                "RollingUpdate.max_unavailable",
                "max_unavailable and max_surge are both zero, so no instance could ever change",
                "allow at least one: max_unavailable=1 or max_surge=1",
            )

    def resolve(self, desired: int) -> ResolvedWindow:
        """Resolve the percentages against a fleet of ``desired`` instances.

        Returns:
            The window: ``desired``, ``max_unavailable`` and ``max_surge`` as counts,
            with ``floor`` (the fewest serving instances, ``desired - max_unavailable``)
            and ``ceiling`` (the most existing ones, ``desired + max_surge``).
        """
        surge = _resolve(self.max_surge, desired, round_up=True)
        unavailable = min(_resolve(self.max_unavailable, desired, round_up=False), desired)
        if surge == 0 and unavailable == 0 and desired > 0:
            unavailable = 1  # Kubernetes' rule; an empty fleet has nothing to take out
        return ResolvedWindow(desired=desired, max_unavailable=unavailable, max_surge=surge)

    @property
    def wants_surge(self) -> bool:
        """Whether this strategy may add instances, and so needs an elastic driver."""
        return not _is_zero(self.max_surge)


def _is_zero(value: CountOrPercent) -> bool:
    return value == 0 if isinstance(value, int) else percent_of(value) == 0


def _check_sizes(field: str, value: object) -> None:
    sizes = cast("tuple[object, ...]", value) if isinstance(value, tuple) else ()
    if not sizes:
        raise ConfigError(
            field, "no batch sizes given", 'pass at least one size: Batches(1, "50%")'
        )
    for index, size in enumerate(sizes):
        check_count_or_percent(f"{field}[{index}]", size, allow_zero=False)


def _check_pause(field: str, value: object) -> None:
    if value is not None and not isinstance(value, Pause | Gate):
        raise ConfigError(
            field,
            f"expected a Pause or a Gate, got {value!r}",
            "pass Pause(seconds), Pause() or Gate(check)",
        )


@attrs.frozen(init=False)
class Batches:
    """Lockstep batches with Ansible's ``serial`` semantics.

    ``Batches(1, 5, "20%")`` updates one instance, then five, then 20% of the
    whole fleet at a time until it is done: a percentage is of the whole fleet,
    ``int(pct * N / 100) or 1``, and the last size repeats. A batch finishes
    before the next begins; ``pause`` (a :class:`~rolling.Pause` or
    :class:`~rolling.Gate`) runs between batches.

    With ``surge=True`` each batch launches its replacements before taking the
    old instances out (needs an :class:`~rolling.typing.ElasticDriver`).

    Attributes:
        sizes: The batch sizes as given, counts or percentages of the fleet;
            the last one repeats.
        pause: The :class:`~rolling.Pause` or :class:`~rolling.Gate` run
            between batches, if any.
        surge: Whether each batch launches its replacements first.

    .. versionadded:: 0.1.0
    """

    sizes: tuple[CountOrPercent, ...] = attrs.field(validator=validator(_check_sizes))
    pause: Pause | Gate | None = attrs.field(validator=validator(_check_pause))
    surge: bool = attrs.field(validator=attrs.validators.instance_of(bool))

    def __init__(
        self, *sizes: CountOrPercent, pause: Pause | Gate | None = None, surge: bool = False
    ) -> None:
        if not isinstance(surge, bool):
            raise ConfigError(
                "Batches.surge", f"expected a bool, got {surge!r}", "pass True or False"
            )
        self.__attrs_init__(sizes=tuple(sizes), pause=pause, surge=surge)  # type: ignore[attr-defined,unused-ignore]

    def resolve(self, fleet: int, *, whole: int | None = None) -> list[int]:
        """Return the batch sizes for ``fleet`` instances to update (they sum to ``fleet``).

        Percentages are of ``whole``, the whole fleet, which defaults to
        ``fleet``: instances already on the target still count, as hosts
        with nothing to do count in Ansible's ``serial``.
        """
        result: list[int] = []
        remaining = fleet
        index = 0
        base = fleet if whole is None else whole
        while remaining > 0:
            spec = self.sizes[min(index, len(self.sizes) - 1)]
            size = spec if isinstance(spec, int) else int(percent_of(spec) * base / 100) or 1
            size = min(size, remaining)
            result.append(size)
            remaining -= size
            index += 1
        return result

    @property
    def wants_surge(self) -> bool:
        """Whether batches launch first, and so need an elastic driver."""
        return self.surge


Strategy = RollingUpdate | Batches
"""Either strategy."""

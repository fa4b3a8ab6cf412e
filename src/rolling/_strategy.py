"""Strategies: how many instances may be out or extra at once, and in which groups.

Percentages are resolved against the fleet here, with the rounding rules of the
tools users already know (Kubernetes for ``RollingUpdate``, Ansible's
``serial`` for ``Batches``), so the engine only ever sees whole numbers.
"""

from __future__ import annotations

import math
from typing import cast

import attrs

from ._analysis import Analysis
from ._errors import ConfigError
from ._steps import Gate, Pause
from ._validate import CountOrPercent, check_count_or_percent, percent_of
from .validate import check_bool, check_seconds, validator

__all__ = ["Batches", "BlueGreen", "Canary", "ResolvedWindow", "RollingUpdate", "Strategy"]


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
    surge: bool = attrs.field(validator=validator(check_bool))

    def __init__(
        self, *sizes: CountOrPercent, pause: Pause | Gate | None = None, surge: bool = False
    ) -> None:
        check_bool("Batches.surge", surge)
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


def _check_promotion(field: str, value: object) -> None:
    if value is not None and not isinstance(value, RollingUpdate):
        raise ConfigError(
            field,
            f"expected a RollingUpdate or None, got {value!r}",
            'pass RollingUpdate(max_surge="25%") to replace the rest through a window,'
            " or None for all at once",
        )


def _check_analysis(field: str, value: object) -> None:
    if value is not None and not isinstance(value, Analysis):
        raise ConfigError(
            field, f"expected an Analysis or None, got {value!r}", "pass rolling.Analysis(...)"
        )


@attrs.frozen(kw_only=True)
class Canary:
    """A weighted canary: a few new instances get a share of the traffic, step by step.

    Needs an :class:`~rolling.typing.ElasticDriver` and a
    :class:`~rolling.typing.WeightedRouter`. The rollout's ``steps`` say what
    happens, in Argo Rollouts' vocabulary: :class:`~rolling.SetWeight`,
    :class:`~rolling.SetCanaryScale`, :class:`~rolling.Pause`,
    :class:`~rolling.Analyze`, :class:`~rolling.Gate` and
    :class:`~rolling.SetFlag`. Canary instances are launched beside the stable
    set (which keeps its size) and are ready before they get any weight.

    After the last step (or on :meth:`~rolling.RolloutHandle.promote` with
    ``full=True``) the rollout is *promoted*: with ``promotion=None`` (Argo's
    default) the rest of the new set is launched at once, every request goes to
    the new set in one switch, and the stable set is kept ``scale_down_delay``
    seconds (a rollback in that time switches back) and then terminated; with a
    :class:`RollingUpdate`, the canaries take full weight, as many stable
    instances go, and the rest of the fleet is replaced through that window.

    A rollback before promotion sets the canaries' weight to 0, drains and
    terminates them, and gives the stable set its full weight back.

    Attributes:
        promotion: How the rest of the fleet is replaced on promotion; None:
            all at once.
        scale_down_delay: Seconds the old set is kept, out of traffic, after an
            all-at-once switch.

    .. versionadded:: 0.4.0
    """

    promotion: RollingUpdate | None = attrs.field(
        default=None, validator=validator(_check_promotion)
    )
    scale_down_delay: float = attrs.field(default=0.0, validator=validator(check_seconds))

    @property
    def wants_surge(self) -> bool:
        """A canary always adds instances, and so needs an elastic driver."""
        return True


def _check_optional_count(field: str, value: object) -> None:
    if value is not None:
        check_count_or_percent(field, value, allow_zero=False)


@attrs.frozen(kw_only=True)
class BlueGreen:
    """Blue-green: a whole new set beside the old one, one switch, and a way back.

    Needs an :class:`~rolling.typing.ElasticDriver`. The new (green) set is
    launched beside the old (blue) one and made ready; ``pre_promotion`` is
    measured on it; then, once promoted (at once with ``auto_promote``, else on
    :meth:`~rolling.RolloutHandle.promote` or after ``auto_promote_after``
    seconds), every request switches to green. Blue is kept out of traffic for
    ``scale_down_delay`` seconds, while ``post_promotion`` is measured: a
    failed verdict or an abort in that time switches back to blue and
    terminates green. Then blue is terminated.

    With a :class:`~rolling.typing.WeightedRouter` green joins at weight 0
    and the switch is two weight changes per pair (green up, then blue to 0),
    so blue is never drained; with a plain :class:`~rolling.typing.Router`
    green is attached, then blue detached.

    Attributes:
        preview_replicas: Launch only this many green instances (a count or a
            percentage of the fleet, rounded up) before promotion; the rest
            come just before the switch. None: the whole set at once.
        pre_promotion: Analysis of green before the switch.
        post_promotion: Analysis after the switch, while blue is kept.
        auto_promote: Switch as soon as green is ready and passes
            ``pre_promotion``; False: wait for a promote.
        auto_promote_after: With ``auto_promote=False``, switch after this many
            seconds anyway.
        scale_down_delay: Seconds blue is kept after the switch.

    .. versionadded:: 0.4.0
    """

    preview_replicas: CountOrPercent | None = attrs.field(
        default=None, validator=validator(_check_optional_count)
    )
    pre_promotion: Analysis | None = attrs.field(default=None, validator=validator(_check_analysis))
    post_promotion: Analysis | None = attrs.field(
        default=None, validator=validator(_check_analysis)
    )
    auto_promote: bool = attrs.field(default=True, validator=validator(check_bool))
    auto_promote_after: float | None = attrs.field(
        default=None, validator=validator(check_seconds, allow_none=True)
    )
    scale_down_delay: float = attrs.field(default=30.0, validator=validator(check_seconds))

    def __attrs_post_init__(self) -> None:
        if self.auto_promote_after is not None and self.auto_promote:
            raise ConfigError(
                "BlueGreen.auto_promote_after",
                "auto_promote_after only applies with auto_promote=False",
                "pass auto_promote=False with it, or drop it",
            )

    @property
    def wants_surge(self) -> bool:
        """Blue-green always adds a whole set, and so needs an elastic driver."""
        return True

    def preview(self, desired: int) -> int:
        """How many green instances come before promotion, for a fleet of ``desired``."""
        value = self.preview_replicas
        if value is None:
            return desired
        if isinstance(value, int):
            return min(value, desired)
        return min(desired, math.ceil(percent_of(value) * desired / 100))


Strategy = RollingUpdate | Batches | Canary | BlueGreen
"""Any strategy."""

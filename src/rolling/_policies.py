"""Frozen, validated policies: readiness, failure budget, rollback, deadlines, order and waves."""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, Literal, cast

import attrs

from ._errors import ConfigError
from ._validate import CountOrPercent, check_count_or_percent, percent_of
from .validate import check_bool, check_callable, check_int, check_seconds, validator

__all__ = [
    "Backoff",
    "DeadlineAction",
    "FailurePolicy",
    "Order",
    "ProgressDeadline",
    "Readiness",
    "RollbackMode",
    "Waves",
]


def _check_health_check(field: str, value: object) -> None:
    if value is None or callable(getattr(value, "check", None)) or callable(value):
        return
    raise ConfigError(
        field,
        f"{value!r} is neither a HealthCheck nor an async function",
        "pass an object with an async check(instance) method, or an async function",
    )


@attrs.frozen(kw_only=True)
class Readiness:
    """How an updated instance proves it is ready, with Kubernetes probe semantics.

    After ``initial_delay`` the check runs every ``period`` seconds, counted
    from the start of one probe to the start of the next, as Kubernetes'
    ``periodSeconds`` is (a probe that takes its whole period or more is
    followed at once); each call is bounded by ``timeout`` (a time-out counts
    as a failure).
    ``success_threshold`` passes in a row make the instance ready; it must then
    stay healthy for ``min_ready`` seconds (Kubernetes' ``minReadySeconds``,
    Nomad's ``min_healthy_time``): a failure meanwhile restarts the count.
    ``failure_threshold`` failures in a row fail the instance at once (None:
    keep trying); the whole wait is bounded by ``deadline`` (Nomad's
    ``healthy_deadline``). Without ``check``, an instance is ready as soon as
    the driver returns it, after ``min_ready``.

    Attributes:
        check: A :class:`~rolling.typing.HealthCheck` or a plain
            ``async def check(instance)``; None: no probing.
        initial_delay: Seconds to wait before the first probe.
        period: Seconds from the start of one probe to the start of the next.
        timeout: Longest one probe may take; longer counts as a failed probe.
        success_threshold: Passing probes in a row that make the instance ready.
        failure_threshold: Failing probes in a row that fail the attempt at
            once; None: keep probing until ``deadline``.
        min_ready: Seconds the instance must stay healthy once ready.
        deadline: Longest the whole wait may take, ``initial_delay`` and
            ``min_ready`` included.

    .. versionadded:: 0.1.0
    """

    check: Any = attrs.field(default=None, validator=validator(_check_health_check))
    initial_delay: float = attrs.field(default=0.0, validator=validator(check_seconds))
    period: float = attrs.field(default=1.0, validator=validator(check_seconds, allow_zero=False))
    timeout: float = attrs.field(default=1.0, validator=validator(check_seconds, allow_zero=False))
    success_threshold: int = attrs.field(default=1, validator=validator(check_int, minimum=1))
    failure_threshold: int | None = attrs.field(
        default=None, validator=validator(check_int, minimum=1, allow_none=True)
    )
    min_ready: float = attrs.field(default=0.0, validator=validator(check_seconds))
    deadline: float = attrs.field(
        default=300.0, validator=validator(check_seconds, allow_zero=False)
    )

    def __attrs_post_init__(self) -> None:
        if self.initial_delay + self.min_ready >= self.deadline:
            raise ConfigError(
                "Readiness.deadline",
                f"deadline {self.deadline}s leaves no time after"
                f" initial_delay {self.initial_delay}s and min_ready {self.min_ready}s",
                "raise deadline above initial_delay + min_ready",
            )


def _check_factor(field: str, value: object) -> None:
    check_seconds(field, value)
    if isinstance(value, int | float) and value < 1:
        raise ConfigError(field, f"must be >= 1, got {value}", "pass 1 for a constant delay")


def _check_jitter(field: str, value: object) -> None:
    check_seconds(field, value)
    if isinstance(value, int | float) and value > 1:
        raise ConfigError(field, f"must be <= 1, got {value}", "pass a fraction from 0 to 1")


@attrs.frozen(kw_only=True)
class Backoff:
    """Exponential back-off between retries: ``initial * factor**n``, capped at ``maximum``.

    ``jitter`` is the fraction (0 to 1) of each delay that is randomised, so
    retries of many instances do not land together.

    Attributes:
        initial: Seconds before the first retry.
        factor: What each delay is multiplied by for the next retry.
        maximum: The longest delay, in seconds.
        jitter: Fraction (0 to 1) of each delay that is drawn at random.

    .. versionadded:: 0.1.0
    """

    initial: float = attrs.field(default=1.0, validator=validator(check_seconds))
    factor: float = attrs.field(default=2.0, validator=validator(_check_factor))
    maximum: float = attrs.field(default=60.0, validator=validator(check_seconds))
    jitter: float = attrs.field(default=0.0, validator=validator(_check_jitter))

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (1 for the first retry)."""
        if self.initial == 0:
            return 0.0
        try:
            grown = self.initial * self.factor ** (attempt - 1)
        except OverflowError:  # after ~1000 retries factor**n leaves the float range
            grown = math.inf
        base = min(self.maximum, grown)
        if self.jitter and rng is not None:
            base *= 1 - self.jitter * rng.random()
        return base


def _check_percent_only(field: str, value: object) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        problem = (
            f"expected a percentage of the batch, got the count {value!r}"
            if isinstance(value, int) and not isinstance(value, bool)
            else f"expected a percentage string, got {value!r}"
        )
        raise ConfigError(
            field, problem, 'write it as a percentage, such as "30%" (Ansible max_fail_percentage)'
        )
    check_count_or_percent(field, value)


def _check_backoff(field: str, value: object) -> None:
    if not isinstance(value, Backoff):
        raise ConfigError(field, f"expected a Backoff, got {value!r}", "pass Backoff(initial=...)")


@attrs.frozen(kw_only=True)
class FailurePolicy:
    """How many failures a rollout tolerates before its rollback policy applies.

    Attributes:
        retries: Extra attempts per instance after its first failure.
        backoff: Delay between those attempts.
        max_failed: Failed instances tolerated over the whole rollout (count or
            percentage of the fleet); one more triggers rollback.
        max_failed_per_batch: Like Ansible's ``max_fail_percentage``: when the
            failures in one batch exceed this share of it, the rollout stops.
        circuit_breaker: Consecutive failed instances that trip the breaker (a
            success resets the count), as ECS' deployment circuit breaker.
        restore_failed: Put an instance that failed back on its old version and
            in traffic (the default); False leaves it out of traffic for
            inspection, reported with ``serving=False``.

    A failed instance is put back on its old version and reported, never
    silently left out of traffic.

    .. versionadded:: 0.1.0
    """

    retries: int = attrs.field(default=0, validator=validator(check_int, minimum=0))
    backoff: Backoff = attrs.field(factory=Backoff, validator=validator(_check_backoff))
    max_failed: CountOrPercent = attrs.field(default=0, validator=validator(check_count_or_percent))
    max_failed_per_batch: str | None = attrs.field(
        default=None, validator=validator(_check_percent_only)
    )
    circuit_breaker: int | None = attrs.field(
        default=None, validator=validator(check_int, minimum=1, allow_none=True)
    )
    restore_failed: bool = attrs.field(default=True, validator=validator(check_bool))

    def budget(self, fleet: int) -> int:
        """Failed instances tolerated in a fleet of ``fleet``."""
        if isinstance(self.max_failed, int):
            return self.max_failed
        return int(percent_of(self.max_failed) * fleet / 100)

    def batch_exceeded(self, failed: int, batch_size: int) -> bool:
        """Whether ``failed`` failures in a batch of ``batch_size`` exceed the per-batch share."""
        if self.max_failed_per_batch is None or batch_size == 0:
            return False
        return failed * 100 > percent_of(self.max_failed_per_batch) * batch_size


class RollbackMode(enum.StrEnum):
    """What a triggered rollback does.

    .. versionadded:: 0.1.0
    """

    REVERT = "revert"
    """Put every instance this rollout changed back on its old version, newest first."""
    HALT = "halt"
    """Stop where it is and report the mixed fleet exactly."""


class DeadlineAction(enum.StrEnum):
    """What happens when the progress deadline passes.

    .. versionadded:: 0.1.0
    """

    ROLLBACK = "rollback"
    """Apply the rollout's rollback policy (revert or halt)."""
    HALT = "halt"
    """Stop starting instances and finish as halted, whatever the rollback policy."""
    REPORT = "report"
    """Emit an event and go on, as Kubernetes does."""


def _to_action(value: object) -> DeadlineAction:
    if isinstance(value, str) and value in DeadlineAction._value2member_map_:
        return DeadlineAction(value)
    raise ConfigError(
        "ProgressDeadline.action",
        f"unknown action {value!r}",
        'pass "rollback", "halt" or "report"',
    )


@attrs.frozen
class ProgressDeadline:
    """The longest the rollout may go without an instance completing.

    The clock restarts whenever an instance completes (and while paused for a
    promotion); when it runs out, ``action`` applies.

    Attributes:
        seconds: The longest the rollout may go without an instance completing.
        action: What happens then: roll back (the default), halt, or only report.

    .. versionadded:: 0.1.0
    """

    seconds: float = attrs.field(validator=validator(check_seconds, allow_zero=False))
    action: DeadlineAction = attrs.field(default=DeadlineAction.ROLLBACK, converter=_to_action)


_OrderKind = Literal["inventory", "sorted", "shuffled", "key"]
_ORDER_KINDS = ("inventory", "sorted", "shuffled", "key")


def _check_order_kind(field: str, value: object) -> None:
    if value not in _ORDER_KINDS or not isinstance(value, str):
        raise ConfigError(
            field,
            f"unknown kind {value!r}",
            "build it with Order.inventory(), Order.sorted(), Order.shuffled(seed)"
            " or Order.by(key)",
        )


@attrs.frozen(kw_only=True)
class Order:
    """The order in which instances are updated. Build one with the class methods.

    Already-unhealthy instances always go first, whatever the order.

    Attributes:
        kind: ``"inventory"``, ``"sorted"``, ``"shuffled"`` or ``"key"``:
            which class method built it.
        key: The key function of :meth:`by`, or None.
        seed: The seed of :meth:`shuffled`, or None.
        reverse: Whether the order of :meth:`sorted` or :meth:`by` is reversed.

    .. versionadded:: 0.1.0
    """

    # Validated even though the class methods are the way to build one: a string such as
    # reverse="no" is truthy, and a bad kind or seed would only fail once the fleet is listed.
    kind: _OrderKind = "inventory"
    key: Callable[[Any], Any] | None = attrs.field(
        default=None, validator=validator(check_callable, allow_none=True)
    )
    seed: int | None = attrs.field(
        default=None, validator=validator(check_int, minimum=-(2**63), allow_none=True)
    )
    reverse: bool = attrs.field(default=False, validator=validator(check_bool))

    def __attrs_post_init__(self) -> None:
        _check_order_kind("Order.kind", self.kind)
        needs = {
            "key": ("key", self.key, "Order.by(key)"),
            "shuffled": ("seed", self.seed, "Order.shuffled(seed)"),
        }
        if self.kind in needs:
            name, value, fix = needs[self.kind]
            if value is None:
                raise ConfigError(
                    f"Order.{name}", f"is required by kind={self.kind!r}", f"build it with {fix}"
                )

    @classmethod
    def inventory(cls) -> Order:
        """The order the driver lists instances in (the default)."""
        return cls()

    @classmethod
    def sorted(cls, *, reverse: bool = False) -> Order:
        """By instance id."""
        return cls(kind="sorted", reverse=reverse)

    @classmethod
    def shuffled(cls, seed: int) -> Order:
        """A random order, the same for the same seed."""
        check_int("Order.shuffled.seed", seed, minimum=-(2**63))
        return cls(kind="shuffled", seed=seed)

    @classmethod
    def by(cls, key: Callable[[Any], Any], *, reverse: bool = False) -> Order:
        """By ``key(instance)``, stable for ties."""
        check_callable("Order.by.key", key)
        return cls(kind="key", key=key, reverse=reverse)

    def arrange(self, instances: Sequence[Any]) -> list[Any]:
        """Return ``instances`` in this order."""
        items = list(instances)
        if self.kind == "sorted":
            items.sort(key=lambda i: i.id, reverse=self.reverse)
        elif self.kind == "key" and self.key is not None:
            items.sort(key=self.key, reverse=self.reverse)
        elif self.kind == "shuffled":
            random.Random(self.seed).shuffle(items)
        return items


def _to_wave_order(value: object) -> tuple[Hashable, ...] | None:
    if value is None:
        return None
    bad = ConfigError(
        "Waves.order",
        f"expected a sequence of hashable keys, got {value!r}",
        'list the keys in order, such as ("zone-a", "zone-b"), or pass None',
    )
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise bad  # a lone key (or a string, which would split into characters)
    keys = tuple(cast("Iterable[object]", value))
    try:
        for key in keys:
            hash(key)
    except TypeError:
        raise bad from None
    return keys


@attrs.frozen
class Waves:
    """Group instances by ``key`` (zone, region, rack) and finish one group before the next.

    Groups go in the order their keys first appear in the rollout's order,
    unless ``order`` lists the keys explicitly (keys not listed go last).

    Attributes:
        key: A function of an instance that returns its group (its zone, say).
        order: The keys in the order their groups go, or None for the order
            they first appear in.

    .. versionadded:: 0.1.0
    """

    key: Callable[[Any], Hashable] = attrs.field(validator=validator(check_callable))
    order: tuple[Hashable, ...] | None = attrs.field(default=None, converter=_to_wave_order)

    def split(self, instances: Sequence[Any]) -> list[list[Any]]:
        """Split ordered ``instances`` into waves."""
        groups: dict[Hashable, list[Any]] = {}
        for instance in instances:
            groups.setdefault(self.key(instance), []).append(instance)
        if self.order is None:
            return list(groups.values())
        rank = {key: index for index, key in enumerate(self.order)}
        keys = sorted(groups, key=lambda k: rank.get(k, len(rank)))
        return [groups[k] for k in keys]

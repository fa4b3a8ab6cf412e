# Copyright (c) 2026 The rolling developers. MIT License, see LICENSE.
"""The configuration objects: validation, rounding, batch sizes and small behaviours.

These are value objects, checked the moment they are built, long before any driver is
called; the valid ones are then put to use in a rollout of a simulated fleet.
"""

from __future__ import annotations

import math
import random
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

import rolling
from helpers import monitor_for
from rolling._strategy import ResolvedWindow  # internal: what Rollout.window() returns
from rolling.testing import SimulatedFleet

if TYPE_CHECKING:
    from collections.abc import Callable

# -- helpers ------------------------------------------------------------------


@attrs.frozen
class Inst:
    """A tiny stand-in for a driver's instance."""

    id: str
    version: str = "v1"
    zone: str = "a"


async def _healthy() -> bool:
    return True


async def _also_healthy() -> bool:
    return True


async def _ready(_instance: object) -> bool:
    return True


def _rollout_of_two(**options: Any) -> rolling.Rollout[Any]:
    return rolling.Rollout(SimulatedFleet(2), "v2", **options)


def _zone(instance: Inst) -> str:
    return instance.zone


def bad(
    case_id: str, field: str, factory: Callable[..., object], *args: object, **kwargs: object
) -> Any:
    """One row of the invalid-configuration table: ``factory(*args, **kwargs)`` must fail."""
    return pytest.param(factory, args, kwargs, field, id=case_id)


NAN = float("nan")
INF = float("inf")

# -- 1. invalid configurations ------------------------------------------------

INVALID = [
    # RollingUpdate: each field alone
    bad("ru-surge-negative", "RollingUpdate.max_surge", rolling.RollingUpdate, max_surge=-1),
    bad(
        "ru-unavailable-negative",
        "RollingUpdate.max_unavailable",
        rolling.RollingUpdate,
        max_unavailable=-2,
    ),
    bad(
        "ru-unavailable-bool",
        "RollingUpdate.max_unavailable",
        rolling.RollingUpdate,
        max_unavailable=True,
    ),
    bad("ru-surge-bool", "RollingUpdate.max_surge", rolling.RollingUpdate, max_surge=False),
    bad("ru-surge-abc-pct", "RollingUpdate.max_surge", rolling.RollingUpdate, max_surge="abc%"),
    bad(
        "ru-unavailable-150pct",
        "RollingUpdate.max_unavailable",
        rolling.RollingUpdate,
        max_unavailable="150%",
    ),
    bad(
        "ru-unavailable-negative-pct",
        "RollingUpdate.max_unavailable",
        rolling.RollingUpdate,
        max_unavailable="-5%",
    ),
    bad(
        "ru-unavailable-no-pct-sign",
        "RollingUpdate.max_unavailable",
        rolling.RollingUpdate,
        max_unavailable="25",
    ),
    bad("ru-surge-float", "RollingUpdate.max_surge", rolling.RollingUpdate, max_surge=1.5),
    bad(
        "ru-unavailable-none",
        "RollingUpdate.max_unavailable",
        rolling.RollingUpdate,
        max_unavailable=None,
    ),
    # RollingUpdate: both zero, in every spelling
    bad(
        "ru-both-zero",
        "RollingUpdate.max_unavailable",
        rolling.RollingUpdate,
        max_unavailable=0,
        max_surge=0,
    ),
    bad(
        "ru-both-zero-pct-and-int",
        "RollingUpdate.max_unavailable",
        rolling.RollingUpdate,
        max_unavailable="0%",
        max_surge=0,
    ),
    bad(
        "ru-both-zero-int-and-pct",
        "RollingUpdate.max_unavailable",
        rolling.RollingUpdate,
        max_unavailable=0,
        max_surge="0%",
    ),
    bad(
        "ru-both-zero-pct",
        "RollingUpdate.max_unavailable",
        rolling.RollingUpdate,
        max_unavailable="0.0%",
        max_surge="0%",
    ),
    # Readiness
    bad("readiness-period-zero", "Readiness.period", rolling.Readiness, period=0),
    bad("readiness-period-nan", "Readiness.period", rolling.Readiness, period=NAN),
    bad("readiness-period-str", "Readiness.period", rolling.Readiness, period="1"),
    bad("readiness-timeout-zero", "Readiness.timeout", rolling.Readiness, timeout=0.0),
    bad("readiness-timeout-bool", "Readiness.timeout", rolling.Readiness, timeout=True),
    bad(
        "readiness-initial-delay-inf",
        "Readiness.initial_delay",
        rolling.Readiness,
        initial_delay=INF,
    ),
    bad("readiness-min-ready-negative", "Readiness.min_ready", rolling.Readiness, min_ready=-1),
    bad("readiness-deadline-zero", "Readiness.deadline", rolling.Readiness, deadline=0),
    bad("readiness-deadline-inf", "Readiness.deadline", rolling.Readiness, deadline=INF),
    bad(
        "readiness-deadline-equal-delay-plus-min-ready",
        "Readiness.deadline",
        rolling.Readiness,
        initial_delay=5,
        min_ready=5,
        deadline=10,
    ),
    bad(
        "readiness-deadline-below-delay-plus-min-ready",
        "Readiness.deadline",
        rolling.Readiness,
        initial_delay=8,
        min_ready=3,
        deadline=10,
    ),
    bad(
        "readiness-deadline-below-default-min-ready",
        "Readiness.deadline",
        rolling.Readiness,
        min_ready=300,
    ),
    bad(
        "readiness-success-threshold-zero",
        "Readiness.success_threshold",
        rolling.Readiness,
        success_threshold=0,
    ),
    bad(
        "readiness-success-threshold-bool",
        "Readiness.success_threshold",
        rolling.Readiness,
        success_threshold=True,
    ),
    bad(
        "readiness-success-threshold-float",
        "Readiness.success_threshold",
        rolling.Readiness,
        success_threshold=1.0,
    ),
    bad(
        "readiness-failure-threshold-zero",
        "Readiness.failure_threshold",
        rolling.Readiness,
        failure_threshold=0,
    ),
    bad("readiness-check-int", "Readiness.check", rolling.Readiness, check=5),
    # Batches
    bad("batches-no-sizes", "Batches.sizes", rolling.Batches),
    bad("batches-zero", "Batches.sizes[0]", rolling.Batches, 0),
    bad("batches-zero-pct-second", "Batches.sizes[1]", rolling.Batches, 1, "0%"),
    bad("batches-negative-third", "Batches.sizes[2]", rolling.Batches, 1, 5, -1),
    bad("batches-101pct", "Batches.sizes[0]", rolling.Batches, "101%"),
    bad("batches-bool", "Batches.sizes[0]", rolling.Batches, True),
    bad("batches-float", "Batches.sizes[0]", rolling.Batches, 1.5),
    bad("batches-junk-pct", "Batches.sizes[1]", rolling.Batches, 1, "x%"),
    bad("batches-pause-int", "Batches.pause", rolling.Batches, 1, pause=123),
    bad("batches-pause-str", "Batches.pause", rolling.Batches, 1, pause="10s"),
    bad("batches-surge-str", "Batches.surge", rolling.Batches, 1, surge="yes"),
    bad("batches-surge-int", "Batches.surge", rolling.Batches, 1, surge=1),
    # FailurePolicy
    bad(
        "failure-per-batch-count",
        "FailurePolicy.max_failed_per_batch",
        rolling.FailurePolicy,
        max_failed_per_batch=3,
    ),
    bad(
        "failure-per-batch-bool",
        "FailurePolicy.max_failed_per_batch",
        rolling.FailurePolicy,
        max_failed_per_batch=True,
    ),
    bad(
        "failure-per-batch-junk",
        "FailurePolicy.max_failed_per_batch",
        rolling.FailurePolicy,
        max_failed_per_batch="abc",
    ),
    bad(
        "failure-per-batch-120pct",
        "FailurePolicy.max_failed_per_batch",
        rolling.FailurePolicy,
        max_failed_per_batch="120%",
    ),
    bad(
        "failure-circuit-breaker-zero",
        "FailurePolicy.circuit_breaker",
        rolling.FailurePolicy,
        circuit_breaker=0,
    ),
    bad("failure-retries-negative", "FailurePolicy.retries", rolling.FailurePolicy, retries=-1),
    bad("failure-retries-bool", "FailurePolicy.retries", rolling.FailurePolicy, retries=True),
    bad("failure-retries-float", "FailurePolicy.retries", rolling.FailurePolicy, retries=1.0),
    bad("failure-backoff-int", "FailurePolicy.backoff", rolling.FailurePolicy, backoff=5),
    bad("failure-backoff-none", "FailurePolicy.backoff", rolling.FailurePolicy, backoff=None),
    bad(
        "failure-max-failed-negative",
        "FailurePolicy.max_failed",
        rolling.FailurePolicy,
        max_failed=-1,
    ),
    bad(
        "failure-max-failed-200pct",
        "FailurePolicy.max_failed",
        rolling.FailurePolicy,
        max_failed="200%",
    ),
    # Backoff
    bad("backoff-factor-below-one", "Backoff.factor", rolling.Backoff, factor=0.5),
    bad("backoff-factor-nan", "Backoff.factor", rolling.Backoff, factor=NAN),
    bad("backoff-jitter-above-one", "Backoff.jitter", rolling.Backoff, jitter=1.5),
    bad("backoff-jitter-negative", "Backoff.jitter", rolling.Backoff, jitter=-0.1),
    bad("backoff-initial-negative", "Backoff.initial", rolling.Backoff, initial=-1),
    bad("backoff-maximum-inf", "Backoff.maximum", rolling.Backoff, maximum=INF),
    # ProgressDeadline
    bad("deadline-zero", "ProgressDeadline.seconds", rolling.ProgressDeadline, 0),
    bad("deadline-negative", "ProgressDeadline.seconds", rolling.ProgressDeadline, -5),
    bad("deadline-nan", "ProgressDeadline.seconds", rolling.ProgressDeadline, NAN),
    bad(
        "deadline-action-unknown",
        "ProgressDeadline.action",
        rolling.ProgressDeadline,
        10,
        action="explode",
    ),
    bad(
        "deadline-action-upper-case",
        "ProgressDeadline.action",
        rolling.ProgressDeadline,
        10,
        action="REPORT",
    ),
    bad(
        "deadline-action-none", "ProgressDeadline.action", rolling.ProgressDeadline, 10, action=None
    ),
    # Gate
    bad("gate-check-not-callable", "Gate.check", rolling.Gate, "not callable"),
    bad("gate-timeout-zero", "Gate.timeout", rolling.Gate, _healthy, timeout=0),
    bad("gate-timeout-nan", "Gate.timeout", rolling.Gate, _healthy, timeout=NAN),
    bad("gate-name-int", "Gate.name", rolling.Gate, _healthy, name=5),
    # Pause
    bad("pause-negative", "Pause.seconds", rolling.Pause, -1),
    bad("pause-nan", "Pause.seconds", rolling.Pause, NAN),
    bad("pause-inf", "Pause.seconds", rolling.Pause, INF),
    bad("pause-str", "Pause.seconds", rolling.Pause, "10"),
    bad("pause-int-beyond-float", "Pause.seconds", rolling.Pause, 10**400),
    # Advance
    bad("advance-zero", "Advance.to", rolling.Advance, 0),
    bad("advance-zero-pct", "Advance.to", rolling.Advance, "0%"),
    bad("advance-negative", "Advance.to", rolling.Advance, -1),
    bad("advance-junk", "Advance.to", rolling.Advance, "abc"),
    bad("advance-bool", "Advance.to", rolling.Advance, True),
    # Order
    bad("order-by-not-callable", "Order.by.key", rolling.Order.by, "nope"),
    bad("order-shuffled-str-seed", "Order.shuffled.seed", rolling.Order.shuffled, "seed"),
    bad("order-shuffled-bool-seed", "Order.shuffled.seed", rolling.Order.shuffled, True),
    bad("rollout-seed-list", "Rollout.seed", _rollout_of_two, seed=[1]),
    bad("rollout-seed-float", "Rollout.seed", _rollout_of_two, seed=1.5),
    # Bools: a string such as "no" is truthy, so it is refused rather than taken as True
    bad(
        "bluegreen-auto-promote-str",
        "BlueGreen.auto_promote",
        rolling.BlueGreen,
        auto_promote="yes",
    ),
    bad(
        "canary-scale-match-str",
        "SetCanaryScale.match_traffic_weight",
        rolling.SetCanaryScale,
        match_traffic_weight="yes",
    ),
    bad(
        "metric-dry-run-str",
        "Metric.dry_run",
        rolling.Metric,
        name="m",
        provider=_zone,
        failure=_zone,
        dry_run="no",
    ),
    # Waves
    bad("waves-key-int", "Waves.key", rolling.Waves, key=42),
    bad("waves-order-str", "Waves.order", rolling.Waves, _zone, order="abc"),
    bad("waves-order-int", "Waves.order", rolling.Waves, _zone, order=5),
    bad("waves-order-unhashable", "Waves.order", rolling.Waves, _zone, order=[["a"]]),
]


@pytest.mark.parametrize(("factory", "args", "kwargs", "field"), INVALID)
def test_invalid_configuration_names_the_field_and_the_fix(
    factory: Callable[..., object],
    args: tuple[object, ...],
    kwargs: dict[str, object],
    field: str,
) -> None:
    with pytest.raises(rolling.ConfigError) as info:
        factory(*args, **kwargs)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.field == field
    assert err.problem
    assert err.fix
    assert str(err).startswith(f"{field}: ")
    assert str(err).endswith(err.fix)


def test_invalid_table_is_large_and_ids_are_unique() -> None:
    ids = [param.id for param in INVALID]
    assert len(ids) >= 30
    assert len(set(ids)) == len(ids)


def test_config_error_is_a_value_error_and_a_rolling_error() -> None:
    with pytest.raises(ValueError, match=r"^RollingUpdate\.max_surge: ") as info:
        rolling.RollingUpdate(max_surge=-1)
    assert isinstance(info.value, rolling.RollingError)
    assert issubclass(rolling.ConfigError, ValueError)


def valid(
    case_id: str,
    factory: Callable[[], object],
    fields: dict[str, object],
    place: Callable[[Any], dict[str, Any]],
    *,
    promotions: int = 0,
) -> Any:
    """One row of the valid-configuration table.

    ``factory()`` must build a value whose ``fields`` hold what was passed (or resolved), and
    ``place(value)`` gives the :class:`~rolling.Rollout` options that put it to use; a rollout
    with them must run to success, ``promotions`` times promoted past an open-ended pause.
    """
    return pytest.param(factory, fields, place, promotions, id=case_id)


def as_strategy(value: Any) -> dict[str, Any]:
    return {"strategy": value}


def as_readiness(value: Any) -> dict[str, Any]:
    return {"readiness": value}


def as_step(value: Any) -> dict[str, Any]:
    return {"steps": [value]}


DEFAULT_READINESS: dict[str, object] = {
    "check": None,
    "initial_delay": 0.0,
    "period": 1.0,
    "timeout": 1.0,
    "success_threshold": 1,
    "failure_threshold": None,
    "min_ready": 0.0,
    "deadline": 300.0,
}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("factory", "fields", "place", "promotions"),
    [
        valid(
            "rolling-update-defaults",
            rolling.RollingUpdate,
            {"max_unavailable": 1, "max_surge": 0, "wants_surge": False},
            as_strategy,
        ),
        valid(
            "rolling-update-spaced-and-decimal-pct",
            lambda: rolling.RollingUpdate(max_unavailable=" 25 % ", max_surge="12.5%"),
            {"max_unavailable": " 25 % ", "max_surge": "12.5%", "wants_surge": True},
            as_strategy,
        ),
        valid(
            "surge",
            lambda: rolling.RollingUpdate(max_unavailable=0, max_surge=1),
            {"max_unavailable": 0, "max_surge": 1, "wants_surge": True},
            as_strategy,
        ),
        valid(
            "pct",
            lambda: rolling.RollingUpdate(max_unavailable="0%", max_surge="1%"),
            {"max_unavailable": "0%", "max_surge": "1%", "wants_surge": True},
            as_strategy,
        ),
        valid("readiness-defaults", rolling.Readiness, DEFAULT_READINESS, as_readiness),
        valid(
            "readiness-deadline-just-above",
            lambda: rolling.Readiness(initial_delay=5, min_ready=5, deadline=10.001),
            {**DEFAULT_READINESS, "initial_delay": 5, "min_ready": 5, "deadline": 10.001},
            as_readiness,
        ),
        valid(
            "readiness-check",
            lambda: rolling.Readiness(check=_ready),
            {**DEFAULT_READINESS, "check": _ready},
            as_readiness,
        ),
        valid(
            "batches-half-percent",
            lambda: rolling.Batches("0.5%"),
            {"sizes": ("0.5%",), "pause": None, "surge": False, "wants_surge": False},
            as_strategy,
        ),
        valid(
            "batches-pause",
            lambda: rolling.Batches(1, pause=rolling.Pause(5)),
            {"sizes": (1,), "pause": rolling.Pause(5), "surge": False},
            as_strategy,
        ),
        valid(
            "batches-gate",
            lambda: rolling.Batches(1, pause=rolling.Gate(_healthy)),
            {"sizes": (1,), "pause": rolling.Gate(_healthy, name="gate", timeout=None)},
            as_strategy,
        ),
        valid(
            "fp-0pct",
            lambda: rolling.FailurePolicy(max_failed_per_batch="0%"),
            {
                "retries": 0,
                "backoff": rolling.Backoff(),
                "max_failed": 0,
                "max_failed_per_batch": "0%",
                "circuit_breaker": None,
                "restore_failed": True,
            },
            # A per-batch share applies to Batches only.
            lambda v: {"failure": v, "strategy": rolling.Batches(2)},
        ),
        valid(
            "backoff-bounds",
            lambda: rolling.Backoff(factor=1, jitter=1),
            {"initial": 1.0, "factor": 1, "maximum": 60.0, "jitter": 1},
            lambda v: {"failure": rolling.FailurePolicy(retries=1, backoff=v)},
        ),
        valid("pause-zero", lambda: rolling.Pause(0), {"seconds": 0}, as_step),
        valid("pause-until-promoted", rolling.Pause, {"seconds": None}, as_step, promotions=1),
        valid("advance-half-percent", lambda: rolling.Advance("0.5%"), {"to": "0.5%"}, as_step),
        valid("advance-all", lambda: rolling.Advance("100%"), {"to": "100%"}, as_step),
        valid(
            "waves-list-order",
            lambda: rolling.Waves(_zone, order=["b", "a"]),
            {"key": _zone, "order": ("b", "a")},  # the list is kept as a tuple
            lambda v: {"waves": v},
        ),
    ],
)
async def test_valid_configurations_are_accepted_kept_frozen_and_used(
    factory: Callable[[], attrs.AttrsInstance],
    fields: dict[str, object],
    place: Callable[[Any], dict[str, Any]],
    promotions: int,
) -> None:
    value = factory()
    assert {name: getattr(value, name) for name in fields} == fields
    # A frozen value object: equal to (and hashed like) one built the same way, never changed.
    assert value == factory()
    assert hash(value) == hash(factory())
    first = attrs.fields(type(value))[0].name
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        setattr(value, first, getattr(value, first))

    # A rollout takes it where it belongs, and runs with it to the end.
    fleet = SimulatedFleet(4, zones=("a", "b"))
    rollout = rolling.Rollout(fleet, "v2", router=fleet, **place(value))
    monitor = monitor_for(rollout, fleet)
    promoted = 0
    async with rollout.start() as handle:
        while not (snapshot := handle.status()).status.finished:
            if isinstance(snapshot.step, rolling.Pause) and snapshot.step.seconds is None:
                handle.promote()
                promoted += 1
            await anyio.sleep(1)
    assert handle.result.status is rolling.RolloutStatus.SUCCEEDED, handle.result.reason
    assert fleet.version_counts() == {"v2": 4}
    assert promoted == promotions
    monitor.check_result(handle.result, fleet)


# -- 2. Kubernetes rounding ---------------------------------------------------


@pytest.mark.parametrize(
    ("max_unavailable", "max_surge", "desired", "unavailable", "surge"),
    [
        pytest.param("25%", "25%", 10, 2, 3, id="10-replicas-25pct-25pct"),
        pytest.param("25%", "25%", 1, 0, 1, id="1-replica-25pct-25pct"),
        pytest.param("25%", 0, 1, 1, 0, id="1-replica-both-resolve-to-zero"),
        pytest.param("50%", "50%", 3, 1, 2, id="3-replicas-50pct-50pct"),
        pytest.param("1%", 0, 100, 1, 0, id="100-replicas-1pct"),
        pytest.param("1%", 0, 99, 1, 0, id="99-replicas-1pct-rounds-to-zero-then-one"),
        pytest.param("10%", "0%", 5, 1, 0, id="5-replicas-10pct-rounds-to-zero-then-one"),
        pytest.param("25%", "25%", 0, 0, 0, id="0-replicas-pct"),
        pytest.param(1, 0, 0, 0, 0, id="0-replicas-count-clamped"),
        pytest.param(0, 1, 0, 0, 1, id="0-replicas-surge-count-kept"),
        pytest.param(5, 0, 3, 3, 0, id="unavailable-count-clamped-to-desired"),
        pytest.param(1, 10, 4, 1, 10, id="surge-count-used-as-is"),
        pytest.param(2, 3, 10, 2, 3, id="counts-used-as-is"),
        pytest.param(0, "10%", 5, 0, 1, id="surge-pct-rounds-up"),
        pytest.param("0%", "25%", 3, 0, 1, id="zero-pct-unavailable"),
        pytest.param("100%", 0, 7, 7, 0, id="all-unavailable"),
        pytest.param(0, "100%", 7, 0, 7, id="all-surge"),
        pytest.param("33%", "33%", 10, 3, 4, id="33pct-down-and-up"),
        pytest.param("12.5%", "12.5%", 8, 1, 1, id="decimal-pct-exact"),
        pytest.param("8.8%", "8.8%", 375, 33, 33, id="decimal-pct-no-float-error"),
        pytest.param("18.4%", "18.4%", 375, 69, 69, id="decimal-pct-no-float-error-down"),
    ],
)
def test_rolling_update_resolves_like_kubernetes(
    max_unavailable: int | str, max_surge: int | str, desired: int, unavailable: int, surge: int
) -> None:
    window = rolling.RollingUpdate(max_unavailable=max_unavailable, max_surge=max_surge).resolve(
        desired
    )
    assert window == ResolvedWindow(desired=desired, max_unavailable=unavailable, max_surge=surge)
    assert window.floor == desired - unavailable
    assert window.ceiling == desired + surge


def test_rolling_update_defaults_take_one_out_and_add_none() -> None:
    window = rolling.RollingUpdate().resolve(5)
    assert (window.max_unavailable, window.max_surge) == (1, 0)
    assert not rolling.RollingUpdate().wants_surge
    assert rolling.RollingUpdate(max_surge="1%").wants_surge


def test_resolved_window_floor_and_ceiling() -> None:
    window = rolling.RollingUpdate(max_unavailable="25%", max_surge="25%").resolve(10)
    assert window.floor == 8
    assert window.ceiling == 13
    assert ResolvedWindow(desired=2, max_unavailable=5, max_surge=0).floor == 0
    assert ResolvedWindow(desired=0, max_unavailable=0, max_surge=2).ceiling == 2


# -- 3. Ansible serial --------------------------------------------------------


@pytest.mark.parametrize(
    ("sizes", "fleet", "expected"),
    [
        pytest.param(("30%",), 20, [6, 6, 6, 2], id="20-hosts-30pct"),
        pytest.param((1, 5, "20%"), 23, [1, 5, 4, 4, 4, 4, 1], id="1-5-20pct-on-23"),
        pytest.param((1,), 3, [1, 1, 1], id="one-at-a-time"),
        pytest.param(("1%",), 50, [1] * 50, id="1pct-of-50-is-int-0.5-or-1"),
        pytest.param(("0.5%",), 10, [1] * 10, id="half-pct-or-1"),
        pytest.param((10,), 4, [4], id="count-larger-than-fleet"),
        pytest.param((2, "100%"), 7, [2, 5], id="then-the-rest"),
        pytest.param((1,), 0, [], id="empty-fleet-count"),
        pytest.param(("50%",), 0, [], id="empty-fleet-pct"),
        pytest.param(("50%",), 1, [1], id="half-of-one"),
        pytest.param(("50%",), 5, [2, 2, 1], id="half-of-five-rounds-down"),
        pytest.param((1, 2, 3), 10, [1, 2, 3, 3, 1], id="last-size-repeats"),
        pytest.param((1, 2, 3), 2, [1, 1], id="fleet-runs-out-early"),
        pytest.param((5, 1), 8, [5, 1, 1, 1], id="shrinking-sizes"),
        pytest.param(("100%",), 9, [9], id="all-at-once"),
        pytest.param(("29%",), 100, [29, 29, 29, 13], id="29pct-of-100-has-no-float-error"),
        pytest.param(("18.4%",), 375, [69] * 5 + [30], id="decimal-pct-exact"),
    ],
)
def test_batches_resolve_like_ansible_serial(
    sizes: tuple[int | str, ...], fleet: int, expected: list[int]
) -> None:
    resolved = rolling.Batches(*sizes).resolve(fleet)
    assert resolved == expected
    assert sum(resolved) == fleet


def test_batches_keep_their_options() -> None:
    pause = rolling.Pause(30)
    batches = rolling.Batches(1, "50%", pause=pause, surge=True)
    assert batches.sizes == (1, "50%")
    assert batches.pause is pause
    assert batches.surge
    assert batches.wants_surge
    assert not rolling.Batches(1).wants_surge
    assert rolling.Batches(1).pause is None


# -- 4. properties ------------------------------------------------------------

_PERCENT: st.SearchStrategy[str] = st.one_of(
    st.integers(0, 100).map(lambda pct: f"{pct}%"),
    st.integers(0, 10_000).map(lambda hundredths: f"{hundredths // 100}.{hundredths % 100:02d}%"),
    st.integers(0, 100).map(lambda pct: f" {pct} %"),
)
_POSITIVE_PERCENT = _PERCENT.filter(lambda text: float(text.strip().rstrip("%")) > 0)
_BATCH_SIZE: st.SearchStrategy[int | str] = st.one_of(st.integers(1, 600), _POSITIVE_PERCENT)
_WINDOW_VALUE: st.SearchStrategy[int | str] = st.one_of(st.integers(0, 600), _PERCENT)


def _exact_pct(value: str) -> Fraction:
    """An independent, exact reading of a percentage string: the test oracle."""
    return Fraction(value.strip().removesuffix("%").strip())


def _spells_zero(value: int | str) -> bool:
    return value == 0 if isinstance(value, int) else _exact_pct(value) == 0


@given(sizes=st.lists(_BATCH_SIZE, min_size=1, max_size=6), fleet=st.integers(0, 500))
def test_batches_always_cover_the_fleet(sizes: list[int | str], fleet: int) -> None:
    resolved = rolling.Batches(*sizes).resolve(fleet)
    assert sum(resolved) == fleet
    assert all(size >= 1 for size in resolved)
    assert len(resolved) <= fleet
    # every batch has its spec's size (Ansible: int(pct * N / 100) or 1), but the last may be short
    for index, size in enumerate(resolved):
        spec = sizes[min(index, len(sizes) - 1)]
        wanted = spec if isinstance(spec, int) else math.floor(_exact_pct(spec) * fleet / 100) or 1
        if index < len(resolved) - 1:
            assert size == wanted
        else:
            assert size <= wanted


@given(max_unavailable=_WINDOW_VALUE, max_surge=_WINDOW_VALUE, desired=st.integers(0, 500))
def test_rolling_update_window_is_always_usable(
    max_unavailable: int | str, max_surge: int | str, desired: int
) -> None:
    if _spells_zero(max_unavailable) and _spells_zero(max_surge):
        with pytest.raises(rolling.ConfigError, match=r"^RollingUpdate\.max_unavailable: "):
            rolling.RollingUpdate(max_unavailable=max_unavailable, max_surge=max_surge)
        return
    strategy = rolling.RollingUpdate(max_unavailable=max_unavailable, max_surge=max_surge)
    window = strategy.resolve(desired)
    assert window.desired == desired
    assert 0 <= window.max_unavailable <= desired
    assert window.max_surge >= 0
    if desired > 0:
        assert window.max_unavailable + window.max_surge > 0
    assert 0 <= window.floor <= desired <= window.ceiling
    # exact Kubernetes rounding, checked against an independent exact oracle
    surge = (
        max_surge
        if isinstance(max_surge, int)
        else math.ceil(_exact_pct(max_surge) * desired / 100)
    )
    unavailable = min(
        max_unavailable
        if isinstance(max_unavailable, int)
        else math.floor(_exact_pct(max_unavailable) * desired / 100),
        desired,
    )
    if surge == 0 and unavailable == 0 and desired > 0:
        unavailable = 1
    assert (window.max_unavailable, window.max_surge) == (unavailable, surge)


# -- 5. other behaviour -------------------------------------------------------


@pytest.mark.parametrize(
    ("max_failed", "fleet", "budget"),
    [
        pytest.param(0, 10, 0, id="default-none-tolerated"),
        pytest.param(3, 10, 3, id="count"),
        pytest.param(3, 0, 3, id="count-ignores-fleet"),
        pytest.param("10%", 25, 2, id="pct-rounds-down"),
        pytest.param("10%", 9, 0, id="pct-below-one"),
        pytest.param("0%", 100, 0, id="zero-pct"),
        pytest.param("100%", 7, 7, id="all"),
        pytest.param("8.8%", 375, 33, id="decimal-pct-exact"),
        pytest.param("18.4%", 375, 69, id="decimal-pct-exact-down"),
    ],
)
def test_failure_budget(max_failed: int | str, fleet: int, budget: int) -> None:
    assert rolling.FailurePolicy(max_failed=max_failed).budget(fleet) == budget


def test_failure_policy_defaults() -> None:
    policy = rolling.FailurePolicy()
    assert policy.retries == 0
    assert policy.backoff == rolling.Backoff()
    assert policy.budget(100) == 0
    assert policy.max_failed_per_batch is None
    assert policy.circuit_breaker is None


@pytest.mark.parametrize(
    ("per_batch", "failed", "size", "exceeded"),
    [
        pytest.param("30%", 3, 10, False, id="30pct-of-10-tolerates-3"),
        pytest.param("30%", 4, 10, True, id="30pct-of-10-exceeded-at-4"),
        pytest.param("30%", 0, 10, False, id="no-failures"),
        pytest.param("50%", 1, 2, False, id="half-reached-not-exceeded"),
        pytest.param("50%", 2, 2, True, id="all-failed"),
        pytest.param("0%", 0, 5, False, id="zero-pct-no-failures"),
        pytest.param("0%", 1, 5, True, id="zero-pct-any-failure"),
        pytest.param("100%", 5, 5, False, id="all-may-fail"),
        pytest.param("33.3%", 1, 3, True, id="decimal-pct"),
        pytest.param("30%", 1, 0, False, id="empty-batch"),
        pytest.param(None, 10, 10, False, id="no-limit"),
    ],
)
def test_batch_exceeded_means_more_than_the_share(
    per_batch: str | None, failed: int, size: int, exceeded: bool
) -> None:
    policy = rolling.FailurePolicy(max_failed_per_batch=per_batch)
    assert policy.batch_exceeded(failed, size) is exceeded


def test_backoff_grows_exponentially_up_to_the_cap() -> None:
    backoff = rolling.Backoff(initial=1, factor=2, maximum=10)
    assert [backoff.delay(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    constant = rolling.Backoff(initial=3, factor=1)
    assert [constant.delay(n) for n in range(1, 4)] == [3, 3, 3]


def test_backoff_never_overflows() -> None:
    assert rolling.Backoff().delay(5000) == 60.0
    assert rolling.Backoff(factor=2).delay(5000) == 60.0
    assert rolling.Backoff(initial=0).delay(5000) == 0.0


def test_backoff_jitter_stays_within_its_fraction() -> None:
    backoff = rolling.Backoff(initial=4, factor=1, jitter=0.5)
    rng = random.Random(1234)
    delays = [backoff.delay(1, rng) for _ in range(200)]
    assert all(2 <= delay <= 4 for delay in delays)
    assert len(set(delays)) > 1
    assert min(delays) < 2.5
    assert max(delays) > 3.5
    # the same seed gives the same delays
    again = random.Random(1234)
    assert [backoff.delay(1, again) for _ in range(200)] == delays
    # without a random source there is no jitter
    assert backoff.delay(1) == 4


def test_backoff_full_jitter_and_cap() -> None:
    backoff = rolling.Backoff(initial=1, factor=10, maximum=5, jitter=1)
    rng = random.Random(7)
    for attempt in range(1, 10):
        delay = backoff.delay(attempt, rng)
        assert 0 < delay <= min(5, 10 ** (attempt - 1))


def test_progress_deadline_action() -> None:
    assert rolling.ProgressDeadline(60, "report").action is rolling.DeadlineAction.REPORT
    assert rolling.ProgressDeadline(60).action is rolling.DeadlineAction.ROLLBACK
    deadline = rolling.ProgressDeadline(60, action=rolling.DeadlineAction.HALT)
    assert deadline.action is rolling.DeadlineAction.HALT
    assert deadline == rolling.ProgressDeadline(60, "halt")
    assert deadline.seconds == 60


FLEET = [
    Inst("c", zone="east"),
    Inst("a", zone="west"),
    Inst("d", zone="east"),
    Inst("b", zone="north"),
    Inst("e", zone="west"),
]


def _ids(instances: list[Any]) -> list[str]:
    return [instance.id for instance in instances]


def test_order_inventory_keeps_the_driver_order() -> None:
    arranged = rolling.Order.inventory().arrange(FLEET)
    assert arranged == FLEET
    assert arranged is not FLEET
    assert rolling.Order.inventory() == rolling.Order()


def test_order_sorted_by_id() -> None:
    assert _ids(rolling.Order.sorted().arrange(FLEET)) == ["a", "b", "c", "d", "e"]
    assert _ids(rolling.Order.sorted(reverse=True).arrange(FLEET)) == ["e", "d", "c", "b", "a"]


def test_order_by_key_is_stable_for_ties() -> None:
    assert _ids(rolling.Order.by(_zone).arrange(FLEET)) == ["c", "d", "b", "a", "e"]
    assert _ids(rolling.Order.by(_zone, reverse=True).arrange(FLEET)) == [
        "a",
        "e",
        "b",
        "c",
        "d",
    ]


def test_order_shuffled_is_a_deterministic_permutation() -> None:
    fleet = [Inst(f"i{n:02d}") for n in range(30)]
    first = rolling.Order.shuffled(42).arrange(fleet)
    assert rolling.Order.shuffled(42).arrange(fleet) == first
    assert sorted(_ids(first)) == _ids(fleet)
    assert first != fleet
    others = [rolling.Order.shuffled(seed).arrange(fleet) for seed in range(5)]
    assert any(other != first for other in others)
    assert fleet == [Inst(f"i{n:02d}") for n in range(30)]  # the input is left alone


def test_order_arrange_on_an_empty_fleet() -> None:
    for order in (
        rolling.Order.inventory(),
        rolling.Order.sorted(),
        rolling.Order.shuffled(1),
        rolling.Order.by(_zone),
    ):
        assert order.arrange([]) == []


def test_waves_group_by_first_appearance() -> None:
    waves = rolling.Waves(_zone).split(FLEET)
    assert [_ids(wave) for wave in waves] == [["c", "d"], ["a", "e"], ["b"]]


def test_waves_honour_an_explicit_order_and_put_the_rest_last() -> None:
    waves = rolling.Waves(_zone, order=("north", "west")).split(FLEET)
    assert [_ids(wave) for wave in waves] == [["b"], ["a", "e"], ["c", "d"]]
    listed = rolling.Waves(_zone, order=["west"])
    assert listed.order == ("west",)
    assert [_ids(wave) for wave in listed.split(FLEET)] == [["a", "e"], ["c", "d"], ["b"]]


def test_waves_ignore_listed_keys_with_no_instances() -> None:
    waves = rolling.Waves(_zone, order=("south", "east")).split(FLEET)
    assert [_ids(wave) for wave in waves] == [["c", "d"], ["a", "e"], ["b"]]
    assert rolling.Waves(_zone).split([]) == []


def test_steps_keep_their_values() -> None:
    assert rolling.Pause().seconds is None
    assert rolling.Pause(2.5).seconds == 2.5
    gate = rolling.Gate(_healthy, name="error-rate", timeout=5)
    assert (gate.check, gate.name, gate.timeout) == (_healthy, "error-rate", 5)
    assert rolling.Gate(_healthy).name == "gate"
    assert rolling.Advance("10%").to == "10%"


FROZEN = [
    pytest.param(rolling.RollingUpdate(), "max_surge", id="RollingUpdate"),
    pytest.param(
        ResolvedWindow(desired=1, max_unavailable=1, max_surge=0),
        "desired",
        id="ResolvedWindow",
    ),
    pytest.param(rolling.Batches(1), "sizes", id="Batches"),
    pytest.param(rolling.Readiness(), "period", id="Readiness"),
    pytest.param(rolling.FailurePolicy(), "retries", id="FailurePolicy"),
    pytest.param(rolling.Backoff(), "initial", id="Backoff"),
    pytest.param(rolling.ProgressDeadline(5), "seconds", id="ProgressDeadline"),
    pytest.param(rolling.Order.sorted(), "kind", id="Order"),
    pytest.param(rolling.Waves(_zone), "key", id="Waves"),
    pytest.param(rolling.Pause(1), "seconds", id="Pause"),
    pytest.param(rolling.Gate(_healthy), "name", id="Gate"),
    pytest.param(rolling.Advance(1), "to", id="Advance"),
]


@pytest.mark.parametrize(("value", "field"), FROZEN)
def test_value_objects_are_frozen(value: object, field: str) -> None:
    before = getattr(value, field)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        setattr(value, field, 99)
    assert getattr(value, field) is before


@pytest.mark.parametrize(
    ("make", "make_other"),
    [
        pytest.param(
            lambda: rolling.RollingUpdate(max_unavailable="25%", max_surge=1),
            lambda: rolling.RollingUpdate(max_unavailable="25%", max_surge=2),
            id="RollingUpdate",
        ),
        pytest.param(
            lambda: rolling.RollingUpdate(max_unavailable="25%").resolve(10),
            lambda: rolling.RollingUpdate(max_unavailable="25%").resolve(11),
            id="ResolvedWindow",
        ),
        pytest.param(
            lambda: rolling.Batches(1, "20%", pause=rolling.Pause(5)),
            lambda: rolling.Batches(1, "20%", pause=rolling.Pause(6)),
            id="Batches",
        ),
        pytest.param(
            lambda: rolling.Readiness(check=_healthy, min_ready=5),
            lambda: rolling.Readiness(check=_also_healthy, min_ready=5),
            id="Readiness",
        ),
        pytest.param(
            lambda: rolling.FailurePolicy(retries=2, backoff=rolling.Backoff(initial=2)),
            lambda: rolling.FailurePolicy(retries=2, backoff=rolling.Backoff(initial=3)),
            id="FailurePolicy",
        ),
        pytest.param(
            lambda: rolling.Backoff(jitter=0.1),
            lambda: rolling.Backoff(jitter=0.2),
            id="Backoff",
        ),
        pytest.param(
            lambda: rolling.ProgressDeadline(60, "report"),
            lambda: rolling.ProgressDeadline(60, "halt"),
            id="ProgressDeadline",
        ),
        pytest.param(
            lambda: rolling.Order.shuffled(1),
            lambda: rolling.Order.shuffled(2),
            id="Order",
        ),
        pytest.param(
            lambda: rolling.Waves(_zone, order=["a", "b"]),
            lambda: rolling.Waves(_zone, order=["b", "a"]),
            id="Waves",
        ),
        pytest.param(lambda: rolling.Pause(5), rolling.Pause, id="Pause"),
        pytest.param(
            lambda: rolling.Gate(_healthy, name="x"),
            lambda: rolling.Gate(_healthy, name="y"),
            id="Gate",
        ),
        pytest.param(lambda: rolling.Advance("10%"), lambda: rolling.Advance(10), id="Advance"),
    ],
)
def test_value_objects_are_equal_and_hashable_by_value(
    make: Callable[[], object], make_other: Callable[[], object]
) -> None:
    one, two, other = make(), make(), make_other()
    assert one is not two
    assert one == two
    assert hash(one) == hash(two)
    assert one != other
    assert len({one, two, other}) == 2


def test_percent_of_an_unusual_fleet_never_goes_out_of_range() -> None:
    # 100% of anything is everything, exactly, for both rounding directions
    for desired in (1, 3, 7, 99, 375, 1000):
        window = rolling.RollingUpdate(max_unavailable="100%", max_surge="100%").resolve(desired)
        assert (window.max_unavailable, window.max_surge) == (desired, desired)
        assert rolling.Batches("100%").resolve(desired) == [desired]
        assert rolling.FailurePolicy(max_failed="100%").budget(desired) == desired


@pytest.mark.parametrize(
    ("to", "desired", "wanted"),
    [(3, 10, 3), (30, 10, 10), ("25%", 10, 3), ("20%", 10, 2), ("100%", 7, 7), ("1%", 1000, 10)],
)
def test_an_advance_resolves_its_target_for_a_fleet(
    to: int | str, desired: int, wanted: int
) -> None:
    assert rolling.Advance(to).resolve(desired) == wanted

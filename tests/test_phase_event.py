"""The engine's fast way of making InstancePhaseChanged makes the same event as the class."""

from __future__ import annotations

import pickle
from typing import Any

import attrs
import pytest

import rolling
from rolling import _phase_event
from rolling._frozen_builder import builder_class
from rolling.events import InstancePhaseChanged, Phase
from rolling.testing import SimulatedFleet

_ARGS: list[tuple[Any, ...]] = [
    (1.5, 1700000000.25, "i-001", Phase.DETACHING, "v2", 1, "i-001", "", False),
    (0.0, 0.0, "i-002", Phase.FAILED, "v1", 3, None, "replace raised", True),
]


@pytest.mark.parametrize("args", _ARGS)
def test_same_event_as_the_class(args: tuple[Any, ...]) -> None:
    fast = _phase_event.make_phase_event(*args)
    plain = InstancePhaseChanged(**dict(zip(_phase_event.FIELDS, args, strict=True)))
    assert _phase_event.make_phase_event.__qualname__ == "make"  # the fast path is on
    assert _phase_event.PHASE_EVENT_BUILDER is not None  # ... and Machine.phase's too
    assert type(fast) is InstancePhaseChanged
    assert fast == plain
    assert hash(fast) == hash(plain)
    assert repr(fast) == repr(plain)
    assert attrs.asdict(fast) == attrs.asdict(plain)
    assert pickle.loads(pickle.dumps(fast)) == plain  # noqa: S301 - our own bytes


def test_still_frozen() -> None:
    event = _phase_event.make_phase_event(*_ARGS[0])
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        event.reason = "changed"  # type: ignore[misc]


def test_a_class_it_was_not_written_for_falls_back() -> None:
    @attrs.frozen(kw_only=True)
    class Checked:
        at: float = attrs.field(validator=attrs.validators.instance_of(float))

    @attrs.frozen(kw_only=True)
    class Fewer:
        at: float

    @attrs.frozen(kw_only=True)
    class PostInit(InstancePhaseChanged):
        def __attrs_post_init__(self) -> None:
            pass

    @attrs.define(kw_only=True, slots=False)
    class NoSlots:
        at: float
        wall: float
        instance_id: str
        phase: Phase
        version: str
        attempt: int
        current_id: str | None
        reason: str
        rollback: bool

    others: tuple[Any, ...] = (Checked, Fewer, PostInit, NoSlots)
    for cls in others:
        assert builder_class(cls, _phase_event.FIELDS) is None, cls
    assert builder_class(InstancePhaseChanged, _phase_event.FIELDS) is not None


def test_evolve_and_fields_see_an_ordinary_event() -> None:
    fast = _phase_event.make_phase_event(*_ARGS[0])
    assert attrs.fields(type(fast)) == attrs.fields(InstancePhaseChanged)
    changed = attrs.evolve(fast, reason="later")
    assert type(changed) is InstancePhaseChanged
    assert changed.reason == "later"
    assert changed.instance_id == fast.instance_id


@pytest.mark.anyio
async def test_the_machines_events_are_the_same_as_the_class_makes() -> None:
    # Machine.phase writes the fast path out; what it makes must be the ordinary event too.
    seen: list[rolling.Event] = []
    rollout = rolling.Rollout(SimulatedFleet(3), "v2", observers=[seen.append])
    await rollout.run()
    phases = [event for event in seen if isinstance(event, InstancePhaseChanged)]
    assert len(phases) >= 3 * 5
    for event in phases:
        plain = InstancePhaseChanged(**attrs.asdict(event, recurse=False))
        assert type(event) is InstancePhaseChanged
        assert (event, hash(event), repr(event)) == (plain, hash(plain), repr(plain))

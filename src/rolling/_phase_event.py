"""A cheaper way to make :class:`~rolling.events.InstancePhaseChanged`, the commonest event.

Rules:

* The object made is an ordinary ``InstancePhaseChanged``: the same type, the same
  fields, equal (and hashing equal) to one made by calling the class. Only the way
  it is built differs: attrs' frozen ``__init__`` sets each field through
  ``object.__setattr__`` looked up per call, which costs three times what setting
  the slots directly does, and a rollout makes about eight of these per instance.
* The fast path is taken only when the class is what it was written for: slotted,
  no validator, converter, factory default or ``__attrs_post_init__``, and exactly
  the fields below. Anything else (a future change to the event) falls back to the
  class itself, so a change there can make this slower but never wrong;
  tests/test_phase_event.py holds the two to the same result.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from .events import InstancePhaseChanged, Phase

__all__ = ["make_phase_event"]

_FIELDS = (
    "at",
    "wall",
    "instance_id",
    "phase",
    "version",
    "attempt",
    "current_id",
    "reason",
    "rollback",
)

PhaseEventMaker = Callable[
    [float, float, str, Phase, str, int, "str | None", str, bool], InstancePhaseChanged
]


def _by_class(  # noqa: PLR0917 - one argument per field of the event
    at: float,
    wall: float,
    instance_id: str,
    phase: Phase,
    version: str,
    attempt: int,
    current_id: str | None,
    reason: str,
    rollback: bool,  # noqa: FBT001 - positional on purpose: this is the hot path
) -> InstancePhaseChanged:
    """The plain way, through the class (the fallback)."""
    return InstancePhaseChanged(
        at=at,
        wall=wall,
        instance_id=instance_id,
        phase=phase,
        version=version,
        attempt=attempt,
        current_id=current_id,
        reason=reason,
        rollback=rollback,
    )


def _slot_setters(cls: type) -> list[Callable[[object, object], None]] | None:
    """The slots' own setters for every field of ``cls``, or None if it is not plain."""
    if getattr(cls, "__attrs_post_init__", None) is not None:
        return None
    fields = attrs.fields(cls)
    if tuple(f.name for f in fields) != _FIELDS:
        return None
    if any(
        f.validator is not None
        or f.converter is not None
        or f.on_setattr not in (None, attrs.setters.NO_OP)
        for f in fields
    ):
        return None
    setters: list[Callable[[object, object], None]] = []
    for name in _FIELDS:
        descriptor = next((k.__dict__[name] for k in cls.__mro__ if name in k.__dict__), None)
        # A slot is a member descriptor: its __set__ writes the slot, past the frozen
        # class's __setattr__ (which only refuses changes after construction).
        if type(descriptor).__name__ != "member_descriptor":
            return None
        setters.append(descriptor.__set__)  # type: ignore[union-attr]
    return setters


def _fast_maker(cls: type[InstancePhaseChanged]) -> PhaseEventMaker | None:
    setters = _slot_setters(cls)
    if setters is None:
        return None
    new = object.__new__
    s_at, s_wall, s_id, s_phase, s_version, s_attempt, s_current, s_reason, s_rollback = setters

    def make(  # noqa: PLR0917 - one argument per field of the event
        at: float,
        wall: float,
        instance_id: str,
        phase: Phase,
        version: str,
        attempt: int,
        current_id: str | None,
        reason: str,
        rollback: bool,  # noqa: FBT001 - positional on purpose: this is the hot path
    ) -> InstancePhaseChanged:
        event = new(cls)
        s_at(event, at)
        s_wall(event, wall)
        s_id(event, instance_id)
        s_phase(event, phase)
        s_version(event, version)
        s_attempt(event, attempt)
        s_current(event, current_id)
        s_reason(event, reason)
        s_rollback(event, rollback)
        return event

    return make


make_phase_event: PhaseEventMaker = _fast_maker(InstancePhaseChanged) or _by_class
"""Called with every field, positionally, in the order of ``_FIELDS``."""

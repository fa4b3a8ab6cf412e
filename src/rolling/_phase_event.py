"""A cheaper way to make :class:`~rolling.events.InstancePhaseChanged`, the commonest event.

Rules:

* The object made is an ordinary ``InstancePhaseChanged``: the same type, the same
  fields, equal (and hashing equal) to one made by calling the class. Only the way
  it is built differs: attrs' frozen ``__init__`` sets each field through
  ``object.__setattr__`` looked up per call, and a rollout makes about eight of
  these per instance.
* How: the object is first made as a private *builder* subclass that adds no slot
  and writes attributes the plain way (object's own ``__setattr__``, so each field
  is one slot store the interpreter specialises), then its ``__class__`` is set to
  the event's class. Python allows that assignment exactly when the two layouts are
  the same, which a subclass adding no slot guarantees; no code runs in between, so
  nothing ever sees the builder type. (The one trace: the builder is listed by
  ``InstancePhaseChanged.__subclasses__()``.)
* The fast path is taken only when the class is what it was written for: slotted,
  no validator, converter, factory default or ``__attrs_post_init__``, and exactly
  the fields below; and only once one event made both ways has proved equal at
  import. Anything else (a future change to the event, another interpreter) falls
  back to the class itself, so a change there can make this slower but never
  wrong; tests/test_phase_event.py holds the two to the same result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs

from .events import InstancePhaseChanged, Phase

__all__ = ["PHASE_EVENT_BUILDER", "make_phase_event"]

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


def _plain(cls: type) -> bool:
    """Whether ``cls`` is the plain slotted class the fast path was written for."""
    if getattr(cls, "__attrs_post_init__", None) is not None:
        return False
    fields = attrs.fields(cls)
    if tuple(f.name for f in fields) != _FIELDS:
        return False
    if any(
        f.validator is not None
        or f.converter is not None
        or f.on_setattr not in (None, attrs.setters.NO_OP)
        for f in fields
    ):
        return False
    for name in _FIELDS:
        descriptor = next((k.__dict__[name] for k in cls.__mro__ if name in k.__dict__), None)
        # A slot is a member descriptor: an attribute set on the builder lands in it.
        if type(descriptor).__name__ != "member_descriptor":
            return False
    return True


def _fast(cls: type[InstancePhaseChanged]) -> tuple[PhaseEventMaker, Any] | None:
    """The fast maker for ``cls`` and its builder class, once proved; None if not plain."""
    if not _plain(cls):
        return None
    try:
        # No slot of its own, so the same layout as cls; object's __setattr__ AND
        # __delattr__ (they share one slot of the type), or the stores are not plain.
        builder: Any = type(
            f"_{cls.__name__}Builder",
            (cls,),
            {
                "__slots__": (),
                "__setattr__": object.__setattr__,
                "__delattr__": object.__delattr__,
                "__module__": __name__,
            },
        )
    except TypeError:  # pragma: no cover - a class that cannot be subclassed
        return None
    new = object.__new__

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
        event = new(builder)
        event.at = at
        event.wall = wall
        event.instance_id = instance_id
        event.phase = phase
        event.version = version
        event.attempt = attempt
        event.current_id = current_id
        event.reason = reason
        event.rollback = rollback
        event.__class__ = cls
        return event  # type: ignore[no-any-return]

    return (make, builder) if _proved(make, cls) else None


def _proved(make: PhaseEventMaker, cls: type[InstancePhaseChanged]) -> bool:
    """Whether ``make`` makes what ``cls`` does, field for field (checked once, at import)."""
    args: tuple[Any, ...] = (1.0, 2.0, "i", Phase.READY, "v", 2, None, "r", True)
    try:
        made = make(*args)
    except TypeError:  # pragma: no cover - __class__ refused: not the same layout after all
        return False
    expected = cls(**dict(zip(_FIELDS, args, strict=True)))
    return type(made) is cls and attrs.astuple(made) == attrs.astuple(expected)


_FAST = _fast(InstancePhaseChanged)

make_phase_event: PhaseEventMaker = _by_class if _FAST is None else _FAST[0]
"""Called with every field, positionally, in the order of ``_FIELDS``."""

PHASE_EVENT_BUILDER: Any = None if _FAST is None else _FAST[1]
"""The builder class when the fast path is on, else None.

For :meth:`rolling._machine.Machine.phase`, which writes ``make`` out (one Python
call fewer per event): ``object.__new__(PHASE_EVENT_BUILDER)``, every field set,
then ``__class__`` set to ``InstancePhaseChanged``, exactly as ``make`` does.
"""

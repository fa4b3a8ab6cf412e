"""A cheaper way to make :class:`~rolling.events.InstancePhaseChanged`, the commonest event.

Rules:

* A rollout makes about eight of these per instance when someone listens; each is made
  as :mod:`rolling._frozen_builder` makes its objects (a builder subclass with plain
  slot stores, then the event's class), and is an ordinary ``InstancePhaseChanged``:
  the same type and fields, equal and hashing equal to one made by calling the class.
* :meth:`Machine.phase <rolling._machine.Machine.phase>` writes the stores out itself
  with :data:`PHASE_EVENT_BUILDER` (one Python call fewer per event); when that is None
  (the class no longer fits the fast path), it calls :data:`make_phase_event`, which is
  then the class itself. tests/test_phase_event.py holds both to the class's result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._frozen_builder import builder_class, frozen_builder
from .events import InstancePhaseChanged, Phase

__all__ = ["PHASE_EVENT_BUILDER", "make_phase_event"]

FIELDS = (
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
"""The order of :data:`make_phase_event`'s arguments."""

PhaseEventMaker = Callable[
    [float, float, str, Phase, str, int, "str | None", str, bool], InstancePhaseChanged
]

make_phase_event: PhaseEventMaker = frozen_builder(InstancePhaseChanged, FIELDS)
"""Called with every field, positionally, in the order of :data:`FIELDS`."""

PHASE_EVENT_BUILDER: Any = builder_class(InstancePhaseChanged, FIELDS)
"""The builder subclass Machine.phase makes events as, or None: see the rules."""

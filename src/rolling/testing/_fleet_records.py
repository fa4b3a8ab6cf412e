"""What a :class:`~rolling.testing.SimulatedFleet` records and tells: snapshots, changes, calls.

Kept apart from the fleet's operations so each module stays small; everything
public here is exported by :mod:`rolling.testing`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Literal, NamedTuple

import attrs

from rolling.typing import FULL_WEIGHT

from ._faults import Fault

__all__ = [
    "DISRUPTIVE_OPERATIONS",
    "FleetCall",
    "FleetChange",
    "FleetListener",
    "Injected",
    "Record",
    "SimInstance",
    "width",
]

DISRUPTIVE_OPERATIONS = frozenset({"detach", "terminate", "replace", "weigh_out"})
"""Operations that take an instance out of service while they run."""


@attrs.frozen(kw_only=True)
class SimInstance:
    """A snapshot of one instance of a :class:`~rolling.testing.SimulatedFleet`.

    The fleet keeps the truth, keyed by ``id``; a snapshot never changes after
    it is handed out.

    Attributes:
        id: Identifier, unique in the fleet: ``"i-000"`` for the starting
            fleet, ``"n-000"`` for launched instances.
        version: The version it ran when the snapshot was taken.
        zone: Its zone, assigned round robin, for waves.
        generation: How many times it was replaced.

    .. versionadded:: 0.1.0
    """

    id: str
    version: str
    zone: str
    generation: int = 0


@attrs.frozen(kw_only=True)
class FleetChange:
    """One state change of a :class:`~rolling.testing.SimulatedFleet`, as told to listeners.

    Attributes:
        op: The operation (``"replace"``, ``"launch"``, ``"terminate"``,
            ``"detach"``, ``"attach"``), or ``"overlap"`` when an operation
            starts on an instance that is already being worked on.
        instance_id: The instance concerned (for ``launch``, the id the new
            instance will have).
        phase: ``"begin"`` is told once the operation is registered as in
            progress and before it changes anything; ``"end"`` once its effect
            has landed, or once it failed or was cancelled. ``"overlap"`` is
            always ``"begin"``.
        at: Event-loop time (``anyio.current_time()``).

    .. versionadded:: 0.1.0
    """

    op: str
    instance_id: str
    phase: Literal["begin", "end"]
    at: float


class FleetCall(NamedTuple):
    """One call made to a :class:`~rolling.testing.SimulatedFleet`, as logged in ``calls``.

    A plain tuple, so ``("replace", "i-000", "v2") in fleet.calls`` works.

    .. versionadded:: 0.1.0
    """

    op: str
    """The method called: an operation name or ``"list_instances"``."""
    instance_id: str | None
    """The instance (for ``launch``, the new id); None for ``list_instances``."""
    version: str | None
    """The version asked for (``replace``, ``launch``), else the instance's version then."""


FleetListener = Callable[[FleetChange], None]
"""A synchronous callback told about every :class:`FleetChange`."""


@attrs.define
class Record:
    """The fleet's truth about one instance."""

    id: str
    version: str
    zone: str
    generation: int = 0
    attached: bool = True
    running: bool = True
    launching: bool = False
    weight: int = FULL_WEIGHT
    # ``unhealthy_at_start``: unhealthy while it still runs this version.
    sick_version: str | None = None

    def snapshot(self) -> SimInstance:
        return SimInstance(
            id=self.id, version=self.version, zone=self.zone, generation=self.generation
        )


@attrs.define
class Injected:
    """One injected fault, with its own counters."""

    fault: Fault
    instance_id: str | None
    version: str | None
    raised: Counter[str] = attrs.field(factory=Counter[str])
    flap_anchor: dict[str, float] = attrs.field(factory=dict[str, float])

    def matches(self, instance_id: str, version: str) -> bool:
        return (self.instance_id is None or self.instance_id == instance_id) and (
            self.version is None or self.version == version
        )


def width(size: int) -> int:
    return max(3, len(str(max(size - 1, 0))))

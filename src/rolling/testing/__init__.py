"""Test your rollouts: a scripted fleet, an invariant monitor, an event recorder, virtual time.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from ._clock import VirtualTimeEventLoop, virtual_time_loop_factory
from ._errors import SimulatedFault, SimulationError
from ._faults import Fault, Latency
from ._fleet import FleetCall, FleetChange, SimInstance, SimulatedFleet
from ._journal import MemoryJournal
from ._monitor import InvariantMonitor, InvariantViolation
from ._recorder import EventRecorder

__all__ = [
    "EventRecorder",
    "Fault",
    "FleetCall",
    "FleetChange",
    "InvariantMonitor",
    "InvariantViolation",
    "Latency",
    "MemoryJournal",
    "SimInstance",
    "SimulatedFault",
    "SimulatedFleet",
    "SimulationError",
    "VirtualTimeEventLoop",
    "virtual_time_loop_factory",
]

"""Test your rollouts: a scripted fleet, an invariant monitor, an event recorder, virtual time.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from ._clock import VirtualTimeEventLoop, virtual_time_loop_factory

__all__ = ["VirtualTimeEventLoop", "virtual_time_loop_factory"]

"""Regression tests for the nine engine defects of issue 10, on both backends.

Each test is written against the public API only (``rolling``, ``rolling.testing``),
so that it keeps working whatever the engine looks like inside.
"""

from __future__ import annotations

import pathlib
from typing import Any

import anyio
import attrs
import pytest

import rolling
from rolling import (
    Advance,
    Batches,
    FailurePolicy,
    InstanceOutcome,
    Phase,
    Readiness,
    RollingUpdate,
    Rollout,
    RolloutStatus,
)
from rolling.testing import EventRecorder, InvariantMonitor, Latency, SimulatedFleet

pytestmark = pytest.mark.anyio

DOCS = pathlib.Path(__file__).parent.parent / "docs"


def _rollout(fleet: SimulatedFleet, **options: Any) -> tuple[Rollout[Any], InvariantMonitor]:
    """A rollout of v2 over ``fleet`` (driver, router and check), with a monitor on it."""
    options.setdefault("readiness", Readiness(check=fleet, period=1, timeout=1, deadline=30))
    rollout: Rollout[Any] = Rollout(fleet, "v2", router=fleet, **options)
    window = rollout.window(fleet.desired)
    monitor = InvariantMonitor(
        fleet, max_unavailable=window.max_unavailable, max_surge=window.max_surge
    )
    return rollout, monitor


# -- 1. a consumer that leaves the event stream early ------------------------------------------


async def test_defect_1_leaving_the_event_stream_early() -> None:
    fleet = SimulatedFleet(4, latency=Latency(replace=1))
    rollout, monitor = _rollout(fleet)
    seen: list[rolling.Event] = []
    async with rollout.start() as handle:
        async with handle.events() as events:
            async for event in events:
                seen.append(event)
                if isinstance(event, rolling.InstancePhaseChanged) and event.phase is Phase.UPDATED:
                    break
    # The consumer went away after the first instance; the rollout went on without it.
    assert isinstance(seen[-1], rolling.InstancePhaseChanged)
    result = handle.result
    assert result.status is RolloutStatus.SUCCEEDED
    assert result.counts == {InstanceOutcome.UPDATED: 4}
    assert set(fleet.attached_ids) == {"i-000", "i-001", "i-002", "i-003"}
    monitor.check_result(result, fleet)

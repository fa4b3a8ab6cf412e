"""Promises a second audit checked from the side of automation that embeds rolling.

The testing toolkit, the command line as a pipeline sees it, and recovery with journals and
locks of one's own, written from :mod:`rolling.typing`; public API only.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import pytest

import rolling
from rolling import Readiness, RollingUpdate, Rollout, RolloutStatus
from rolling.testing import EventRecorder, InvariantMonitor, SimulatedFleet
from rolling.typing import JournalRecord

pytestmark = pytest.mark.anyio

MUTATING = frozenset({"detach", "attach", "replace", "launch", "terminate", "set_weight"})


class LinesJournal:
    """A journal of JSON lines in memory, as a database-backed one would keep them.

    Records go through ``json.dumps`` (nothing is shared with the engine); with ``fail_after``
    every append after that many raises ``OSError`` (a full disk), and what was written before
    stays, as it would on disk.
    """

    def __init__(self, lines: Sequence[str] = (), *, fail_after: int | None = None) -> None:
        self.lines = list(lines)
        self.fail_after = fail_after
        self.appends = 0
        self.closes = 0

    async def load(self) -> list[JournalRecord]:
        return [json.loads(line) for line in self.lines]

    async def append(self, record: JournalRecord, *, sync: bool = False) -> None:
        del sync  # every line is kept at once
        self.appends += 1
        if self.fail_after is not None and self.appends > self.fail_after:
            raise OSError(28, "No space left on device")
        self.lines.append(json.dumps(record))

    async def close(self) -> None:
        self.closes += 1


class LaunchOnly:
    """An elastic driver over a simulated fleet: no ``replace``, so the engine launches."""

    def __init__(self, fleet: SimulatedFleet) -> None:
        self.fleet = fleet

    async def list_instances(self) -> Any:
        return await self.fleet.list_instances()

    async def launch(self, version: str) -> Any:
        return await self.fleet.launch(version)

    async def terminate(self, instance: Any) -> None:
        await self.fleet.terminate(instance)


def in_place(fleet: SimulatedFleet, journal: LinesJournal, recorder: EventRecorder) -> Rollout[Any]:
    return Rollout(
        fleet,
        "v2",
        router=fleet,
        readiness=Readiness(check=fleet, period=1, deadline=30),
        journal=journal,
        observers=[recorder],
    )


def elastic(fleet: SimulatedFleet, journal: LinesJournal, recorder: EventRecorder) -> Rollout[Any]:
    return Rollout(
        LaunchOnly(fleet),
        "v2",
        strategy=RollingUpdate(max_unavailable=0, max_surge=1),
        router=fleet,
        readiness=Readiness(check=fleet, period=1, deadline=30),
        journal=journal,
        observers=[recorder],
    )


def take_out(fleet: SimulatedFleet, journal: LinesJournal, recorder: EventRecorder) -> Rollout[Any]:
    return Rollout(
        LaunchOnly(fleet),
        "v2",
        router=fleet,
        readiness=Readiness(check=fleet, period=1, deadline=30),
        journal=journal,
        observers=[recorder],
    )


def canary(fleet: SimulatedFleet, journal: LinesJournal, recorder: EventRecorder) -> Rollout[Any]:
    return Rollout(
        LaunchOnly(fleet),
        "v2",
        strategy=rolling.Canary(scale_down_delay=5),
        steps=[rolling.SetWeight(50), rolling.Pause(10)],
        router=fleet,
        readiness=Readiness(check=fleet, period=1, deadline=30),
        journal=journal,
        observers=[recorder],
    )


def monitor_of(
    rollout: Rollout[Any], fleet: SimulatedFleet, *, raise_immediately: bool = True
) -> InvariantMonitor:
    """The monitor testing-rollouts.md builds: held to the window the rollout resolves."""
    window = rollout.window(fleet.desired)
    return InvariantMonitor(
        fleet,
        max_unavailable=window.max_unavailable,
        max_surge=window.max_surge,
        raise_immediately=raise_immediately,
    )


Shape = Callable[[SimulatedFleet, LinesJournal, EventRecorder], Rollout[Any]]


async def appends_of(shape: Shape) -> int:
    journal = LinesJournal()
    result = await shape(SimulatedFleet(3), journal, EventRecorder()).run()
    assert result.status is RolloutStatus.SUCCEEDED
    return journal.appends


@pytest.mark.parametrize(
    "shape", [in_place, elastic, take_out, canary], ids=["in-place", "surge", "take-out", "canary"]
)
async def test_a_journal_that_fails_on_write_halts_truthfully_and_resumes(shape: Shape) -> None:
    """recovery.md: write-ahead (no effect starts before its record is written), and
    Rollout.run: an error that ends the rollout comes out as itself; the invariant monitor's
    terminal truth holds for the result the observers saw, whichever write fails; and the
    journal as far as it was written resumes to the end."""
    total = await appends_of(shape)
    for fail_after in range(total):
        fleet = SimulatedFleet(3)
        journal = LinesJournal(fail_after=fail_after)
        recorder = EventRecorder()
        rollout = shape(fleet, journal, recorder)
        monitor = monitor_of(rollout, fleet, raise_immediately=False)
        with pytest.raises(OSError, match="No space left") as raised:
            await rollout.run()
        assert not isinstance(raised.value, rolling.RollingError), fail_after
        (finished,) = recorder.of_type(rolling.RolloutFinished)
        # HALTED, or SUCCEEDED when only the last record (the end) could not be written.
        assert finished.result.status is RolloutStatus.HALTED or journal.appends == total, (
            fail_after
        )
        monitor.check_result(finished.result)
        assert monitor.violations == [], (fail_after, monitor.violations)
        assert journal.closes == 1
        # Write-ahead: every change the fleet saw was announced by a record that was written.
        announced = [json.loads(line) for line in journal.lines]
        started = Counter(r["op"] for r in announced if r.get("t") == "fx" and r["s"] == "start")
        changed = Counter(call.op for call in fleet.calls if call.op in MUTATING)
        assert changed <= started, (fail_after, changed, started)
        monitor.close()

        # The operator frees the disk and runs the same rollout again on the same journal.
        again = LinesJournal(journal.lines)
        rollout = shape(fleet, again, EventRecorder())
        monitor = monitor_of(rollout, fleet)
        result = await rollout.run()
        monitor.check_result(result)
        assert result.status is RolloutStatus.SUCCEEDED, (fail_after, result)
        assert fleet.version_counts() == {"v2": 3}

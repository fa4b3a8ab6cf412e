"""Live progress: instances by version and phase, requests per second, errors so far.

The status line reads ``[v1:3 v2:1] working: p-1 replacing | 180 req/s | 912 sent, 0 failed``:
instances by the version they run, those being worked on with their phase (the phases of
:class:`rolling.events.Phase`; ``-`` when none is), the request rate since the last line, and
the requests sent and failed so far.

For canary and blue-green (``shares=True``) the line also says the traffic share the
rollout asked for last and the one the load generator measured since the previous line:
``| traffic asked new 10% | seen v1 90% v2 10%``.
"""

from __future__ import annotations

from collections import Counter
from typing import TextIO

import anyio

from rolling.events import Event, InstancePhaseChanged, Phase, RollbackStarted, TrafficShifted

from ._load import LoadGenerator, Sample

__all__ = ["Progress"]

_QUIET = frozenset(
    {
        Phase.PENDING,
        Phase.SKIPPED,
        Phase.UPDATED,
        Phase.REVERTED,
        Phase.FAILED,
        Phase.REVERT_FAILED,
        Phase.INTERRUPTED,
    }
)
"""Final phases: an instance in one is no longer being worked on."""


class Progress:
    """An observer of the rollout that also draws a status line.

    On a terminal the line is redrawn in place; otherwise a plain line is
    printed every ``interval`` seconds, which suits logs and CI.
    """

    def __init__(
        self, load: LoadGenerator, out: TextIO, *, interval: float = 0.5, shares: bool = False
    ) -> None:
        self.rollout_started: float | None = None
        """When the rollout started (its first event), on the loop's clock."""
        self.load = load
        self.out = out
        self.tty = out.isatty()
        self.interval = interval if self.tty else max(interval, 1.0)
        self.phases: dict[str, Phase] = {}
        self.versions: dict[str, str] = {}
        self.shares = shares
        self.shifts: list[TrafficShifted | RollbackStarted] = []
        """The rollout's traffic shifts, and its rollback (which moves traffic back), in order."""
        self._last_count = 0
        self._last_at: float | None = None

    def __call__(self, event: Event) -> None:
        """Follow instance phases."""
        if self.rollout_started is None:
            self.rollout_started = event.at
        if isinstance(event, InstancePhaseChanged):
            self.phases[event.instance_id] = event.phase
            if event.phase in {Phase.UPDATED, Phase.REVERTED, Phase.SKIPPED}:
                self.versions[event.instance_id] = event.version
        elif isinstance(event, TrafficShifted | RollbackStarted):
            self.shifts.append(event)

    def seed(self, versions: dict[str, str]) -> None:
        """Record the versions before the rollout."""
        self.versions.update(versions)

    def line(self) -> str:
        """The current status line."""
        now = anyio.current_time()
        count = len(self.load.samples)
        recent = self.load.samples[self._last_count : count]
        elapsed = now - self._last_at if self._last_at is not None else 0.0
        rate = (count - self._last_count) / elapsed if elapsed > 0 else 0.0
        self._last_count, self._last_at = count, now
        failed = sum(1 for s in self.load.samples if not s.ok)
        by_version = Counter(self.versions.values())
        versions = " ".join(f"{v}:{n}" for v, n in sorted(by_version.items()))
        busy = [
            f"{key} {phase}" for key, phase in sorted(self.phases.items()) if phase not in _QUIET
        ]
        working = ", ".join(busy) if busy else "-"
        line = f"[{versions}] working: {working} | {rate:.0f} req/s | {count} sent, {failed} failed"
        if self.shares:
            line += " | " + _traffic(self.shifts, recent)
        return line

    async def run(self) -> None:
        """Draw until cancelled, then once more (the final state), on its own line.

        The rate of the first line counts from here, not from zero.
        """
        self._last_count, self._last_at = len(self.load.samples), anyio.current_time()
        try:
            while True:
                await anyio.sleep(self.interval)
                self.draw()
        finally:
            self.draw()
            if self.tty:
                self.out.write("\n")
                self.out.flush()

    def draw(self) -> None:
        """Draw one status line."""
        text = self.line()
        if self.tty:
            self.out.write("\r\x1b[K" + text)
        else:
            self.out.write(text + "\n")
        self.out.flush()


def _traffic(shifts: list[TrafficShifted | RollbackStarted], recent: list[Sample]) -> str:
    """What share the rollout asked for last, and what the recent answers show."""
    last = shifts[-1] if shifts else None
    asked = "asked -"
    if isinstance(last, TrafficShifted):
        asked = f"asked new {last.percent:g}%"
    elif isinstance(last, RollbackStarted):
        asked = "rolling back: asked new 0%"
    answered = Counter(s.version for s in recent if s.ok and s.version)
    total = sum(answered.values())
    seen = " ".join(f"{v} {100 * n / total:.0f}%" for v, n in sorted(answered.items()))
    return f"traffic {asked} | seen {seen or '-'}"

"""The availability ledger: what may start next, given what serves and exists. It never awaits.

Rules, in the order they apply:

1. Work is a sequence of *units*, one per instance, in rollout order. *Barriers*
   cut the sequence (end of a wave, end of a lockstep batch, an ``Advance``
   target): nothing after a barrier starts until everything before it has
   finished and the barrier's steps (pauses, gates) have run.
2. Lockstep (``Batches``): every unit up to the next barrier starts at once,
   as far as the floor (or, with surge, the ceiling) allows.
3. Sliding window (``RollingUpdate``), for the next unit in order:
   a. an instance that was not serving at the start costs no availability; it
      starts while fewer than ``cap`` units are in flight;
   b. otherwise, if surge is allowed and fewer than ``ceiling`` instances
      exist, it starts in SURGE mode (launch first), reserving one instance of
      capacity;
   Either way, a unit whose instance is gone (after a failed restore or a
   resume) launches one, and so also needs room under ``ceiling``.
   c. otherwise, if taking one more instance out leaves at least ``floor``
      serving, it starts in a take-out mode (in place when the driver can
      replace, else terminate-then-launch), reserving one serving instance;
   d. otherwise nothing more starts until a unit reports progress.
4. Reservations are settled by :meth:`Ledger.settle` when a unit ends, from
   what the unit left serving and existing, and handed back whole by
   :meth:`Ledger.unstart` for a unit that never ran. Only the machine calls
   these. Every call is O(1) amortised per unit.
5. Nothing in flight, nothing startable, work left: the schedule is *stuck*
   (the availability floor cannot be kept); the engine decides what that means.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import attrs

from ._steps import Step

__all__ = ["Barrier", "Ledger", "Mode", "Poll", "Start"]


class Mode(enum.Enum):
    """How one unit replaces its instance."""

    IN_PLACE = "in_place"
    """Detach, replace, wait ready, attach."""
    TAKE_OUT = "take_out"
    """Detach, terminate, launch, wait ready, attach."""
    SURGE = "surge"
    """Launch, wait ready, attach the new one, detach and terminate the old one."""


# Looked up once: an enum member read from its class costs about 1k instructions a time.
_SURGE = Mode.SURGE


@attrs.frozen
class Barrier:
    """A point in the unit sequence that in-flight work must clear before more starts.

    Attributes:
        position: Number of units before the barrier.
        steps: Steps to run once the barrier is reached.
        indexes: Each step's position in the rollout's steps.
        between: The pause between batches (``Batches(pause=...)``) held here
            first, if any.
        batch: Index of the lockstep batch ending here, if any.
        wave: Index of the wave ending here, if any.
    """

    position: int
    steps: tuple[Step, ...] = ()
    indexes: tuple[int, ...] = ()
    between: Step | None = None
    batch: int | None = None
    wave: int | None = None


@attrs.define  # not frozen: made for every unit, and nobody changes one
class Start:
    """Start unit ``index`` in ``mode``; ``capacity``: one instance of capacity is reserved."""

    index: int
    mode: Mode
    capacity: bool = False


@attrs.frozen
class Poll:
    """The scheduler's answer: what to start, or which barrier was reached, or done / stuck."""

    starts: tuple[Start, ...] = ()
    barrier: Barrier | None = None
    done: bool = False
    stuck: bool = False


_WAIT = Poll()


class Ledger:
    """Decides which units start, given counts the engine keeps up to date.

    Args:
        serving_at_start: Per unit, whether its instance served traffic at the start.
        lockstep: Batches (True) or a sliding window (False).
        floor: Fewest serving instances allowed (sliding window only).
        ceiling: Most instances allowed to exist.
        serving: Instances serving now.
        existing: Instances existing now.
        cap: Most units in flight for instances that were not serving.
        surge: Whether SURGE mode may be used.
        in_place: Whether the driver can replace in place.
        barriers: Barriers, by increasing position; positions beyond the last unit are clipped.
        absent: Per unit, whether nothing stands in its place (it launches, so it
            needs capacity under the ceiling); all False by default.
    """

    def __init__(
        self,
        *,
        serving_at_start: Sequence[bool],
        lockstep: bool,
        floor: int,
        ceiling: int,
        serving: int,
        existing: int,
        cap: int,
        surge: bool,
        in_place: bool,
        barriers: Sequence[Barrier] = (),
        absent: Sequence[bool] | None = None,
    ) -> None:
        self._serving_at_start = serving_at_start
        self._absent = absent if absent is not None else [False] * len(serving_at_start)
        self._count = len(serving_at_start)
        self._lockstep = lockstep
        self.floor = floor
        self.ceiling = ceiling
        self.serving = serving
        self.existing = existing
        self._cap = max(1, cap)
        self._surge = surge
        self._in_place = in_place
        self._barriers = list(barriers)
        self._next_barrier = 0
        self.cursor = 0
        """Units started so far."""
        self.in_flight = 0
        """Units started and not finished."""
        self.stopping = False
        """Once set, nothing more starts."""
        self.paused = False
        """While set, nothing more starts (barriers still report)."""
        self._take_out_mode = Mode.IN_PLACE if in_place else Mode.TAKE_OUT

    @property
    def total(self) -> int:
        """Number of units."""
        return self._count

    @property
    def lockstep(self) -> bool:
        """Whether units start in lockstep batches (else in a sliding window)."""
        return self._lockstep

    def _limit(self) -> tuple[int, Barrier | None]:
        if self._next_barrier < len(self._barriers):
            barrier = self._barriers[self._next_barrier]
            return min(barrier.position, self._count), barrier
        return self._count, None

    def poll(self) -> Poll:  # noqa: PLR0911 - one return per rule reads best
        """Decide what happens next."""
        if self.stopping:
            return Poll(done=self.in_flight == 0)
        limit, barrier = self._limit()
        if self.cursor >= limit:
            if self.in_flight:
                return _WAIT
            if barrier is not None:
                return Poll(barrier=barrier)
            return Poll(done=True)
        if self.paused:
            return _WAIT
        # A sliding window's limit is the one window_starts() works out.
        starts = self._lockstep_starts(limit) if self._lockstep else self.window_starts()
        if not starts and not self.in_flight:
            return Poll(stuck=True)
        return Poll(starts=tuple(starts))

    def window_starts(self) -> list[Start]:
        """After a unit ended: what the sliding window starts now, as :meth:`poll` would.

        Empty when only :meth:`poll` can tell what comes next (lockstep batches, a
        stop, a pause, a barrier reached, the end, a stuck ledger).
        """
        if self._lockstep or self.stopping or self.paused:
            return []
        limit = self._count
        if self._next_barrier < len(self._barriers):
            limit = min(self._barriers[self._next_barrier].position, limit)
        # The loop written here, not called: this runs once per unit.
        starts: list[Start] = []
        while self.cursor < limit:
            index = self.cursor
            capacity = False
            if not self._serving_at_start[index]:
                if self.in_flight >= self._cap:
                    break
                if self._absent[index]:
                    # Nothing stands in its place: the instance it launches is one more.
                    if self.existing >= self.ceiling:
                        break
                    self.existing += 1
                    capacity = True
                mode = self._take_out_mode
            elif self._surge and self.existing < self.ceiling:
                mode = _SURGE
                self.existing += 1
                capacity = True
            elif self.serving - 1 >= self.floor:
                mode = self._take_out_mode
                self.serving -= 1
            else:
                break
            starts.append(Start(index, mode, capacity))
            self.cursor += 1
            self.in_flight += 1
        return starts

    def pass_barrier(self) -> None:
        """The engine ran the reached barrier's steps; move past it."""
        self._next_barrier += 1

    def _lockstep_starts(self, limit: int) -> list[Start]:
        surge = self._surge
        mode = _SURGE if surge else self._take_out_mode
        starts: list[Start] = []
        while self.cursor < limit:
            capacity = surge or self._absent[self.cursor]
            if capacity:
                # Even a batch may not pass the ceiling: an instance that could not be
                # terminated still takes its place.
                if self.existing >= self.ceiling:
                    break
                self.existing += 1
            elif self._serving_at_start[self.cursor]:
                # A batch is the unavailability it may cause, not more: an instance that
                # failed out of traffic earlier holds part of it.
                if self.serving - 1 < self.floor:
                    break
                self.serving -= 1
            starts.append(Start(self.cursor, mode, capacity))
            self.cursor += 1
        self.in_flight += len(starts)
        return starts

    def settle(self, *, serving: int, existing: int) -> None:
        """One unit ended: it changed serving and existing instances by these deltas."""
        self.serving += serving
        self.existing += existing
        self.in_flight -= 1

    def unstart(self, start: Start, *, serving_at_start: bool) -> None:
        """Hand back what :meth:`poll` reserved for a unit that will not run after all."""
        if start.capacity:
            self.existing -= 1
        elif serving_at_start and start.mode is not _SURGE:
            self.serving += 1
        self.in_flight -= 1

    def stop(self) -> None:
        """Start nothing more; :meth:`poll` reports done once in-flight units finish."""
        self.stopping = True

"""The runner's two clocks: one timer for every call's ``effect_timeout``, and the watchdog.

Part of the runner (:mod:`rolling._runner`); nothing here decides anything. Rules:

* **One timer for every call.** A call (driver, router or hook method) is shielded and
  must end by ``effect_timeout``. Arming and disarming a timer per call costs more than
  most calls the engine makes, so each call registers a deadline with
  :class:`EffectTimer` and one task sleeps until the earliest. Deadlines are in start
  order (one ``effect_timeout`` for the run), so the oldest call is always the next to
  expire, and with none in flight no call can expire sooner than ``effect_timeout``
  from now: the timer needs no waking when one starts.
* **Cancelling shortens every leash.** Once the run is cancelled, each call in flight
  must end by the clean-up deadline too (:meth:`EffectTimer.cut`); calls started from
  then on get their deadline on their own scope.
* **The watchdog only tells the machine the time** when the progress deadline is due
  (:func:`watch_progress`); the machine decides what a passed deadline means.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio

if TYPE_CHECKING:
    from ._machine import Machine

__all__ = ["AT", "SCOPE", "Deadline", "EffectTimer", "watch_progress"]


Deadline = list[Any]
"""When a call in flight must be cut: ``[at, scope]``; the call sets ``scope`` to None when
it ends. A two-item list, not a class: one is made per call, and a class's ``__init__``
costs more than the rest of the timer's bookkeeping of the call."""

AT, SCOPE = 0, 1


class EffectTimer:
    """Cancels each call still running at its deadline; see the module docstring."""

    def __init__(self, clock: Callable[[], float], timeout: float) -> None:
        self.clock = clock
        """The loop's clock (the runner sets it once the loop runs)."""
        self._timeout = timeout
        self.deadlines: deque[Deadline] = deque()
        """Calls in flight, in start order. A call appends its :data:`Deadline`, and when
        it ends sets the entry's scope to None and pops every ended one from the left: the
        runner does that itself, inline, since a method call each way would cost about
        what the rest of the bookkeeping of a call does."""
        self.on = False
        """Whether :meth:`run` runs, so a call may rely on it: set by whoever starts it."""

    def cut(self, at: float) -> None:
        """The run is being cancelled: every call in flight ends by ``at`` at the latest."""
        for entry in self.deadlines:
            scope = entry[SCOPE]
            if scope is not None:
                scope.deadline = min(entry[AT], at)

    async def run(self) -> None:
        """Cancel each call still running at its deadline, until cancelled."""
        deadlines = self.deadlines
        clock = self.clock
        timeout = self._timeout
        try:
            while True:
                if not deadlines:
                    await anyio.sleep(timeout)
                    continue
                at, scope = deadlines[0]
                now = clock()
                if at > now:
                    await anyio.sleep(at - now)
                    continue
                deadlines.popleft()
                if scope is not None:
                    scope.cancel()
        finally:
            self.on = False


async def watch_progress(
    machine: Machine, clock: Callable[[], float], flush: Callable[[], None]
) -> None:
    """Wake the machine when its progress deadline is due, until it no longer applies."""
    while True:
        due = machine.progress_due()
        if due is None:
            return
        now = clock()
        if now < due:
            await anyio.sleep(due - now)
            continue
        machine.now = now
        machine.deadline_passed()
        flush()

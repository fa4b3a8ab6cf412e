"""Virtual time for asyncio, the counterpart of trio's ``MockClock(autojump_threshold=0)``.

When every task is waiting and only timers are left, the loop's clock jumps to
the next timer instead of sleeping, so an hour-long rollout takes milliseconds
and always takes the same path.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import selectors
from typing import Any

__all__ = ["VirtualTimeEventLoop", "virtual_time_loop_factory"]


class VirtualTimeEventLoop(asyncio.SelectorEventLoop):
    """An asyncio event loop whose clock advances only when all tasks are idle.

    Use it for tests that touch no real I/O: a socket or thread that would
    answer in real time sees virtual time race ahead of it, exactly as under
    trio's ``MockClock`` with ``autojump_threshold=0``.

    It relies on the private scheduling structures of CPython's asyncio
    (``_ready`` and ``_scheduled``), which have been stable since Python 3.4;
    it is meant for tests, not production.
    """

    def __init__(self, selector: selectors.BaseSelector | None = None) -> None:
        super().__init__(selector)
        self._virtual_now = 0.0

    def time(self) -> float:
        """Return the virtual clock, which starts at 0."""
        return self._virtual_now

    def _run_once(self) -> None:
        ready: Any = getattr(self, "_ready")  # noqa: B009 - private asyncio state, read on purpose
        scheduled: list[Any] = getattr(self, "_scheduled")  # noqa: B009 - as above
        if not ready:
            # Drop cancelled timers at the head first, so the jump lands on a live one.
            while scheduled and scheduled[0]._cancelled:  # noqa: SLF001 - asyncio.TimerHandle state
                handle = heapq.heappop(scheduled)
                handle._scheduled = False  # noqa: SLF001 - mirrors what asyncio does itself
                self._timer_cancelled_count -= 1  # type: ignore[attr-defined]  # private asyncio counter
            if scheduled:
                when = scheduled[0].when()
                # An infinite timer (a sleep_forever) is never reached: wait for I/O instead,
                # as trio's MockClock does.
                if when != math.inf:
                    self._virtual_now = max(self._virtual_now, when)
        super()._run_once()  # type: ignore[misc]  # private asyncio method we extend


def virtual_time_loop_factory() -> asyncio.AbstractEventLoop:
    """Create a :class:`VirtualTimeEventLoop`; pass it as anyio's ``loop_factory`` option."""
    return VirtualTimeEventLoop()

"""One controller of a fleet run from several places: journal and lock on etcd.

Run :func:`controller` in two (or more) places at once: the first to take the
lock rolls the fleet; the others stand by and, if it dies, the next one to
take the lock resumes the rollout from the journal.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import rolling


async def controller(
    endpoints: Sequence[str],
    make_fleet: Callable[[], Awaitable[Any]],
    target: str,
    *,
    ttl: int = 10,
    wait: float = 600,
) -> rolling.RolloutResult:
    """Stand by for the fleet's lock, then roll (or resume rolling) it to ``target``.

    ``make_fleet`` builds the driver (here also the router and the health check);
    it runs only once this controller holds the lock, so it sees the fleet as the
    last holder left it.
    """
    journal = rolling.EtcdJournal(endpoints, fleet="web", ttl=ttl, wait=wait)
    await journal.lock.acquire()  # waits while another controller holds it
    try:
        fleet = await make_fleet()
    except BaseException:
        await journal.lock.release()
        raise
    rollout = rolling.Rollout(
        fleet,
        target,
        strategy=rolling.RollingUpdate(max_unavailable=1),
        router=fleet,
        readiness=rolling.Readiness(check=fleet, period=0.05),
        journal=journal,  # the rollout keeps the lock it holds, and releases it at the end
    )
    return await rollout.run()

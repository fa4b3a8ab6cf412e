"""Takeover after a SIGKILL: how long a standby controller waits before it holds the lock.

Usage: python benchmarks/etcd_takeover.py [--repeat N] [--ttl S ...]

Starts a 3-member etcd cluster on loopback (as the tests do). For each lease
``ttl``, ``repeat`` times: a holder process takes an :class:`~rolling.EtcdLock`
and keeps it alive (``hold()``); this process stands by for the same lock; the
holder is SIGKILLed; the time until the standby holds the lock is the
takeover. Then the time to read back a journal of a 10,000-instance rollout
(what a standby does next, before it resumes).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

import rolling
from rolling.testing import SimulatedFleet

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))  # the etcd cluster helper
from etcd_cluster import running_cluster

HOLDER = """
import sys, anyio, rolling
async def main():
    lock = rolling.EtcdLock(sys.argv[1].split(","), fleet="bench", ttl=int(sys.argv[2]))
    await lock.acquire()
    print("locked", flush=True)
    await lock.hold()
anyio.run(main)
"""


async def takeover(endpoints: list[str], ttl: int) -> float:
    argv = [sys.executable, "-c", HOLDER, ",".join(endpoints), str(ttl)]
    holder = subprocess.Popen(argv, stdout=subprocess.PIPE)  # noqa: S603, ASYNC220 - our own script
    assert holder.stdout is not None  # noqa: S101 - piped above
    line = await anyio.to_thread.run_sync(holder.stdout.readline)
    assert line == b"locked\n", line  # noqa: S101 - the holder's protocol
    standby = rolling.EtcdLock(endpoints, fleet="bench", ttl=ttl, wait=60)
    async with anyio.create_task_group() as tg:
        tg.start_soon(standby.acquire)
        await anyio.sleep(ttl)  # the holder renews a few times meanwhile
        killed = time.monotonic()
        holder.kill()
    took = time.monotonic() - killed
    holder.wait()
    await standby.release()
    return took


async def load_time(endpoints: list[str], n: int) -> tuple[float, int]:
    journal = rolling.EtcdJournal(endpoints, fleet="bench-journal")

    rollout = rolling.Rollout(
        SimulatedFleet(n),
        "v2",
        strategy=rolling.RollingUpdate(max_unavailable="1%"),
        journal=journal,
    )
    await rollout.run()
    reader = rolling.EtcdJournal(endpoints, fleet="bench-journal")
    started = time.perf_counter()
    records = await reader.load()
    took = time.perf_counter() - started
    await reader.lock.release()
    return took, len(records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--ttl", type=int, nargs="+", default=[2, 5])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, running_cluster(Path(tmp)) as cluster:
        print("Takeover after SIGKILL (standby polls every 0.1 s)")
        print("| lease ttl | runs | min s | median s | max s |")
        print("|---:|---:|---:|---:|---:|")
        for ttl in args.ttl:
            runs = [anyio.run(takeover, cluster.endpoints, ttl) for _ in range(args.repeat)]
            print(
                f"| {ttl} | {len(runs)} | {min(runs):.2f} | {statistics.median(runs):.2f}"
                f" | {max(runs):.2f} |"
            )
        took, count = anyio.run(load_time, cluster.endpoints, 10_000)
        print(f"\nReading back the journal of a 10,000-instance rollout: {count:,} records,")
        print(f"{took:.2f} s")


if __name__ == "__main__":
    main()

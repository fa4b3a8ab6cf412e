"""The journal's cost: the same zero-latency rollout with and without a FileJournal.

Usage: python benchmarks/journal_cost.py [--instances N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import anyio
import attrs

import rolling


@attrs.frozen
class Instance:
    id: str
    version: str


class Driver:
    def __init__(self, n: int) -> None:
        self.items = [Instance(f"i{k}", "v1") for k in range(n)]

    async def list_instances(self) -> list[Instance]:
        return self.items

    async def replace(self, instance: Instance, version: str) -> Instance:
        return Instance(instance.id, version)


async def once(n: int, journal: rolling.FileJournal | None) -> tuple[float, float, str]:
    rollout = rolling.Rollout(
        Driver(n),
        "v2",
        strategy=rolling.RollingUpdate(max_unavailable="1%"),
        journal=journal,
    )
    wall, cpu = time.perf_counter(), time.process_time()
    result = await rollout.run()
    return time.perf_counter() - wall, time.process_time() - cpu, str(result.status)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="1,000 instances")
    args = parser.parse_args()
    n = 1_000 if args.quick else args.instances
    print(f"The journal's cost, {n:,} instances, 1% window, asyncio")
    print("| journal | wall us/inst | CPU us/inst | fsyncs | status |")
    print("|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as directory:
        for label in ("none", "FileJournal"):
            journal = rolling.FileJournal(Path(directory) / "j") if label != "none" else None
            wall, cpu, status = anyio.run(once, n, journal)
            syncs = "-" if journal is None else str(journal.syncs)
            print(f"| {label} | {wall / n * 1e6:.1f} | {cpu / n * 1e6:.1f} | {syncs} | {status} |")


if __name__ == "__main__":
    main()

"""The journal's cost: the same zero-latency rollout with no journal, a FileJournal, an EtcdJournal.

Usage: python benchmarks/journal_cost.py [--instances N ...] [--no-etcd]

The etcd rows run against a 3-member cluster this script starts on loopback
(Debian's etcd-server, as the tests do) and stops at the end. For each
journal: wall and CPU µs per instance, durable writes (fsyncs, or etcd
transactions) per instance, and bytes stored per instance (the file's size,
or the chunk values written to etcd).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import attrs

import rolling

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))  # the etcd cluster helper
from etcd_cluster import running_cluster


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


async def once(n: int, journal: Any) -> tuple[float, float, str]:
    rollout = rolling.Rollout(
        Driver(n),
        "v2",
        strategy=rolling.RollingUpdate(max_unavailable="1%"),
        journal=journal,
    )
    wall, cpu = time.perf_counter(), time.process_time()
    result = await rollout.run()
    return time.perf_counter() - wall, time.process_time() - cpu, str(result.status)


def row(label: str, n: int, journal: Any, directory: Path) -> list[object]:
    wall, cpu, status = anyio.run(once, n, journal)
    if journal is None:
        writes, size = "-", "-"
    elif isinstance(journal, rolling.FileJournal):
        writes, size = f"{journal.syncs / n:.3f}", f"{(directory / 'j').stat().st_size / n:.0f}"
    else:
        writes, size = f"{journal.writes / n:.3f}", f"{journal.bytes / n:.0f}"
    return [label, f"{n:,}", f"{wall / n * 1e6:.1f}", f"{cpu / n * 1e6:.1f}", writes, size, status]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", type=int, nargs="+", default=[1_000, 10_000])
    parser.add_argument("--quick", action="store_true", help="1,000 instances")
    parser.add_argument("--no-etcd", action="store_true", help="leave out the etcd rows")
    args = parser.parse_args()
    sizes = [1_000] if args.quick else args.instances
    print("The journal's cost: zero-latency in-place rollout, 1% window, asyncio")
    print(
        "| journal | instances | wall µs/inst | CPU µs/inst | writes/inst | bytes/inst | status |"
    )
    print("|---|---:|---:|---:|---:|---:|---|")
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        cluster = None if args.no_etcd else stack.enter_context(running_cluster(Path(tmp) / "e"))
        for n in sizes:
            for label in ("none", "FileJournal", "EtcdJournal"):
                directory = Path(tmp) / f"{label}-{n}"
                directory.mkdir()
                journal: Any = None
                if label == "FileJournal":
                    journal = rolling.FileJournal(directory / "j")
                elif label == "EtcdJournal":
                    if cluster is None:
                        continue
                    journal = rolling.EtcdJournal(cluster.endpoints, fleet=f"bench-{n}")
                print("| " + " | ".join(map(str, row(label, n, journal, directory))) + " |")


if __name__ == "__main__":
    main()

# Engine overhead: what `rolling` itself costs per instance, with nothing else to wait for.
#
# A fleet of N in-memory instances whose driver answers at once, readiness without a check,
# rolled through a sliding window of 1% unavailable (RollingUpdate(max_unavailable="1%")).
# Every figure is per instance: wall time (perf_counter), CPU time (process_time) and the peak
# memory the engine allocates (tracemalloc, in a separate run: it slows everything down, so no
# timed run has it on). "events" means an observer that counts every event AND a consumer of
# `handle.events()`; "no events" means nobody listens, so the engine builds no event at all.
#
# Each measurement runs in a fresh interpreter so runs do not pollute one another's heap; small
# sizes are repeated and the median is reported. "bare floor" rows time the same units through
# an anyio task group of the window's width, one shielded, deadline-bounded call per unit and
# nothing else. The goals (issue 9), at 100k on asyncio: without events at most 2.0x the floor
# (and 2 KiB per instance), with events consumed at most 1.5x the figure without.
#
#     python benchmarks/engine_overhead.py                  # 1k, 10k, 100k
#     python benchmarks/engine_overhead.py --quick          # 1k and 10k only
#     python benchmarks/engine_overhead.py --sizes 100000 --backends asyncio

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Sequence
from typing import Any

import anyio
from _report import command, machine, table, verdict

from rolling import Event, Readiness, RollingUpdate, Rollout, RolloutStatus

GOAL_BYTES = 2048
FLOOR_GOAL = 2.0
"""Issue 9: without events, at most this many times the bare floor (same run)."""
EVENTS_GOAL = 1.5
"""Issue 9: with events consumed, at most this many times the figure without events."""
GOAL_SIZE = 100_000
# Timed runs per measurement (the median is reported), by the largest size they apply to.
REPETITIONS = ((1_000, 7, 3), (10_000, 5, 3), (None, 3, 1))  # (up to size, full, quick)
DESCRIPTION = "Engine overhead per instance: wall, CPU and peak memory, asyncio and trio."


class Instance:
    __slots__ = ("id", "version")

    def __init__(self, id_: str, version: str) -> None:
        self.id = id_
        self.version = version


class ZeroLatencyDriver:
    """Replaces in place, at once; keeps nothing but the instances."""

    def __init__(self, size: int) -> None:
        self.instances = [Instance(f"i{k}", "v1") for k in range(size)]

    async def list_instances(self) -> list[Instance]:
        return self.instances

    async def replace(self, instance: Instance, version: str) -> Instance:
        instance.version = version
        return instance


async def roll(size: int, *, events: bool, measure: str) -> dict[str, Any]:
    driver = ZeroLatencyDriver(size)
    counted = [0, 0]  # by the observer, by the stream consumer

    def observer(_event: Event) -> None:
        counted[0] += 1

    rollout = Rollout(
        driver,
        "v2",
        strategy=RollingUpdate(max_unavailable="1%"),
        readiness=Readiness(),
        observers=[observer] if events else [],
    )
    base = 0
    if measure == "memory":
        tracemalloc.start()
        base, _ = tracemalloc.get_traced_memory()
    wall, cpu = time.perf_counter(), time.process_time()
    if events:
        async with rollout.start() as handle, handle.events() as stream:
            async for _event in stream:
                counted[1] += 1
        result = handle.result
    else:
        result = await rollout.run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = 0
    if measure == "memory":
        _, peak = tracemalloc.get_traced_memory()
        peak -= base
        tracemalloc.stop()
    if result.status is not RolloutStatus.SUCCEEDED:
        raise SystemExit(f"the rollout did not succeed: {result.status} {result.reason}")
    if not all(i.version == "v2" for i in driver.instances):
        raise SystemExit("the rollout left instances behind")
    if events and counted[0] != counted[1]:
        raise SystemExit(f"observer saw {counted[0]} events, the stream {counted[1]}")
    return {"wall": wall, "cpu": cpu, "peak": peak, "events": counted[0]}


async def floor(size: int, *, measure: str) -> dict[str, Any]:
    """The bare floor: the same units through a task group of the window's width.

    One shielded, deadline-bounded call per unit and nothing else: what any engine
    that keeps driver calls safe from cancellation must at least pay.
    """
    driver = ZeroLatencyDriver(size)
    width = max(1, size // 100)  # the window of RollingUpdate(max_unavailable="1%")
    todo = iter(driver.instances)

    async def lane() -> None:
        for instance in todo:
            with anyio.CancelScope(shield=True) as scope:
                scope.deadline = anyio.current_time() + 600
                await driver.replace(instance, "v2")

    base = 0
    if measure == "memory":
        tracemalloc.start()
        base, _ = tracemalloc.get_traced_memory()
    wall, cpu = time.perf_counter(), time.process_time()
    async with anyio.create_task_group() as tg:
        for _ in range(width):
            tg.start_soon(lane)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = 0
    if measure == "memory":
        _, peak = tracemalloc.get_traced_memory()
        peak -= base
        tracemalloc.stop()
    if not all(i.version == "v2" for i in driver.instances):
        raise SystemExit("the floor left instances behind")
    return {"wall": wall, "cpu": cpu, "peak": peak, "events": 0}


def worker(args: argparse.Namespace) -> None:
    if args.gc == "freeze":
        # A variant, never the headline: move everything allocated so far out of the
        # collector's sight (what a long-lived service can do after start-up).
        gc.collect()
        gc.freeze()
    elif args.gc == "off":
        gc.disable()
    if args.gc == "floor":
        figures = anyio.run(lambda: floor(args.size, measure=args.measure), backend=args.backend)
    else:
        figures = anyio.run(
            lambda: roll(args.size, events=args.events, measure=args.measure),
            backend=args.backend,
        )
    print(json.dumps(figures))


def measure_once(size: int, backend: str, *, events: bool, measure: str, gc_mode: str) -> Any:
    argv = [
        sys.executable,
        __file__,
        "--worker",
        f"--size={size}",
        f"--backend={backend}",
        f"--measure={measure}",
        f"--gc={gc_mode}",
    ]
    if events:
        argv.append("--events")
    done = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603 - our own script
    if done.returncode:
        raise SystemExit(f"worker {argv[2:]} failed:\n{done.stderr}")
    return json.loads(done.stdout.splitlines()[-1])


def repetitions(size: int, *, quick: bool) -> int:
    for limit, full, fewer in REPETITIONS:
        if limit is None or size <= limit:
            return fewer if quick else full
    raise AssertionError  # the last entry has no limit


def run(args: argparse.Namespace) -> int:
    print("Engine overhead: RollingUpdate(max_unavailable='1%'), zero-latency driver, no check")
    print(f"machine: {machine()}")
    print(f"command: {command()}")
    rows: list[list[object]] = []
    missed = False
    floors: dict[tuple[int, str], float] = {}
    plain: dict[tuple[int, str], float] = {}
    variants = [
        (backend, events, mode)
        for backend in args.backends
        for events, mode in ((False, "floor"), (False, "on"), (True, "on"))
    ]
    if args.gc_variants:
        variants += [(b, False, mode) for b in args.backends for mode in ("freeze", "off")]
    for size in args.sizes:
        reps = repetitions(size, quick=args.quick)
        for backend, events, gc_mode in variants:
            timed = [
                measure_once(size, backend, events=events, measure="time", gc_mode=gc_mode)
                for _ in range(reps)
            ]
            wall = statistics.median(t["wall"] for t in timed) / size * 1e6
            cpu = statistics.median(t["cpu"] for t in timed) / size * 1e6
            memory = measure_once(size, backend, events=events, measure="memory", gc_mode=gc_mode)
            per_instance = memory["peak"] / size
            goal = ""
            ratio = "-"
            if gc_mode == "floor":
                floors[size, backend] = wall
            elif gc_mode == "on" and not events:
                plain[size, backend] = wall
                ratio = f"{wall / floors[size, backend]:.2f}x floor"
            elif gc_mode == "on":
                ratio = f"{wall / plain[size, backend]:.2f}x no events"
            if size == GOAL_SIZE and backend == "asyncio" and gc_mode == "on":
                if events:
                    met = wall <= EVENTS_GOAL * plain[size, backend]
                    goal = f"{verdict(met=met)} (<= {EVENTS_GOAL}x no events)"
                else:
                    met = wall <= FLOOR_GOAL * floors[size, backend] and per_instance <= GOAL_BYTES
                    goal = f"{verdict(met=met)} (<= {FLOOR_GOAL}x floor, <= {GOAL_BYTES} B)"
                missed |= not met
            label = {
                "on": "",
                "floor": " [bare floor]",
                "freeze": " [gc.freeze()]",
                "off": " [gc.disable()]",
            }[gc_mode]
            rows.append(
                [
                    f"{size:,}",
                    backend + label,
                    "yes" if events else "no",
                    f"{memory['events'] / size:.1f}" if events else "-",
                    reps,
                    f"{wall:.1f}",
                    f"{cpu:.1f}",
                    f"{per_instance / 1024:.2f}",
                    ratio,
                    goal,
                ]
            )
            print(f"  measured {rows[-1][:3]}: {wall:.1f} µs, {per_instance:.0f} B", flush=True)
    header = [
        "instances",
        "backend",
        "events",
        "events/inst",
        "runs",
        "wall µs/inst",
        "CPU µs/inst",
        "peak KiB/inst",
        "ratio",
        "goal",
    ]
    print(
        table(
            "Per instance (median of `runs` timed runs; memory from one traced run)", header, rows
        )
    )
    return 1 if missed and args.strict else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--backends", nargs="+", default=["asyncio", "trio"])
    parser.add_argument("--quick", action="store_true", help="1k and 10k only, fewer runs")
    parser.add_argument(
        "--gc-variants",
        action="store_true",
        help="also time asyncio without events under gc.freeze() and gc.disable() (extra rows)",
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when the goal is missed")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    parser.add_argument("--events", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--measure", default="time", help=argparse.SUPPRESS)
    parser.add_argument("--gc", default="on", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    if args.quick and args.sizes == parser.get_default("sizes"):
        args.sizes = [1_000, 10_000]
    return run(args)


if __name__ == "__main__":
    sys.exit(main())

# The learned longest-first order (`[order] type = "longest-first"` in a rollout file) against
# inventory order, in virtual time.
#
# A fleet of 24 hosts whose updates take 0.2-1.0 s (uniform, seeded; each host keeps its own
# duration from one rollout to the next) is rolled 6 at a time. The first rollout goes in
# inventory order, and its events are written as `rolling run` writes its events log (the same
# JSON lines); the second learns every host's duration from that log, as `rolling run` does
# from the log next to its journal, and starts the longest first. With 6 identical parallel slots
# no schedule can finish before the lower bound max(sum(d) / 6, max(d)); the table gives each
# make-span divided by that bound. The figures for one such fleet: inventory 1.21x,
# longest-first 1.01x; goal for the learned order: at most 1.05x.
#
#     python benchmarks/learned_order.py
#     python benchmarks/learned_order.py --size 100 --window 10 --seeds 1 2 3

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import anyio
from _report import command, machine, table, verdict

from rolling import Order, RollingUpdate, Rollout, RolloutStatus
from rolling.cli._output import to_json
from rolling.cli._plan import learned_durations, longest_first
from rolling.events import Event
from rolling.testing import SimulatedFleet, virtual_time_loop_factory

GOAL = 1.05
DESCRIPTION = "Make-span of the learned longest-first order against inventory order."


async def roll(durations: Sequence[float], window: int, order: Order, lines: list[str]) -> float:
    fleet = SimulatedFleet(len(durations))
    for instance, seconds in zip(fleet.instances, durations, strict=True):
        fleet.set_latency(instance.id, replace=seconds)

    def record(event: Event) -> None:
        lines.append(json.dumps(to_json(event)))

    rollout = Rollout(
        fleet, "v2", strategy=RollingUpdate(max_unavailable=window), order=order, observers=[record]
    )
    result = await rollout.run()
    if result.status is not RolloutStatus.SUCCEEDED:
        raise SystemExit(f"the rollout did not succeed: {result.status} {result.reason}")
    return result.duration


def makespan(durations: Sequence[float], window: int, order: Order, log: Path | None) -> float:
    lines: list[str] = []
    span = anyio.run(
        roll,
        durations,
        window,
        order,
        lines,
        backend="asyncio",
        backend_options={"loop_factory": virtual_time_loop_factory},
    )
    if log is not None:  # the events log, as `rolling run` writes it next to its journal
        log.write_text("\n".join(lines) + "\n")
    return span


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--size", type=int, default=24)
    parser.add_argument("--window", type=int, default=6)
    parser.add_argument("--low", type=float, default=0.2)
    parser.add_argument("--high", type=float, default=1.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6, 7, 8])
    args = parser.parse_args(argv)
    print(f"machine: {machine()}")
    print(f"command: {command()}")
    rows: list[list[object]] = []
    learned_ratios: list[float] = []
    with tempfile.TemporaryDirectory(prefix="rolling-bench-") as tmp:
        for seed in args.seeds:
            rng = random.Random(seed)
            durations = [rng.uniform(args.low, args.high) for _ in range(args.size)]
            bound = max(sum(durations) / args.window, *durations)
            log = Path(tmp) / f"run-{seed}.events"
            first = makespan(durations, args.window, Order.inventory(), log)
            learned = learned_durations(log)
            second = makespan(durations, args.window, longest_first(learned), None)
            learned_ratios.append(second / bound)
            rows.append(
                [
                    seed,
                    f"{bound:.3f}",
                    f"{first / bound:.3f}x",
                    f"{second / bound:.3f}x",
                    verdict(met=second / bound <= GOAL),
                ]
            )
    header = ["seed", "bound (s)", "inventory", "learned longest-first", f"goal <= {GOAL}x"]
    title = (
        f"{args.size} hosts, updates {args.low}-{args.high} s, {args.window} at a time:"
        " make-span / lower bound"
    )
    print(table(title, header, rows))
    worst = max(learned_ratios)
    print(
        f"\nlearned order: mean {statistics.mean(learned_ratios):.3f}x, worst {worst:.3f}x"
        f" ({verdict(met=worst <= GOAL)})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

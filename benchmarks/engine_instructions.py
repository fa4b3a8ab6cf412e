# Engine overhead in CPU instructions: the figures of engine_overhead.py, free of machine load.
#
# Wall and CPU time move with whatever else the machine runs; the number of instructions a
# rollout executes does not. This script runs engine_overhead.py's workloads (the bare floor,
# the engine without events, the engine with events consumed) under valgrind's callgrind at
# two fleet sizes and reports the difference per instance, so start-up and imports cancel
# out. It needs `valgrind` (Debian: `apt-get install valgrind`); a run takes a few minutes,
# since callgrind slows Python about fifty times.
#
#     python benchmarks/engine_instructions.py
#     python benchmarks/engine_instructions.py --sizes 1000 6000 --backend trio

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _report import command, machine, table

HERE = Path(__file__).parent
DESCRIPTION = "Engine overhead per instance in instructions (valgrind), free of machine load."
WORKLOADS = ("floor", "no", "yes")


def instructions(size: int, workload: str, backend: str) -> int:
    argv = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        str(HERE / "engine_overhead.py"),
        "--worker",
        f"--size={size}",
        f"--backend={backend}",
        "--measure=time",
        "--gc=floor" if workload == "floor" else "--gc=on",
    ]
    if workload == "yes":
        argv.append("--events")
    done = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603 - our own script
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode or found is None:
        raise SystemExit(f"callgrind run {argv[4:]} failed:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument(
        "--sizes", type=int, nargs=2, default=(1000, 6000), metavar=("SMALL", "LARGE")
    )
    parser.add_argument("--backend", default="asyncio", choices=("asyncio", "trio"))
    parser.add_argument("--quick", action="store_true", help="accepted for `nox -s bench`")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: apt-get install valgrind")
        return 1
    small, large = args.sizes
    print(DESCRIPTION)
    print(f"machine: {machine()}")
    print(f"command: {command()}")
    jobs = [(size, w) for w in WORKLOADS for size in (small, large)]
    with ThreadPoolExecutor(max_workers=2) as pool:
        counts = dict(
            zip(jobs, pool.map(lambda job: instructions(*job, args.backend), jobs), strict=True)
        )
    per = {w: (counts[(large, w)] - counts[(small, w)]) / (large - small) for w in WORKLOADS}
    rows = [
        ["bare floor", f"{per['floor'] / 1000:.1f}", "-"],
        ["no events", f"{per['no'] / 1000:.1f}", f"{per['no'] / per['floor']:.2f}x floor"],
        ["events consumed", f"{per['yes'] / 1000:.1f}", f"{per['yes'] / per['no']:.2f}x no events"],
    ]
    title = f"{args.backend}: instances {small:,} and {large:,}, the difference per instance"
    print(table(title, ["workload", "k instructions/inst", "ratio"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""How often Compare fails a release, on simulated per-instance error ratios (prints figures).

Each trial draws ``window x instances`` observations per side: an instance serving
``requests`` requests in an interval, each failing with the side's error rate. A good
release has the old version's rate; a faulty one adds ``--faulty`` percentage points.
Counts the trials that ``Compare.worse`` fails, with and without a minimum effect.

    python benchmarks/compare_decisions.py [--trials 2000] [--requests 20] [--base 1]
"""

from __future__ import annotations

import argparse
import random

from rolling.metrics import Compare


def observations(rng: random.Random, count: int, requests: int, rate: float) -> list[float]:
    return [sum(rng.random() < rate for _ in range(requests)) / requests for _ in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=20, help="per instance and interval")
    parser.add_argument("--samples", type=int, default=20, help="observations per side")
    parser.add_argument("--base", type=float, default=1.0, help="old version's error %%")
    parser.add_argument("--faulty", type=float, default=10.0, help="added error %% points")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    base = args.base / 100
    judges = {
        "alpha=0.05, min_effect=0": Compare("x_total"),
        "alpha=0.05, min_effect=0.02": Compare("x_total", min_effect=0.02),
    }
    print(
        f"{args.trials} trials, {args.samples} observations per side, {args.requests} requests"
        f" each, old version at {args.base} % errors"
    )
    for label, extra in (("good release", 0.0), (f"+{args.faulty} points", args.faulty / 100)):
        failed = dict.fromkeys(judges, 0)
        for _ in range(args.trials):
            old = observations(rng, args.samples, args.requests, base)
            new = observations(rng, args.samples, args.requests, base + extra)
            for name, judge in judges.items():
                value = judge.judge(new, old)
                if value is not None and judge.worse(value):
                    failed[name] += 1
        for name, count in failed.items():
            print(f"  {label:14} {name:28} failed {count / args.trials:7.2%}")


if __name__ == "__main__":
    main()

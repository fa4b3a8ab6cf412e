# Metric analysis, measured with the demo (issue 11's figures).
#
#   python benchmarks/analysis_demo.py [--good-runs 20] [--instances 4]
#
# 1. `rolling demo --faulty 10` against `rolling demo --faulty 10 --no-analysis`: final
#    versions, failed requests (and their share), seconds from the first request a v2
#    instance answered to the analysis's failing measurement.
# 2. False alarms: the demo's default analysis over a good release, N runs: how many rolled back.
#
# Each run is a fresh `python -m rolling demo --json` process (real processes, real load).
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any


def demo(*options: str) -> dict[str, Any]:
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "rolling", "demo", "--json", *options],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def line(name: str, report: dict[str, Any]) -> str:
    share = report["failed"] / report["requests"] if report["requests"] else 0.0
    detect = report["detect_seconds"]
    return (
        f"{name:<28} {report['status']:<12} {json.dumps(report['final_versions']):<14}"
        f" {report['failed']:>5} / {report['requests']:<6} ({share:6.2%})"
        f"  {'-' if detect is None else f'{detect:.2f} s':>8}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--good-runs", type=int, default=20)
    parser.add_argument("--instances", default="4")
    args = parser.parse_args()
    print(f"{'run':<28} {'status':<12} {'final fleet':<14} {'failed / sent':<24} detect")
    print(line("--faulty 10", demo("--instances", args.instances, "--faulty", "10")))
    print(
        line(
            "--faulty 10 --no-analysis",
            demo("--instances", args.instances, "--faulty", "10", "--no-analysis"),
        )
    )
    print(line("--slow 150", demo("--instances", args.instances, "--slow", "150")))
    rollbacks = 0
    for _ in range(args.good_runs):
        report = demo("--instances", args.instances)
        if report["status"] != "succeeded":
            rollbacks += 1
            print(line("good release (FALSE ALARM)", report), report["reason"])
    print(f"false alarms: {rollbacks} rollbacks in {args.good_runs} runs of a good release")


if __name__ == "__main__":
    main()

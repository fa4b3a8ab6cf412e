"""The ``rolling`` command line: ``rolling demo`` for now.

Exit status of ``rolling demo``: 0 when the rollout succeeded and no request
failed, 1 when the rollout did not succeed (rolled back, halted), 2 when it
succeeded but requests failed, 130 when interrupted (after cleaning up), 64
for a usage error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import anyio

from . import __version__

__all__ = ["main"]

EXIT_USAGE = 64


def _count_or_percent(text: str) -> int | str:
    if text.endswith("%"):
        return text
    try:
        return int(text)
    except ValueError:
        msg = f"expected a count such as 1 or a percentage such as 25%, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        msg = f"expected a whole number >= 1, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _percent(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 100:  # noqa: PLR2004 - a percentage
        msg = f"expected a percentage from 0 to 100, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _milliseconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 60_000:  # noqa: PLR2004 - a minute at most
        msg = f"expected milliseconds from 0 to 60000, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rolling", description="Rolling deployments with no downtime."
    )
    parser.add_argument("--version", action="version", version=f"rolling {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="roll local processes from v1 to v2 behind a balancer, under load",
        description=(
            "Start N processes of a small HTTP app at v1 behind rolling's built-in balancer, "
            "send steady load through it, roll to v2 and report every request. Exit status: "
            "0 success with no failed request, 1 rollout not successful, 2 requests failed, "
            "130 interrupted."
        ),
    )
    demo.add_argument("--instances", type=_positive, default=4, help="processes (default 4)")
    demo.add_argument("--strategy", choices=("rolling", "batches"), default="rolling")
    demo.add_argument(
        "--max-unavailable",
        type=_count_or_percent,
        default=1,
        help="count or percentage out at once (batch size for --strategy batches)",
    )
    demo.add_argument(
        "--max-surge", type=_count_or_percent, default=0, help="extra processes at once"
    )
    demo.add_argument(
        "--broken", action="store_true", help="v2 never becomes ready: watch it roll back"
    )
    demo.add_argument(
        "--no-drain",
        action="store_true",
        help="naive baseline: stop backends without draining (requests will fail)",
    )
    demo.add_argument(
        "--faulty",
        type=_percent,
        default=0.0,
        metavar="PCT",
        help="v2 passes readiness but answers PCT %% of requests with HTTP 500",
    )
    demo.add_argument(
        "--slow",
        type=_milliseconds,
        default=0.0,
        metavar="MS",
        help="v2 passes readiness but takes MS milliseconds longer per request",
    )
    demo.add_argument(
        "--no-analysis",
        action="store_true",
        help="naive baseline: no metric analysis (by default the error ratio and p90 latency"
        " of v2, scraped from its /metrics, roll a bad release back)",
    )
    demo.add_argument("--json", action="store_true", help="print the report as JSON")
    demo.add_argument("--concurrency", type=_positive, default=8, help="load workers (default 8)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit status."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return EXIT_USAGE if exc.code not in (0, None) else 0
    from .demo._runner import DemoOptions, run_demo  # noqa: PLC0415 - keeps `import rolling` light

    options = DemoOptions(
        instances=args.instances,
        strategy=args.strategy,
        max_unavailable=args.max_unavailable,
        max_surge=args.max_surge,
        broken=args.broken,
        drain=not args.no_drain,
        json=args.json,
        concurrency=args.concurrency,
        faulty=args.faulty,
        slow_ms=args.slow,
        analysis=not args.no_analysis,
    )
    progress = sys.stderr if args.json else sys.stdout
    try:
        report = anyio.run(run_demo, options, progress)
    except Exception as exc:
        from ._errors import ConfigError  # noqa: PLC0415 - only needed on this path

        if isinstance(exc, ConfigError):
            print(f"rolling demo: {exc}", file=sys.stderr)  # noqa: T201 - CLI output
            return EXIT_USAGE
        raise
    print(report.to_json() if args.json else report.to_text())  # noqa: T201 - CLI output
    return report.exit_code


def entry_point() -> None:
    """Console-script entry point."""
    sys.exit(main())

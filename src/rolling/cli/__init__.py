"""The ``rolling`` command line.

Commands: ``run`` (a rollout file), ``validate`` (check one, no fleet
touched), ``status``, ``pause``, ``resume``, ``promote``, ``abort`` (control
a running ``rolling run`` from another shell), ``plugins`` (what is
installed) and ``demo``. docs/cli.md documents them, the rollout file, the
JSON lines and the exit statuses.

Exit statuses of ``rolling run``: 0 succeeded, 1 rolled back, 2 degraded,
3 halted, 4 aborted, 5 failed (to start, or on an error), 64 usage error,
78 bad configuration, 130 interrupted. Of ``rolling demo``: 0 when the
rollout succeeded and no request failed, 1 when the rollout did not succeed
(rolled back, halted), 2 when it succeeded but requests failed, 130 when
interrupted (after cleaning up), 64 for a usage error.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, cast

import anyio

from rolling import ConfigError

__all__ = ["entry_point", "main"]

EXIT_USAGE = 64
EXIT_CONFIG = 78
EXIT_UNAVAILABLE = 69
EXIT_NOPERM = 77
EXIT_REFUSED = 1
EXIT_NOINPUT = 66
EXIT_CANTCREAT = 73

_RUN_EXIT_HELP = (
    "exit status: 0 succeeded, 1 rolled back, 2 degraded, 3 halted, 4 aborted, 5 failed "
    "(to start, or on an error), 64 usage error, 78 bad configuration, 130 interrupted"
)
_CONTROL_EXIT_HELP = (
    "exit status: 0 done, 1 refused by the rollout (such as nothing to promote), "
    "64 usage error, 69 no run is listening (none, or a stale socket), "
    "77 permission denied, 78 bad configuration"
)


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


def _bounded(high: float, what: str) -> Callable[[str], float]:
    """An argparse type: a number from 0 to ``high``, named ``what`` in the error."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not 0 <= value <= high:
            msg = f"expected {what} from 0 to {high:g}, got {text!r}"
            raise argparse.ArgumentTypeError(msg)
        return value

    return parse


def _seconds(text: str) -> float:
    """An argparse type: seconds, 0 or more and finite (argparse names the option)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < math.inf:
        msg = f"expected seconds >= 0, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


_percent = _bounded(100, "a percentage")
_milliseconds = _bounded(60_000, "milliseconds")  # a minute at most


def _add_demo(commands: Any) -> None:
    demo = commands.add_parser(
        "demo",
        help="roll local processes from v1 to v2 behind a balancer, under load",
        description=(
            "Start N processes of a small HTTP app at v1 behind rolling's built-in balancer, "
            "send steady load through it, roll to v2 and report every request."
        ),
        epilog=(
            "exit status: 0 success with no failed request, 1 rollout not successful, "
            "2 requests failed, 64 usage error, 130 interrupted"
        ),
    )
    demo.add_argument("--instances", type=_positive, default=4, help="processes (default 4)")
    demo.add_argument(
        "--strategy",
        choices=("rolling", "batches", "canary", "blue-green"),
        default="rolling",
        help="a sliding window (rolling, default), lockstep batches, a weighted canary"
        " (10 %%, 50 %%, then promotion) or blue-green (switch, keep blue 3 s; with --faulty"
        " the post-promotion analysis switches back)",
    )
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
    demo.add_argument(
        "--flag",
        action="store_true",
        help="the app reads the flag new-format through OpenFeature (a flagd file); the rollout"
        " turns it on once every instance runs v2 and off before a rollback",
    )
    demo.add_argument("--json", action="store_true", help="print the report as JSON")
    demo.add_argument(
        "--html", type=Path, metavar="OUT", help="also write the rollout's timeline picture here"
    )
    demo.add_argument("--concurrency", type=_positive, default=8, help="load workers (default 8)")


_CONTROL_HELPS = {
    "status": "show where a running `rolling run` is",
    "pause": "start no new instance until `rolling resume`",
    "resume": "undo `rolling pause`",
    "promote": "end the current pause step (the manual approval gate)",
    "abort": "stop the running rollout and roll back what it changed",
}


def _add_control(commands: Any) -> None:
    for name, text in _CONTROL_HELPS.items():
        sub = commands.add_parser(name, help=text, description=text, epilog=_CONTROL_EXIT_HELP)
        sub.add_argument("file", type=Path, help="the rollout file the run was started with")
        sub.add_argument("--socket", type=Path, help="the control socket, if not the file's")
        sub.add_argument("--json", action="store_true", help="print the reply as JSON")
        if name == "promote":
            sub.add_argument("--full", action="store_true", help="skip every pause left as well")
        if name == "abort":
            sub.add_argument(
                "--no-rollback", action="store_true", help="leave changed instances as they are"
            )


class _UsageError(Exception):
    """A usage error argparse found; its usage line is already on stderr."""


class _Parser(argparse.ArgumentParser):
    """Usage errors come back to :func:`main`, so that ``--json`` can still end in JSON."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        raise _UsageError(f"{self.prog}: error: {message}")


def _usage_json(argv: Sequence[str], message: str) -> None:
    """With ``--json``, a usage error is one JSON object on stdout, as the command's others are."""
    if "--json" not in argv:
        return
    command = next((arg for arg in argv if not arg.startswith("-")), "")
    reply: dict[str, Any]
    if command == "run":  # the exit object that ends every `run --json`
        reply = {
            "schema": 1,
            "event": "exit",
            "summary": "rolling run: usage error",
            "outcome": "usage_error",
            "exit_code": EXIT_USAGE,
            "error": message,
        }
    elif command == "demo":
        reply = {"exit_code": EXIT_USAGE, "error": message}
    elif command in _CONTROL_HELPS:
        reply = {"ok": False, "error": message}
    else:
        return
    print(json.dumps(reply))  # noqa: T201 - CLI output


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rolling", description="Rolling deployments with no downtime.")
    parser.add_argument(
        "--version", action="version", version=f"rolling {importlib.metadata.version('rolling')}"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="roll out a rollout file's fleet to a version",
        description="Roll the fleet a rollout file describes out to VERSION.",
        epilog=_RUN_EXIT_HELP,
    )
    run.add_argument("file", type=Path, help="the rollout file (TOML)")
    run.add_argument("--to", required=True, metavar="VERSION", help="the version to roll out")
    run.add_argument(
        "--json", action="store_true", help="write every event as one JSON object per line"
    )
    plan = commands.add_parser(
        "plan",
        help="show what a run would change and a predicted timeline; changes nothing",
        description=(
            "List the fleet, what would change, the window or batches, the steps, and a"
            " predicted timeline, from durations learned from the last run of the same journal"
            " (its .events log) or from --estimate. Only list_instances() reaches the fleet."
        ),
        epilog=(
            "exit status: 0 planned, 5 the fleet could not be listed, 64 usage error,"
            " 66 the --history log cannot be read, 78 bad configuration"
        ),
    )
    plan.add_argument("file", type=Path, help="the rollout file (TOML)")
    plan.add_argument("--to", required=True, metavar="VERSION", help="the version to plan for")
    plan.add_argument(
        "--history", type=Path, help="an events log or --json output to learn durations from"
    )
    plan.add_argument(
        "--estimate",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="seconds per instance where none was learned (default 10)",
    )
    validate = commands.add_parser(
        "validate",
        help="check a rollout file and its plugins' settings, touching no fleet",
        description="Check a rollout file and build its plugins; nothing touches the fleet.",
        epilog="exit status: 0 valid, 64 usage error, 78 bad configuration",
    )
    validate.add_argument("file", type=Path, help="the rollout file (TOML)")
    _add_control(commands)
    report = commands.add_parser(
        "report",
        help="summarise a rollout from its event log, or draw its timeline as HTML",
        description=(
            "Read a rollout's events (the JOURNAL.events log `rolling run` keeps next to its"
            " journal, or saved `rolling run --json` output) and summarise it; with --html,"
            " write a self-contained timeline picture."
        ),
        epilog=(
            "exit status: 0 done, 64 usage error, 66 no events to read,"
            " 73 the --html file cannot be written"
        ),
    )
    report.add_argument("events", type=Path, help="a journal, its .events log, or --json output")
    report.add_argument("--html", type=Path, metavar="OUT", help="write the timeline page here")
    plugins = commands.add_parser(
        "plugins",
        help="list the installed drivers, routers, checks and metric providers",
        description="List the plugins installed, by entry-point group, and their package.",
    )
    plugins.add_argument("--json", action="store_true", help="print them as JSON")
    _add_demo(commands)
    return parser


def _error(message: str) -> None:
    print(message, file=sys.stderr)  # noqa: T201 - CLI output


def _cmd_plugins(args: argparse.Namespace) -> int:
    from rolling.plugins import installed  # noqa: PLC0415 - keeps `rolling --help` light

    found = installed()
    if args.json:
        print(json.dumps([{  # noqa: T201 - CLI output
            "group": p.group, "name": p.name, "value": p.value,
            "distribution": p.distribution, "version": p.version,
        } for p in found], indent=2))  # fmt: skip
        return 0
    group = ""
    for plugin in found:
        if plugin.group != group:
            group = plugin.group
            print(f"{group}:")  # noqa: T201 - CLI output
        source = f"{plugin.distribution} {plugin.version}".strip() or "unknown package"
        print(f"  {plugin.name:<12} {plugin.value}  ({source})")  # noqa: T201 - CLI output
    return 0


def _cmd_plan(args: argparse.Namespace, rollout_file: Any) -> int:
    from ._run import plan_file  # noqa: PLC0415 - keeps `rolling --help` light

    unreadable = None if args.history is None else _unreadable(args.history)
    if unreadable is not None:
        _error(f"rolling plan: cannot read the --history log {args.history}: {unreadable}")
        return EXIT_NOINPUT
    try:
        plan = anyio.run(
            lambda: plan_file(rollout_file, args.to, history=args.history, estimate=args.estimate)
        )
    except ConfigError as exc:
        _error(f"rolling plan: {args.file}: {rollout_file.redact(str(exc))}")
        return EXIT_CONFIG
    except Exception as exc:  # noqa: BLE001 - a plugin's own error: say it, exit 5
        _error(f"rolling plan: {type(exc).__name__}: {rollout_file.redact(str(exc))}")
        return 5
    # The values of ${NAME} are never printed (cli.md, Secrets): not in a plan either.
    print(rollout_file.redact(plan.to_text()))  # noqa: T201 - CLI output
    return 0


def _unreadable(path: Path) -> str | None:
    """Why the file at ``path`` cannot be read, or None when it can."""
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _read_events(path: Path) -> list[dict[str, Any]]:
    from ._output import events_log  # noqa: PLC0415 - keeps `rolling --help` light

    if not path.name.endswith((".events", ".jsonl", ".json")) and events_log(path).exists():
        path = events_log(path)  # a journal: its events log sits next to it
    lines: list[dict[str, Any]] = []
    for text in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            line: object = json.loads(text)
        except json.JSONDecodeError:
            continue  # a torn last line of a running (or killed) rollout's log
        if isinstance(line, dict) and line.get("schema") == 1:  # pyright: ignore[reportUnknownMemberType]
            lines.append(cast("dict[str, Any]", line))
    # A log keeps every run of the journal: the picture is of the last one.
    starts = [i for i, line in enumerate(lines) if line.get("event") == "rollout_started"]
    return lines[max(starts[-1] - 1, 0) :] if starts else lines


def _cmd_report(args: argparse.Namespace) -> int:
    from ._timeline import render  # noqa: PLC0415 - keeps `rolling --help` light

    try:
        lines = _read_events(args.events)
    except OSError as exc:
        _error(f"rolling report: cannot read {args.events}: {exc.strerror}")
        return EXIT_NOINPUT
    if not any(line.get("event") == "rollout_started" for line in lines):
        _error(f"rolling report: {args.events} holds no rollout events (schema 1)")
        return EXIT_NOINPUT
    outcomes: dict[str, str] = {}
    for line in lines:
        if line.get("event") == "instance_phase_changed":
            outcomes[str(line["instance_id"])] = str(line["phase"])
    finished = [line for line in lines if line.get("event") == "rollout_finished"]
    counts: dict[str, int] = {}
    for phase in outcomes.values():
        counts[phase] = counts.get(phase, 0) + 1
    state = finished[-1]["result"]["status"] if finished else "running (or cut short)"
    times = [float(line["at"]) for line in lines if isinstance(line.get("at"), int | float)]
    span = max(times) - min(times)
    by_phase = ", ".join(f"{n} {p}" for p, n in sorted(counts.items()))
    if args.html is not None:
        page = render(lines, title=f"rollout: {args.events.name}")
        try:
            args.html.write_text(page, encoding="utf-8")
        except OSError as exc:
            _error(f"rolling report: cannot write {args.html}: {exc.strerror or exc}")
            return EXIT_CANTCREAT
    print(f"{args.events}: {state}; {span:.1f} s; {by_phase or 'no instance changed'}")  # noqa: T201 - CLI output
    if args.html is not None:
        print(f"timeline written to {args.html}")  # noqa: T201 - CLI output
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from ._file import load_file  # noqa: PLC0415 - keeps `rolling --help` light
    from ._run import bad_file, run_file  # noqa: PLC0415 - as above

    try:
        rollout_file = load_file(args.file)
    except ConfigError as exc:
        if args.command == "run":
            return bad_file(str(exc), json=args.json, out=sys.stdout)
        _error(f"rolling {args.command}: {exc}")
        return EXIT_CONFIG
    if args.command == "validate":
        print(f"{args.file}: valid")  # noqa: T201 - CLI output
        return 0
    if args.command == "plan":
        return _cmd_plan(args, rollout_file)
    return anyio.run(lambda: run_file(rollout_file, args.to, json=args.json, out=sys.stdout))


def _cmd_control(args: argparse.Namespace) -> int:
    from ._control import ControlUnavailableError, request  # noqa: PLC0415 - keeps --help light
    from ._file import control_path  # noqa: PLC0415 - as above

    try:
        path = args.socket or control_path(args.file)
    except ConfigError as exc:
        return _control_failed(args, str(exc), EXIT_CONFIG)
    message: dict[str, Any] = {"action": args.command}
    if args.command == "promote":
        message["full"] = args.full
    if args.command == "abort":
        message["rollback"] = not args.no_rollback
    try:
        reply = request(path, message)
    except ControlUnavailableError as exc:
        return _control_failed(args, str(exc), EXIT_UNAVAILABLE)
    except PermissionError as exc:
        error = f"permission denied on {path}: {exc.strerror}"
        return _control_failed(args, error, EXIT_NOPERM)
    if args.json:
        print(json.dumps(reply, sort_keys=True))  # noqa: T201 - CLI output
    elif reply.get("ok"):
        print(_status_text(reply["status"]))  # noqa: T201 - CLI output
    if not reply.get("ok"):
        error = str(reply.get("error", "refused"))
        _error(f"rolling {args.command}: {error}")
        return EXIT_NOPERM if error.startswith("refused: uid") else EXIT_REFUSED
    return 0


def _control_failed(args: argparse.Namespace, error: str, status: int) -> int:
    """No reply came: say why; with --json, as a reply would (``ok`` false), on stdout."""
    _error(f"rolling {args.command}: {error}")
    if args.json:
        print(json.dumps({"ok": False, "error": error}, sort_keys=True))  # noqa: T201 - CLI output
    return status


def _status_text(status: dict[str, Any]) -> str:
    counts = ", ".join(f"{n} {o}" for o, n in sorted(status["counts"].items()) if n)
    step = status["step"]
    waiting = ""
    if step is not None:
        waiting = "; waiting on " + (
            "a pause until `rolling promote`"
            if step["type"] == "pause" and step["seconds"] is None
            else f"a {step['type']} step"
        )
    paused = "; paused" if status["paused"] else ""
    traffic = status.get("traffic")  # absent from a run of an older rolling
    if traffic is not None:
        paused += f"; the new set gets {traffic:.1f} % of new requests"
    flight = ", ".join(status["in_flight"]) or "none"
    elapsed = f"{status['elapsed']:.1f} s"
    return (
        f"{status['status']} -> {status['target']} after {elapsed}: {counts or '-'};"
        f" in flight: {flight}{waiting}{paused}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        _error(str(exc))
        _usage_json(sys.argv[1:] if argv is None else argv, str(exc))
        return EXIT_USAGE
    except SystemExit as exc:
        return EXIT_USAGE if exc.code not in (0, None) else 0
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    commands = {
        "plugins": _cmd_plugins,
        "report": _cmd_report,
        "run": _cmd_run,
        "plan": _cmd_run,
        "validate": _cmd_run,
        "demo": _cmd_demo,
    }
    return commands.get(args.command, _cmd_control)(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from rolling.demo._runner import DemoOptions, run_demo  # noqa: PLC0415 - keeps `import rolling` light

    options = DemoOptions(
        instances=args.instances,
        strategy=args.strategy,
        max_unavailable=args.max_unavailable,
        max_surge=args.max_surge,
        broken=args.broken,
        drain=not args.no_drain,
        json=args.json,
        concurrency=args.concurrency,
        html=args.html,
        faulty=args.faulty,
        slow_ms=args.slow,
        analysis=not args.no_analysis,
        flag=args.flag,
    )
    progress = sys.stderr if args.json else sys.stdout
    try:
        report = anyio.run(run_demo, options, progress)
    except ConfigError as exc:
        _error(f"rolling demo: {exc}")
        if args.json:  # stdout carries one JSON object, refused or not
            print(json.dumps({"exit_code": EXIT_USAGE, "error": str(exc)}))  # noqa: T201 - CLI output
        return EXIT_USAGE
    print(report.to_json() if args.json else report.to_text())  # noqa: T201 - CLI output
    return report.exit_code


def entry_point() -> None:
    """Console-script entry point."""
    try:
        status = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`rolling plan ... | head`): as other Unix tools do, stop
        # quietly. Python would print a traceback, then another one at exit's flush.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = 128 + signal.SIGPIPE
    sys.exit(status)

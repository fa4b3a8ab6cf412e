"""The demo's closing report, for people and for machines."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import attrs

from rolling import RolloutResult, RolloutStatus
from rolling.events import RollbackStarted, TrafficShifted

from ._load import Sample, percentile

__all__ = ["EXIT_FAILED_REQUESTS", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_ROLLOUT", "DemoReport"]

EXIT_OK = 0
"""The rollout succeeded and no request failed."""
EXIT_ROLLOUT = 1
"""The rollout did not succeed (rolled back, halted...)."""
EXIT_FAILED_REQUESTS = 2
"""The rollout succeeded but requests failed: the zero-downtime promise was broken."""
EXIT_INTERRUPTED = 130
"""Interrupted (SIGINT or SIGTERM); the fleet was cleaned up first."""


@attrs.frozen(kw_only=True)
class DemoReport:
    """What the demo measured.

    Attributes:
        status: The rollout's status.
        reason: Why it stopped, if it did not succeed.
        instances: Processes in the fleet.
        strategy: The strategy, as text.
        drain: Whether backends were drained before being stopped.
        requests: Requests sent.
        failed: Requests that failed.
        errors: Failed requests by cause.
        p50_ms: Median latency, in milliseconds.
        p99_ms: 99th percentile latency, in milliseconds.
        share: Each version's share of the answers during the rollout.
        rollout_seconds: How long the rollout took.
        demo_seconds: How long the whole demo took.
        interrupted: Whether the demo was interrupted.
        analysis: Whether metric analysis watched the rollout.
        final_versions: Instances on each version at the end.
        detect_seconds: Seconds from the first request a new-version
            instance answered to the analysis's failing measurement; None
            when nothing was detected.
        failed_before_detect: Requests that failed before that measurement
            (all failed requests when nothing was detected).
        flag_checked: With ``--flag``: answers that reported the flag value they used.
        flag_on: ... of which answers that saw the flag on.
        flag_on_old: ... of which v1 answers that saw the flag on (the goal is 0).
        flag_changes: The rollout's flag changes, as text.
        traffic: Canary and blue-green: each traffic shift, as text: the share
            asked for, the share the weights give, and the share of answers
            the new version gave until the next shift (left out of the JSON
            when empty).
    """

    status: str
    reason: str
    instances: int
    strategy: str
    drain: bool
    requests: int
    failed: int
    errors: dict[str, int]
    p50_ms: float
    p99_ms: float
    share: dict[str, float]
    rollout_seconds: float
    demo_seconds: float
    interrupted: bool = False
    analysis: bool = False
    final_versions: dict[str, int] = attrs.Factory(dict[str, int])
    detect_seconds: float | None = None
    failed_before_detect: int = 0
    flag_checked: int = 0
    flag_on: int = 0
    flag_on_old: int = 0
    flag_changes: list[str] = attrs.Factory(list[str])
    traffic: list[str] = attrs.Factory(list[str])

    @classmethod
    def build(
        cls,
        *,
        result: RolloutResult | None,
        samples: Sequence[Sample],
        instances: int,
        strategy: str,
        drain: bool,
        demo_seconds: float,
        interrupted: bool,
        analysis: bool = False,
        cut_short_after: float | None = None,
        flag: bool = False,
        shifts: Sequence[TrafficShifted | RollbackStarted] = (),
    ) -> DemoReport:
        """Summarise the samples and the rollout's result.

        ``cut_short_after`` is how long the rollout ran when it was interrupted
        (None when it never started).
        """
        detected_at = _detected_at(result)
        first_new = min(
            (s.at for s in samples if s.version is not None and s.version != "v1"), default=None
        )
        detect = None
        if detected_at is not None and first_new is not None:
            detect = round(max(0.0, detected_at - first_new), 3)
        before = [s for s in samples if detected_at is None or s.at <= detected_at]
        latencies = [s.latency * 1000 for s in samples if s.ok]
        failures = [s for s in samples if not s.ok]
        during = samples
        if result is not None:
            during = [s for s in samples if result.started_at <= s.at <= result.finished_at]
        versions = Counter(s.version for s in during if s.ok and s.version)
        answered = sum(versions.values())
        return cls(
            status=str(result.status) if result is not None else "interrupted",
            reason=result.reason if result is not None else "",
            instances=instances,
            strategy=strategy,
            drain=drain,
            requests=len(samples),
            failed=len(failures),
            errors=dict(Counter(s.error for s in failures)),
            p50_ms=round(percentile(latencies, 50), 2),
            p99_ms=round(percentile(latencies, 99), 2),
            share={v: round(n / answered, 4) for v, n in sorted(versions.items())}
            if answered
            else {},
            rollout_seconds=round(
                result.duration if result is not None else cut_short_after or 0.0, 3
            ),
            demo_seconds=round(demo_seconds, 3),
            interrupted=interrupted,
            analysis=analysis,
            final_versions=dict(
                sorted(Counter(i.version or "none" for i in result.instances).items())
            )
            if result is not None
            else {},
            detect_seconds=detect,
            failed_before_detect=sum(1 for s in before if not s.ok),
            **(_flag_figures(result, samples) if flag else {}),
            traffic=_traffic(result, samples, shifts),
        )

    @property
    def exit_code(self) -> int:
        """0 on success; see the ``EXIT_*`` constants for the rest."""
        if self.interrupted:
            return EXIT_INTERRUPTED
        if self.status != RolloutStatus.SUCCEEDED:
            return EXIT_ROLLOUT
        if self.failed:
            return EXIT_FAILED_REQUESTS
        return EXIT_OK

    def to_json(self) -> str:
        """The report as one JSON object."""
        data = attrs.asdict(self)
        data["exit_code"] = self.exit_code
        if not self.traffic:
            del data["traffic"]  # a rolling update's report stays as it was
        return json.dumps(data, indent=2, sort_keys=True)

    def _rollout_duration(self) -> str:
        if not self.interrupted:
            return f"rollout {self.rollout_seconds:.2f} s"
        if self.rollout_seconds:
            return f"rollout cut short after {self.rollout_seconds:.2f} s"
        return "interrupted before the rollout started"

    def to_text(self) -> str:
        """The report for a terminal."""
        share = ", ".join(f"{v} {p:.0%}" for v, p in self.share.items()) or "none"
        errors = ", ".join(f"{k}: {n}" for k, n in sorted(self.errors.items())) or "none"
        verdict = {
            EXIT_OK: "zero downtime: every request answered",
            EXIT_ROLLOUT: "the rollout did not succeed; the reason is above",
            EXIT_FAILED_REQUESTS: "requests FAILED during the rollout",
            EXIT_INTERRUPTED: "interrupted; the fleet was cleaned up",
        }[self.exit_code]
        lines = [
            "",
            "rolling demo report",
            f"  rollout        {self.status}",
            *([f"  reason         {self.reason}"] if self.reason else []),
            f"  fleet          {self.instances} processes, {self.strategy}, "
            + ("draining" if self.drain else "NO draining"),
            f"  requests       {self.requests} sent, {self.failed} failed",
            f"  errors         {errors}",
            f"  latency        p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms",
            f"  traffic share  {share} (during the rollout)",
            f"  duration       {self._rollout_duration()}, demo {self.demo_seconds:.2f} s",
            f"  verdict        {verdict} (exit {self.exit_code})",
        ]
        if self.traffic:
            lines[-1:-1] = [
                "  traffic        " + self.traffic[0],
                *(f"                 {line}" for line in self.traffic[1:]),
            ]
        if self.flag_changes or self.flag_checked:
            lines[-1:-1] = [
                "  flag           " + ("; ".join(self.flag_changes) or "unchanged"),
                (
                    f"                 {self.flag_checked} answers checked, {self.flag_on} saw"
                    f" it on, {self.flag_on_old} of them from v1"
                ),
            ]
        if self.final_versions:
            versions = ", ".join(f"{v}: {n}" for v, n in self.final_versions.items())
            detected = (
                f"detected {self.detect_seconds:.2f} s after the first v2 answer,"
                f" {self.failed_before_detect} requests failed before"
                if self.detect_seconds is not None
                else "nothing detected"
            )
            lines[-1:-1] = [
                "  analysis       " + (detected if self.analysis else "off"),
                f"  final fleet    {versions}",
            ]
        return "\n".join(lines)


def _flag_figures(result: RolloutResult | None, samples: Sequence[Sample]) -> dict[str, Any]:
    """What ``--flag`` measured: answers checked, v1 answers with the flag on, the changes."""
    checked = [s for s in samples if s.ok and s.flag is not None]
    changes = [] if result is None else list(result.flags)
    start = 0.0 if result is None else result.started_at
    return {
        "flag_checked": len(checked),
        "flag_on": sum(1 for s in checked if s.flag == "on"),
        "flag_on_old": sum(1 for s in checked if s.version == "v1" and s.flag == "on"),
        "flag_changes": [
            f"{c.flag} {'on' if c.value is True else 'off'} ({c.cause})"
            f"{'' if c.ok else ' FAILED: ' + c.reason} at {c.at - start:.2f} s"
            for c in changes
        ],
    }


def _traffic(
    result: RolloutResult | None,
    samples: Sequence[Sample],
    shifts: Sequence[TrafficShifted | RollbackStarted],
) -> list[str]:
    """Each shift: asked, achieved by the weights, and measured until the next shift."""
    start = 0.0 if result is None else result.started_at
    end = math.inf if result is None else result.finished_at  # interrupted: every answer after
    lines: list[str] = []
    for index, shift in enumerate(shifts):
        until = shifts[index + 1].at if index + 1 < len(shifts) else end
        window = [s for s in samples if s.ok and s.version and shift.at <= s.at < until]
        new = sum(1 for s in window if s.version != "v1")
        seen = f"{100 * new / len(window):.1f} %" if window else "-"
        measured = f"measured {seen} ({new} of {len(window)})"
        if isinstance(shift, RollbackStarted):
            lines.append(f"rollback at {shift.at - start:.2f} s: back to v1, {measured}")
            continue
        lines.append(
            f"{shift.reason} at {shift.at - start:.2f} s: asked {shift.percent:g} %,"
            f" weights give {shift.achieved:.1f} %, {measured}"
        )
    return lines


def _detected_at(result: RolloutResult | None) -> float | None:
    """When the analysis's first failing measurement was taken, if one decided the rollout."""
    if result is None or result.verdict is None or result.verdict.outcome != "failed":
        return None
    return min((m.at for m in result.measurements if m.outcome == "failed"), default=None)

"""The timeline picture: a self-contained HTML page with one inline SVG, from a run's JSON lines.

One row per instance, time across; each phase a coloured span, the final
outcome a paler span to the end, versions in the row's label and tooltip;
steps, gates, control calls and the rollback as marks on the time axis. No
script and no external asset: the file opens anywhere, and a code host's
viewer shows it as it is. Rows shrink to two pixels for large fleets (their
labels go, their tooltips stay), so 10 and 1,000 instances both read.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["PHASE_COLOURS", "render"]

PHASE_COLOURS: Mapping[str, str] = {
    "pending": "#e0e0e0",
    "skipped": "#cfd8dc",
    "detaching": "#ffb74d",
    "detached": "#ffa726",
    "replacing": "#4fc3f7",
    "launching": "#4fc3f7",
    "launched": "#29b6f6",
    "waiting_ready": "#9575cd",
    "ready": "#7e57c2",
    "attaching": "#81c784",
    "attached": "#66bb6a",
    "terminating": "#90a4ae",
    "terminated": "#78909c",
    "backing_off": "#ff8a65",
    "updated": "#2e7d32",
    "failed": "#d32f2f",
    "reverting": "#f06292",
    "reverted": "#8d6e63",
    "revert_failed": "#b71c1c",
    "interrupted": "#455a64",
}
"""The colour of each phase, for the picture and its legend."""

_FINAL = {"updated", "failed", "reverted", "revert_failed", "interrupted", "skipped"}
_WIDTH = 1200
_LABEL = 170
_TOP = 40
_AXIS = 30
_ROW = 18
_FULL_ROWS = 40
"""Up to this many instances, rows are full height; beyond, they shrink to fit."""
_LABELLED = 10
"""Rows at least this tall carry their labels."""


Line = Mapping[str, Any]


def _rows(lines: Iterable[Line]) -> tuple[dict[str, list[Line]], list[Line], float, float]:
    rows: dict[str, list[Mapping[str, Any]]] = {}
    marks: list[Mapping[str, Any]] = []
    start = math.inf
    end = -math.inf
    for line in lines:
        at = line.get("at")
        if not isinstance(at, int | float):
            continue
        start, end = min(start, at), max(end, at)
        kind = line.get("event")
        if kind == "rollout_started":
            for instance in (*line.get("to_update", ()), *line.get("skipped", ())):
                rows.setdefault(str(instance), [])
            for instance in line.get("skipped", ()):
                rows[str(instance)].append(
                    {"at": at, "phase": "skipped", "version": line["target"]}
                )
        elif kind == "instance_phase_changed":
            rows.setdefault(str(line["instance_id"]), []).append(line)
        elif kind in {
            "step_started",
            "gate_checked",
            "control_requested",
            "rollback_started",
            "batch_started",
            "analysis_decided",
        }:
            marks.append(line)
    if start is math.inf:
        start = end = 0.0
    return rows, marks, start, max(end, start + 1e-9)


def _mark_text(mark: Mapping[str, Any]) -> tuple[str, str]:  # noqa: PLR0911 - one per kind
    kind = mark["event"]
    if kind == "step_started":
        step = mark.get("step", {})
        what = step.get("type", "step")
        if what == "pause":
            seconds = step.get("seconds")
            return ("pause until promote" if seconds is None else f"pause {seconds:g}s"), "#546e7a"
        if what == "advance":
            return f"advance to {step.get('to')}", "#546e7a"
        if what == "analyze":
            return "analyze " + ", ".join(step.get("metrics", ())), "#546e7a"
        return f"gate {step.get('name', '')}", "#546e7a"
    if kind == "gate_checked":
        verdict = "passed" if mark.get("passed") else "failed"
        return f"gate {mark.get('name', '')} {verdict}", "#2e7d32" if mark.get(
            "passed"
        ) else "#d32f2f"
    if kind == "control_requested":
        return f"{mark.get('action', '')}", "#1565c0"
    if kind == "batch_started":
        return f"batch {int(mark.get('index', 0)) + 1}", "#9e9e9e"
    if kind == "analysis_decided":
        verdict = mark.get("verdict", {})
        outcome = str(verdict.get("outcome", ""))
        colour = {"successful": "#2e7d32", "failed": "#d32f2f"}.get(outcome, "#f9a825")
        return f"analysis {verdict.get('analysis', '')}: {outcome}"[:60], colour
    return f"rollback: {mark.get('reason', '')}"[:60], "#d32f2f"


def _ticks(span: float) -> list[float]:
    raw = span / 8
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    return [i * step for i in range(int(span / step) + 1)]


def render(lines: Iterable[Mapping[str, Any]], *, title: str = "rollout") -> str:  # noqa: C901, PLR0915 - one drawing, top to bottom
    """The HTML page for the events in ``lines`` (decoded JSON lines of ``rolling run --json``)."""
    lines = list(lines)
    rows, marks, start, end = _rows(lines)
    span = end - start
    finished = [line for line in lines if line.get("event") == "rollout_finished"]
    if finished:
        result = finished[-1].get("result", {})
        summary = f"to {result.get('target', '?')}: {result.get('status', '?')}"
    else:
        summary = "still running, or cut short"
    count = len(rows)
    row_h = _ROW if count <= _FULL_ROWS else max(2, min(12, 900 // max(count, 1)))
    labels = row_h >= _LABELLED
    plot_w = _WIDTH - _LABEL - 20
    height = _TOP + count * row_h + _AXIS + 20

    def x(at: float) -> float:
        return _LABEL + (at - start) / span * plot_w

    parts: list[str] = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{height}"'
            f' viewBox="0 0 {_WIDTH} {height}" role="img"'
            f' aria-label="{html.escape(title)} timeline"'
            ' font-family="sans-serif" font-size="11">'
        )
    ]
    for number, (instance, changes) in enumerate(rows.items()):
        y = _TOP + number * row_h
        versions = [str(c.get("version", "")) for c in changes]
        final = changes[-1] if changes else None
        outcome = str(final["phase"]) if final else "pending"
        old = next((str(c["version"]) for c in changes if c.get("rollback")), None)
        tip = f"{instance}: {outcome}" + (f" ({versions[-1]})" if versions else "")
        parts.append(f'<g class="row" data-instance="{html.escape(instance)}">')
        parts.append(f"<title>{html.escape(tip)}</title>")
        if number % 2 and labels:  # zebra rows only where rows are tall enough to read
            parts.append(
                f'<rect x="{_LABEL}" y="{y}" width="{plot_w}" height="{row_h}" fill="#fafafa"/>'
            )
        for index, here in enumerate(changes):
            after = changes[index + 1] if index + 1 < len(changes) else None
            phase = str(here["phase"])
            begin = x(here["at"])
            stop = x(after["at"]) if after is not None else x(end)
            colour = PHASE_COLOURS.get(phase, "#bdbdbd")
            opacity = "0.35" if phase in _FINAL and after is None else "1"
            width = max(stop - begin, 1.0)
            # The way back (a rollback's revert) is outlined in red.
            outline = (
                ' stroke="#c62828" stroke-width="1"' if here.get("rollback") and labels else ""
            )
            version = here.get("version", "")
            parts.append(
                f'<rect class="phase" x="{begin:.1f}" y="{y + 1}" width="{width:.1f}"'
                f' height="{max(row_h - 2, 1)}" fill="{colour}" fill-opacity="{opacity}"{outline}>'
                f"<title>{html.escape(instance)}: {phase} ({html.escape(str(version))})"
                f"{' rollback' if here.get('rollback') else ''}</title></rect>"
            )
            if phase in {"failed", "revert_failed"} and labels:
                parts.append(
                    f'<text x="{begin:.1f}" y="{y + row_h - 3}" fill="#b71c1c"'
                    ' font-weight="bold">✕</text>'
                )
        if labels:
            shown = versions[-1] if versions else "not reached"
            if old is not None:
                shown = f"{shown} (rolled back)"
            parts.append(
                f'<text x="4" y="{y + row_h - 5}">{html.escape(instance)}</text>'
                f'<text x="{_LABEL - 6}" y="{y + row_h - 5}" text-anchor="end" fill="#555">'
                f"{html.escape(shown)}</text>"
            )
        parts.append("</g>")
    for index, mark in enumerate(marks):
        text, colour = _mark_text(mark)
        mx = x(mark["at"])
        right = mx > _LABEL + plot_w * 0.6  # label to the left of its line, inside the picture
        anchor = ' text-anchor="end"' if right else ""
        parts.append(
            f'<g class="mark"><line x1="{mx:.1f}" y1="{_TOP - 4}" x2="{mx:.1f}"'
            f' y2="{_TOP + count * row_h}" stroke="{colour}" stroke-dasharray="3,3"/>'
            f'<text x="{mx + (-2 if right else 2):.1f}" y="{12 + (index % 2) * 12}"'
            f' fill="{colour}"{anchor}>'
            f"{html.escape(text)}</text></g>"
        )
    axis_y = _TOP + count * row_h + 4
    parts.append(
        f'<line x1="{_LABEL}" y1="{axis_y}" x2="{_LABEL + plot_w}" y2="{axis_y}" stroke="#333"/>'
    )
    for tick in _ticks(span):
        tx = x(start + tick)
        parts.append(
            f'<line x1="{tx:.1f}" y1="{axis_y}" x2="{tx:.1f}" y2="{axis_y + 4}" stroke="#333"/>'
            f'<text x="{tx:.1f}" y="{axis_y + 16}" text-anchor="middle">{tick:g}s</text>'
        )
    parts.append("</svg>")
    legend = "".join(
        f'<span class="key"><span class="swatch" style="background:{colour}"></span>{phase}</span>'
        for phase, colour in PHASE_COLOURS.items()
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>"
        "body{font-family:sans-serif;margin:16px;color:#222}"
        ".key{display:inline-block;margin:0 10px 4px 0;font-size:12px}"
        ".swatch{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:middle}"
        "</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f"<p>{html.escape(summary)}; {count} instances, {span:.1f} s."
        " One row per instance; time runs left to right.</p>"
        f"<div>{legend}</div>\n" + "".join(parts) + "\n</body></html>\n"
    )

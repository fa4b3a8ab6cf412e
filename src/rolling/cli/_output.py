"""What ``rolling run`` writes: JSON lines, plain lines, or a live line on a terminal.

The JSON form is a contract for pipelines (docs/cli.md, and the JSON Schema
in docs/cli-events.schema.json that the tests validate against): one object
per event, with ``"schema"`` (:data:`JSON_SCHEMA`), ``"event"`` (the event
class's name in snake case), ``"at"``, ``"wall"`` and the event's fields.
Adding a field or an event type keeps the schema number; renaming or removing
one, or changing a field's meaning, raises it.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import attrs

from rolling import (
    Analyze,
    Gate,
    Pause,
    RolloutResult,
    RolloutStatus,
    SetCanaryScale,
    SetFlag,
    SetWeight,
    Step,
)
from rolling.events import (
    BatchFinished,
    BatchStarted,
    ControlRequested,
    Event,
    GateChecked,
    InstancePhaseChanged,
    Phase,
    ProgressDeadlineExceeded,
    RollbackStarted,
    RolloutFinished,
    RolloutStarted,
    StatusChanged,
    StepFinished,
    StepStarted,
    TrafficShifted,
    WaveStarted,
)

__all__ = [
    "JSON_SCHEMA",
    "Output",
    "event_name",
    "events_log",
    "step_json",
    "step_text",
    "to_json",
]

_SETTLED = frozenset({Phase.UPDATED, Phase.REVERTED, Phase.SKIPPED})
"""Phases after which an instance runs the event's version for good."""

JSON_SCHEMA = 1
"""Version of the JSON lines format; see the module docstring for when it changes."""

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def events_log(journal: Path) -> Path:
    """Where ``rolling run`` appends its JSON lines, next to the journal: ``<journal>.events``."""
    return journal.with_name(journal.name + ".events")


def event_name(event: Event) -> str:
    """``InstancePhaseChanged`` -> ``instance_phase_changed``."""
    return _CAMEL.sub("_", type(event).__name__).lower()


def step_json(step: Step) -> dict[str, Any]:  # noqa: PLR0911 - one return per kind of step
    """A step as JSON: ``{"type": "pause", "seconds": null}`` and so on."""
    if isinstance(step, Pause):
        return {"type": "pause", "seconds": step.seconds}
    if isinstance(step, Gate):
        return {"type": "gate", "name": step.name, "timeout": step.timeout}
    if isinstance(step, Analyze):
        return {"type": "analyze", "metrics": [m.name for m in step.analysis.metrics]}
    if isinstance(step, SetFlag):
        return {"type": "set_flag", "flag": step.flag, "value": step.value}
    if isinstance(step, SetWeight):
        return {"type": "set_weight", "percent": step.percent}
    if isinstance(step, SetCanaryScale):
        return {
            "type": "set_canary_scale",
            "replicas": step.replicas,
            "match_traffic_weight": step.match_traffic_weight,
        }
    return {"type": "advance", "to": step.to}


def _result_json(result: RolloutResult) -> dict[str, Any]:
    return {
        "status": result.status.value,
        "target": result.target,
        "reason": result.reason,
        "started_at": result.started_at,
        "finished_at": result.finished_at,
        "instances": [
            {
                "id": i.id,
                "outcome": i.outcome.value,
                "old_version": i.old_version,
                "version": i.version,
                "current_id": i.current_id,
                "serving": i.serving,
                "attempts": i.attempts,
                "reason": i.reason,
                "started_at": i.started_at,
                "finished_at": i.finished_at,
                "strays": list(i.strays),
            }
            for i in result.instances
        ],
    }


def _value(value: Any) -> Any:  # noqa: PLR0911 - one return per kind of value
    if isinstance(value, enum.Enum):
        return _value(value.value)
    if isinstance(value, Step):  # every kind of step, as step_json says it
        return step_json(value)
    if isinstance(value, RolloutResult):
        return _result_json(value)
    if attrs.has(value.__class__):
        return _fields(value)
    if isinstance(value, tuple | list):
        return [_value(v) for v in value]  # pyright: ignore[reportUnknownVariableType]
    if isinstance(value, dict):
        return {str(k): _value(v) for k, v in value.items()}  # pyright: ignore[reportUnknownVariableType, reportUnknownArgumentType]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)  # a wave key, or an adapter event's own type


def _fields(value: Any) -> dict[str, Any]:
    """An analysis's measurement or verdict: its fields, as the result's to_dict() has them."""
    kind: Any = value.__class__
    names: list[str] = [f.name for f in attrs.fields(kind)]
    return {name: _value(getattr(value, name)) for name in names}


def to_json(event: Event) -> dict[str, Any]:
    """``event`` as one JSON object of the documented schema."""
    data: dict[str, Any] = {"schema": JSON_SCHEMA, "event": event_name(event)}
    for field in attrs.fields(type(event)):
        data[field.name] = _value(getattr(event, field.name))
    return data


def _plain(event: Event) -> str | None:  # noqa: C901, PLR0911, PLR0912 - one line per event type
    """One line for a person reading a log; None for events that add nothing to one."""
    match event:
        case RolloutStarted():
            return (
                f"started: {event.desired} instances, {len(event.to_update)} to update to"
                f" {event.target}, {len(event.skipped)} already on it"
                f" (at most {event.max_unavailable} out of service, {event.max_surge} extra)"
            )
        case InstancePhaseChanged():
            where = (
                f" as {event.current_id}"
                if event.current_id not in {None, event.instance_id}
                else ""
            )
            what = "rollback: " if event.rollback else ""
            retry = f" (attempt {event.attempt})" if event.attempt > 1 else ""
            why = f": {event.reason}" if event.reason else ""
            phase = event.phase.value
            return f"{what}{event.instance_id}{where} {phase} -> {event.version}{retry}{why}"
        case WaveStarted() if event.key is None:
            return None  # without waves the whole fleet is one wave: nothing to say
        case WaveStarted():
            return f"wave {event.index + 1} ({event.key}): {len(event.instance_ids)} instances"
        case BatchStarted():
            return f"batch {event.index + 1}: {', '.join(event.instance_ids)}"
        case BatchFinished():
            return f"batch {event.index + 1} done ({event.failed} failed)"
        case StepStarted():
            return f"step {event.index + 1}: {step_text(event.step)}"
        case StepFinished():
            how = " (promoted)" if event.promoted else ""
            return f"step {event.index + 1} done{how}"
        case GateChecked():
            verdict = "passed" if event.passed else "failed"
            return f"gate {event.name} {verdict}" + (f": {event.reason}" if event.reason else "")
        case ControlRequested():
            return f"control: {event.action}" + (f" ({event.detail})" if event.detail else "")
        case StatusChanged():
            return f"status: {event.status.value}"
        case ProgressDeadlineExceeded():
            return f"no progress within {event.seconds:g} s: {event.action}"
        case RollbackStarted():
            return f"rollback ({event.mode}): {event.reason}"
        case TrafficShifted():
            return (
                f"traffic ({event.reason}): {event.percent:g} % to the new set asked,"
                f" {event.achieved:.1f} % by weight ({event.new_instances} new at"
                f" {event.new_weight}, old at {event.old_weight})"
            )
        case RolloutFinished():
            return None  # the summary line says it
        case _:
            return f"{event_name(event)}"


def step_text(step: Step) -> str:  # noqa: PLR0911 - one return per kind of step
    """A step in a few words, as the plain lines and `rolling plan` say it."""
    if isinstance(step, Pause):
        if step.seconds is None:
            return "pause until `rolling promote`"
        return f"pause {step.seconds:g} s"
    if isinstance(step, Gate):
        return f"gate {step.name}"
    if isinstance(step, Analyze):
        return "analyze " + ", ".join(m.name for m in step.analysis.metrics)
    if isinstance(step, SetFlag):
        return f"set flag {step.flag} to {step.value!r}"
    if isinstance(step, SetWeight):
        return f"set the canary weight to {step.percent:g} %"
    if isinstance(step, SetCanaryScale):
        if step.replicas is None:
            return "scale the canary with the weight"
        return f"scale the canary to {step.replicas}"
    return f"advance to {step.to}"


@attrs.define
class Output:
    """Writes every event to ``out`` as JSON or as a plain line, with secrets hidden.

    On a terminal (``live``), the plain lines are followed by a status line
    that is rewritten in place: instances by phase, elapsed time.
    """

    out: TextIO
    json: bool
    live: bool
    redact: Callable[[str], str]
    started: float | None = None
    phases: dict[str, Phase] = attrs.field(factory=dict[str, Phase])
    versions: dict[str, str] = attrs.field(factory=dict[str, str])
    step: str = ""
    to_do: int = 0
    status: RolloutStatus | None = None
    log: TextIO | None = None
    _status_shown: bool = False

    def __call__(self, event: Event) -> None:
        """An observer: write ``event``."""
        if self.started is None:
            self.started = event.at
        self._follow(event)
        if self.json or self.log is not None:
            record = json.dumps(to_json(event), sort_keys=True)
            if self.log is not None:
                self.log.write(self.redact(record) + "\n")
                self.log.flush()  # `rolling report` may read a running rollout's log
            if self.json:
                self._write(record)
                return
        line = _plain(event)
        if line is not None:
            self._write(f"[{event.at - self.started:7.2f}s] {line}")
        if self.live:
            self._show_status(event.at)

    def _follow(self, event: Event) -> None:
        """Keep what the live line shows."""
        if isinstance(event, InstancePhaseChanged):
            self.phases[event.instance_id] = event.phase
            if event.phase in _SETTLED:
                self.versions[event.instance_id] = event.version
        elif isinstance(event, StatusChanged):
            self.status = event.status
        elif isinstance(event, RolloutStarted):
            self.to_do = len(event.to_update)
            for instance in event.skipped:
                self.versions[instance] = event.target
        elif isinstance(event, StepStarted):
            self.step = step_text(event.step)
        elif isinstance(event, StepFinished):
            self.step = ""

    def _write(self, line: str) -> None:
        if self._status_shown:
            self.out.write("\r\x1b[K")
            self._status_shown = False
        self.out.write(self.redact(line) + "\n")
        self.out.flush()

    def status_line(self, now: float) -> str:
        """The live line: status, elapsed and time left, versions, phases, the current step."""
        counts: dict[str, int] = {}
        for phase in self.phases.values():
            counts[phase.value] = counts.get(phase.value, 0) + 1
        by_phase = ", ".join(f"{n} {p}" for p, n in sorted(counts.items())) or "-"
        by_version: dict[str, int] = {}
        for version in self.versions.values():
            by_version[version] = by_version.get(version, 0) + 1
        versions = " ".join(f"{v}:{n}" for v, n in sorted(by_version.items()))
        elapsed = now - (self.started or now)
        done = counts.get(Phase.UPDATED.value, 0)
        left = ""
        if 0 < done < self.to_do:  # the pace so far, for the instances still to go
            left = f", about {elapsed / done * (self.to_do - done):.0f}s left"
        status = self.status.value if self.status else "starting"
        step = f" | {self.step}" if self.step else ""
        return f"{status} {elapsed:.1f}s{left} | [{versions}] {by_phase}{step}"

    def _show_status(self, now: float) -> None:
        self.out.write("\r\x1b[K" + self.redact(self.status_line(now)))
        self.out.flush()
        self._status_shown = True

    def finish(self, line: str, extra: dict[str, Any]) -> None:
        """Write the final summary: a JSON object of event ``exit``, or ``line``."""
        record = json.dumps({"schema": JSON_SCHEMA, "event": "exit", "summary": line, **extra})
        if self.log is not None:
            self.log.write(self.redact(record) + "\n")
            self.log.flush()
        self._write(record if self.json else line)

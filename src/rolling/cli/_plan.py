"""``rolling plan``: what a run would do and a predicted timeline, with no mutating call.

Durations come from the events log of an earlier run of the same fleet (the
time from an instance's first phase to ``updated``), or from one estimate for
every instance. The same learned durations give the ``longest-first`` order:
started first, the longest updates no longer finish last, alone, while the
window stands idle (the classic longest-processing-time rule for a fixed
number of parallel slots).
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from rolling import Batches, BlueGreen, Canary, Order, Pause, RollingUpdate, Rollout

from ._output import step_text

__all__ = ["Plan", "learned_durations", "longest_first", "make_plan"]


def learned_durations(log: Path) -> dict[str, float]:
    """Seconds each instance took to update in the last run recorded in ``log`` (JSON lines).

    Instances that did not reach ``updated`` are left out. A missing or
    unreadable log teaches nothing: an empty dict.
    """
    try:
        text = log.read_text(encoding="utf-8")
    except OSError:
        return {}
    began: dict[str, float] = {}
    took: dict[str, float] = {}
    for raw in text.splitlines():
        try:
            line: Any = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if not isinstance(line, dict):
            continue
        event: dict[str, Any] = line  # pyright: ignore[reportUnknownVariableType]
        if event.get("event") == "rollout_started":
            began, took = {}, {}  # only the last run counts
        elif event.get("event") == "instance_phase_changed" and not event.get("rollback"):
            key, at = str(event["instance_id"]), float(event["at"])
            began.setdefault(key, at)
            if event.get("phase") == "updated":
                took[key] = at - began[key]
    return took


def longest_first(durations: Mapping[str, float]) -> Order:
    """An :class:`~rolling.Order` that starts the longest learned updates first.

    Instances without a learned duration go last, in inventory order.
    """
    return Order.by(lambda instance: -durations.get(str(instance.id), -1.0))


@attrs.frozen(kw_only=True)
class Plan:
    """What ``rolling run`` would do, predicted.

    Attributes:
        fleet: ``(id, version)`` of every instance, in inventory order.
        to_update: Ids to update, in the order they would start.
        skipped: Ids already on the target.
        window: Instances worked on at once (the batch sizes for batches).
        steps: The steps, as text.
        starts: Predicted ``(id, start, end)`` seconds from the start.
        learned: How many durations came from an earlier run.
        estimate: The seconds assumed for the others.
        waits_for_promote: Whether a step (or a blue-green without
            ``auto_promote``) waits for ``rolling promote`` (not counted).
        after: Seconds after the last update: the old set a canary or blue-green
            keeps before it is terminated.
    """

    fleet: tuple[tuple[str, str], ...]
    to_update: tuple[str, ...]
    skipped: tuple[str, ...]
    window: str
    steps: tuple[str, ...]
    starts: tuple[tuple[str, float, float], ...]
    learned: int
    estimate: float
    waits_for_promote: bool
    after: float = 0.0

    @property
    def total(self) -> float:
        """Predicted seconds to the end."""
        return max((end for _, _, end in self.starts), default=0.0) + self.after

    def to_text(self) -> str:
        """The plan for a person."""
        lines = [f"fleet: {len(self.fleet)} instances"]
        lines += [f"  {i}  {v}" for i, v in self.fleet]
        lines.append(
            f"would update {len(self.to_update)}, skip {len(self.skipped)} (on the target)"
        )
        lines.append(f"window: {self.window}")
        lines.append("steps: " + ("; ".join(self.steps) or "none"))
        source = f"{self.learned} learned from the last run" if self.learned else "none learned"
        lines.append(f"predicted timeline ({source}; others {self.estimate:g} s each):")
        lines += [f"  {i:<16} {start:8.1f} s -> {end:8.1f} s" for i, start, end in self.starts]
        wait = " plus the wait for `rolling promote`" if self.waits_for_promote else ""
        lines.append(f"predicted total: {self.total:.1f} s{wait}")
        return "\n".join(lines)


def _schedule(
    order: Sequence[str], durations: Mapping[str, float], estimate: float, sizes: Sequence[int]
) -> list[tuple[str, float, float]]:
    """Start times: ``sizes[0]`` slots sliding, or lockstep batches of ``sizes`` when several."""
    starts: list[tuple[str, float, float]] = []
    if len(sizes) == 1:  # a sliding window of sizes[0] slots: list scheduling
        slots = [0.0] * max(sizes[0], 1)
        for key in order:
            begin = heapq.heappop(slots)
            end = begin + durations.get(key, estimate)
            starts.append((key, begin, end))
            heapq.heappush(slots, end)
        return starts
    clock, index = 0.0, 0
    for size in sizes:
        batch = order[index : index + size]
        index += size
        ends = [clock + durations.get(key, estimate) for key in batch]
        starts += [(key, clock, end) for key, end in zip(batch, ends, strict=True)]
        clock = max(ends, default=clock)
    return starts


def make_plan(
    rollout: Rollout[Any],
    instances: Sequence[Any],
    *,
    durations: Mapping[str, float],
    estimate: float,
) -> Plan:
    """Plan ``rollout`` over ``instances`` (already listed) without calling anything else."""
    target = rollout.target
    ordered = rollout.order.arrange(list(instances))
    to_update = tuple(str(i.id) for i in ordered if i.version != target)
    skipped = tuple(str(i.id) for i in instances if i.version == target)
    strategy = rollout.strategy
    resolved = rollout.window(len(instances))
    after = 0.0  # what follows the last instance's update: a kept old set's delay
    if isinstance(strategy, Batches):
        sizes = strategy.resolve(len(to_update), whole=len(instances))
        window = "batches of " + ", ".join(str(s) for s in sizes)
    elif isinstance(strategy, RollingUpdate):
        sizes = [max(resolved.max_unavailable, resolved.max_surge, 1)]
        window = (
            f"{sizes[0]} at a time (max_unavailable {resolved.max_unavailable},"
            f" max_surge {resolved.max_surge})"
        )
    else:
        # Canary and blue-green launch the new set beside the old one: predicted as all of
        # it at once, or, for a canary promoted through a window, that window.
        window, sizes, after = _paired_window(strategy, len(instances), len(to_update))
        after = after if to_update else 0.0  # nothing to switch, nothing kept
    starts = _schedule(to_update, durations, estimate, sizes)
    pauses = sum(s.seconds or 0.0 for s in rollout.steps if isinstance(s, Pause))
    if pauses:
        starts = [(key, begin + pauses, end + pauses) for key, begin, end in starts]
    return Plan(
        fleet=tuple((str(i.id), str(i.version)) for i in instances),
        to_update=to_update,
        skipped=skipped,
        window=window,
        steps=tuple(step_text(s) for s in rollout.steps),
        starts=tuple(starts),
        learned=sum(1 for key in to_update if key in durations),
        estimate=estimate,
        waits_for_promote=any(isinstance(s, Pause) and s.seconds is None for s in rollout.steps)
        or (isinstance(strategy, BlueGreen) and not strategy.auto_promote),
        after=after,
    )


def _paired_window(
    strategy: Canary | BlueGreen, desired: int, to_update: int
) -> tuple[str, list[int], float]:
    """What the plan says of a canary or blue-green: its text, slot count and final delay."""
    if isinstance(strategy, BlueGreen):
        preview = strategy.preview(desired)
        text = f"blue-green: {preview} new beside the old {desired}"
        if preview < desired:
            text += f", the rest of the {desired} new at the switch"
        text += f"; the old set kept {strategy.scale_down_delay:g} s after the switch"
        return text, [max(to_update, 1)], strategy.scale_down_delay
    if strategy.promotion is None:
        text = (
            "canary: new instances beside the old as the steps say, then the rest at once;"
            f" the old set kept {strategy.scale_down_delay:g} s after the switch"
        )
        return text, [max(to_update, 1)], strategy.scale_down_delay
    window = strategy.promotion.resolve(desired)
    size = max(window.max_unavailable, window.max_surge, 1)
    text = (
        "canary: new instances beside the old as the steps say, then promoted"
        f" {size} at a time (max_unavailable {window.max_unavailable},"
        f" max_surge {window.max_surge})"
    )
    return text, [size], 0.0

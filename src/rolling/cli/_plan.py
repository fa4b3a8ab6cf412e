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
import itertools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from rolling import (
    Advance,
    Batches,
    BlueGreen,
    Canary,
    Order,
    Pause,
    RollingUpdate,
    Rollout,
)

from ._output import step_text

__all__ = ["Plan", "learned_durations", "longest_first", "make_plan"]


def learned_durations(log: Path) -> dict[str, float]:
    """Seconds each instance took to update in the last run recorded in ``log`` (JSON lines).

    Instances that did not reach ``updated`` are left out. A missing or
    unreadable log teaches nothing: an empty dict.
    """
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
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
    order: Sequence[str],
    durations: Mapping[str, float],
    estimate: float,
    width: int | None,
    cuts: Mapping[int, float],
) -> list[tuple[str, float, float]]:
    """Start and end times, the window drained and held at each cut.

    ``width`` slots slide within each stretch between cuts (None: a stretch starts
    all at once, as a lockstep batch does); ``cuts`` maps a place in ``order`` to the
    seconds held there once every instance before it has ended.
    """
    starts: list[tuple[str, float, float]] = []
    clock = cuts.get(0, 0.0)
    places = sorted({p for p in cuts if 0 < p < len(order)} | {len(order)})
    begin = 0
    for end in places:
        slots = [clock] * max(width or end - begin, 1)
        for key in order[begin:end]:  # list scheduling: the next starts in the first free slot
            start = heapq.heappop(slots)
            starts.append((key, start, start + durations.get(key, estimate)))
            heapq.heappush(slots, starts[-1][2])
        clock = max([clock, *(stop for _, _, stop in starts)]) + cuts.get(end, 0.0)
        begin = end
    return starts


def _batch_sizes(strategy: Batches, waves: Sequence[int], desired: int) -> list[int]:
    """The batches of every wave in turn: each wave is cut into batches of its own."""
    return [size for wave in waves for size in strategy.resolve(wave, whole=desired)]


def _cuts(
    rollout: Rollout[Any], waves: Sequence[int], skipped: int, desired: int
) -> dict[int, float]:
    """Where the rollout holds, by place in the update order, and the seconds it holds there.

    As the rollout places them: a wave ends before the next one starts; steps before the
    first ``Advance`` hold at 0, the steps after one where its target is reached (with
    batches, at the end of the batch that reaches it); the batches' own pause holds after
    every batch but the last. Timed pauses count their seconds; other steps (a promote, an
    analysis) count none.
    """
    strategy = rollout.strategy
    total = sum(waves)
    ends: list[int] = []
    if isinstance(strategy, Batches):
        ends = list(itertools.accumulate(_batch_sizes(strategy, waves, desired)))
    cuts = dict.fromkeys(ends, 0.0)
    for end in itertools.accumulate(waves):
        cuts.setdefault(end, 0.0)
    at = 0
    for step in rollout.steps:
        if isinstance(step, Advance):
            at = min(total, max(0, step.resolve(desired) - skipped))
            at = min((end for end in ends if end >= at), default=at)
        cuts[at] = cuts.get(at, 0.0) + _seconds(step)
    if isinstance(strategy, Batches):
        for end in ends[:-1]:
            cuts[end] += _seconds(strategy.pause)
    return cuts


def _seconds(step: object) -> float:
    return (step.seconds or 0.0) if isinstance(step, Pause) else 0.0


def _steps(rollout: Rollout[Any], batches: int) -> tuple[str, ...]:
    """The steps as text, and the pause between batches when there is more than one."""
    steps = [step_text(s) for s in rollout.steps]
    strategy = rollout.strategy
    if isinstance(strategy, Batches) and strategy.pause is not None and batches > 1:
        steps.append(step_text(strategy.pause) + " between batches")
    return tuple(steps)


def _waits(rollout: Rollout[Any], batches: int) -> bool:
    """Whether a step, the pause between batches or a blue-green waits for a promote."""
    strategy = rollout.strategy
    between = strategy.pause if isinstance(strategy, Batches) and batches > 1 else None
    return any(isinstance(s, Pause) and s.seconds is None for s in (*rollout.steps, between)) or (
        isinstance(strategy, BlueGreen) and not strategy.auto_promote
    )


def make_plan(
    rollout: Rollout[Any],
    instances: Sequence[Any],
    *,
    durations: Mapping[str, float],
    estimate: float,
) -> Plan:
    """Plan ``rollout`` over ``instances`` (already listed) without calling anything else."""
    target = rollout.target
    rollout.check_fleet(len(instances))  # what run() refuses once it has listed the fleet
    ordered = rollout.order.arrange(list(instances))
    pending = [i for i in ordered if i.version != target]
    # As a run goes: in the order, one wave (when there are waves) after the other.
    waves = [pending] if rollout.waves is None else rollout.waves.split(pending)
    waves = [wave for wave in waves if wave]
    to_update = tuple(str(i.id) for wave in waves for i in wave)
    skipped = tuple(str(i.id) for i in instances if i.version == target)
    strategy = rollout.strategy
    resolved = rollout.window(len(instances))
    after = 0.0  # what follows the last instance's update: a kept old set's delay
    width: int | None = None
    wave_sizes = [len(wave) for wave in waves]
    cuts = _cuts(rollout, wave_sizes, len(skipped), len(instances))
    batches = 1
    if isinstance(strategy, Batches):
        sizes = _batch_sizes(strategy, wave_sizes, len(instances))
        batches = len(sizes)
        window = "batches of " + ", ".join(str(s) for s in sizes)
    elif isinstance(strategy, RollingUpdate):
        width = max(resolved.max_unavailable, resolved.max_surge, 1)
        window = (
            f"{width} at a time (max_unavailable {resolved.max_unavailable},"
            f" max_surge {resolved.max_surge})"
        )
    else:
        # Canary and blue-green launch the new set beside the old one: predicted as all of
        # it at once, or, for a canary promoted through a window, that window; their steps
        # run before it.
        window, width, after = _paired_window(strategy, len(instances), len(to_update))
        cuts = {0: sum(cuts.values())}
    after += cuts.pop(len(to_update), 0.0) if to_update else 0.0  # steps after the last
    after = after if to_update else 0.0  # nothing to update, nothing to wait for
    return Plan(
        fleet=tuple((str(i.id), str(i.version)) for i in instances),
        to_update=to_update,
        skipped=skipped,
        window=window,
        steps=_steps(rollout, batches),
        starts=tuple(_schedule(to_update, durations, estimate, width, cuts)),
        learned=sum(1 for key in to_update if key in durations),
        estimate=estimate,
        waits_for_promote=_waits(rollout, batches),
        after=after,
    )


def _paired_window(
    strategy: Canary | BlueGreen, desired: int, to_update: int
) -> tuple[str, int, float]:
    """What the plan says of a canary or blue-green: its text, slot count and final delay."""
    if isinstance(strategy, BlueGreen):
        preview = strategy.preview(desired)
        text = f"blue-green: {preview} new beside the old {desired}"
        if preview < desired:
            text += f", the rest of the {desired} new at the switch"
        text += f"; the old set kept {strategy.scale_down_delay:g} s after the switch"
        return text, max(to_update, 1), strategy.scale_down_delay
    if strategy.promotion is None:
        text = (
            "canary: new instances beside the old as the steps say, then the rest at once;"
            f" the old set kept {strategy.scale_down_delay:g} s after the switch"
        )
        return text, max(to_update, 1), strategy.scale_down_delay
    window = strategy.promotion.resolve(desired)
    size = max(window.max_unavailable, window.max_surge, 1)
    text = (
        "canary: new instances beside the old as the steps say, then promoted"
        f" {size} at a time (max_unavailable {window.max_unavailable},"
        f" max_surge {window.max_surge})"
    )
    return text, size, 0.0

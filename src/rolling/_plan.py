"""The plan: which instances go, in which order, and where progress is held.

Pure functions over the slots, built once per pass (forward, rollback):

1. Instances already on the target (and in traffic) are skipped; a place whose
   instance is gone (after a resume) comes first, since it serves nothing,
   unless it is *lost* (the driver cannot launch: :mod:`rolling._resuming`,
   rule 5), when no unit works on it.
2. The rest go in ``order``, split into ``waves``; within each wave, instances
   that were not serving at the start go first (they cost no availability).
3. *Barriers* cut the unit sequence: the end of each wave, of each lockstep
   batch, and the point each ``Advance`` reaches. Steps (pauses, gates, the
   pause between batches) run at their barrier.
4. Every instance already on the target and in traffic counts toward an
   ``Advance``: skipped ones, and on a resumed run the ones the dead
   controller updated. A target they already meet is reached before the
   first unit (with ``Batches`` too: no batch crosses it).
"""

from __future__ import annotations

import attrs

from ._ledger import Barrier
from ._result import InstanceOutcome
from ._settings import Settings
from ._slot import Slot
from ._steps import Advance, Step
from ._strategy import Batches

__all__ = ["Groups", "Plan", "pair_order", "plan_forward", "plan_rollback"]


@attrs.define
class Groups:
    """Waves and lockstep batches as contiguous ranges of the unit sequence."""

    waves: list[tuple[int, int]] = attrs.Factory(list[tuple[int, int]])
    batches: list[tuple[int, int]] = attrs.Factory(list[tuple[int, int]])
    next_wave_at: int = 0
    """The unit that opens the next wave (the first opens at 0), -1 once all have opened:
    asking it is cheaper than calling :meth:`opens_wave` for every unit."""
    _next_wave: int = 0
    _next_batch: int = 0

    def opens_wave(self, index: int) -> int | None:
        """The wave that unit ``index`` opens, if it opens one (asked once per unit, in order)."""
        group = self._next_wave
        waves = self.waves
        if group < len(waves) and waves[group][0] == index:
            self._next_wave = group + 1
            self.next_wave_at = waves[group + 1][0] if group + 1 < len(waves) else -1
            return group
        return None

    def opens_batch(self, index: int) -> int | None:
        """The batch that unit ``index`` opens, if it opens one (asked once per unit, in order)."""
        group = self._next_batch
        if group < len(self.batches) and self.batches[group][0] == index:
            self._next_batch = group + 1
            return group
        return None


@attrs.frozen
class Plan:
    """One pass over the fleet.

    Attributes:
        units: The slots to work on, in order.
        skipped: Slots already on the target.
        barriers: Where progress is held, by position.
        groups: Waves and batches.
        wave_keys: The waves' keys, by wave.
    """

    units: list[Slot]
    skipped: list[Slot]
    barriers: list[Barrier]
    groups: Groups
    wave_keys: list[object]


def _arrange(settings: Settings, slots: list[Slot]) -> tuple[list[list[Slot]], list[Slot]]:
    """The waves of slots to work on, and the skipped slots (rules 1 and 2)."""
    target = settings.target
    present = [s for s in slots if s.live is not None]
    by_instance = {id(s.live): s for s in present}
    ordered = settings.order.arrange([s.live for s in present])
    todo = [s for s in slots if s.live is None and not s.lost]
    todo += [
        by_instance[id(i)]
        for i in ordered
        if i.version != target or not by_instance[id(i)].attached
    ]
    skipped = [s for s in slots if s.old_version == target and s.outcome is InstanceOutcome.PENDING]
    if settings.waves is not None:
        absent = [s for s in todo if s.live is None]
        split = settings.waves.split([s.live for s in todo if s.live is not None])
        waves = [[by_instance[id(i)] for i in wave] for wave in split]
        if absent:
            waves = [absent + (waves[0] if waves else []), *waves[1:]]
    else:
        waves = [todo] if todo else []
    waves = [
        [s for s in wave if not s.serving_at_start] + [s for s in wave if s.serving_at_start]
        for wave in waves
    ]
    return waves, skipped


def pair_order(settings: Settings, slots: list[Slot]) -> tuple[list[Slot], list[Slot]]:
    """The slots a paired strategy works on, in order, and the ones already on the target."""
    waves, skipped = _arrange(settings, slots)
    return [slot for wave in waves for slot in wave], skipped


def plan_forward(
    settings: Settings, slots: list[Slot], desired: int, *, steps: bool = True
) -> Plan:
    """Plan the forward pass (with ``steps=False``, one that holds at no step)."""
    waves, skipped = _arrange(settings, slots)
    strategy = settings.strategy
    groups = Groups()
    ends: dict[int, dict[str, int]] = {}
    position = 0
    for wave_index, wave in enumerate(waves):
        groups.waves.append((position, position + len(wave)))
        if isinstance(strategy, Batches):
            start = position
            for size in strategy.resolve(len(wave), whole=desired):
                batch_index = len(groups.batches)
                groups.batches.append((position, position + size))
                for slot in wave[position - start : position - start + size]:
                    slot.batch = batch_index
                position += size
                ends.setdefault(position, {})["batch"] = batch_index
        else:
            position += len(wave)
        ends.setdefault(position, {})["wave"] = wave_index
    # Rule 4: whatever no unit works on stands on the target already (a resumed run's
    # updated instances are not in ``skipped``, but they count all the same).
    on_target = len(slots) - position - sum(1 for s in slots if s.lost)
    steps_at = _place_steps(settings, ends, position, on_target, desired) if steps else {}
    barriers = [
        Barrier(
            position=p,
            steps=tuple(step for _, step in steps_at.get(p, ())),
            indexes=tuple(index for index, _ in steps_at.get(p, ())),
            between=_between(settings, ends.get(p, {}), p, position) if steps else None,
            batch=ends.get(p, {}).get("batch"),
            wave=ends.get(p, {}).get("wave"),
        )
        for p in sorted(set(ends) | set(steps_at))
    ]
    keys: list[object] = []
    if settings.waves is not None:
        key = settings.waves.key
        keys = [None if not w or w[0].live is None else key(w[0].live) for w in waves]
    units = [slot for wave in waves for slot in wave]
    return Plan(units=units, skipped=skipped, barriers=barriers, groups=groups, wave_keys=keys)


def _place_steps(
    settings: Settings, ends: dict[int, dict[str, int]], total: int, on_target: int, desired: int
) -> dict[int, list[tuple[int, Step]]]:
    """Find the unit position each step (and each between-batches pause) waits at.

    Each comes with its position in the steps, for events. An ``Advance`` holds what
    comes after it where its target is reached, counting the ``on_target`` instances no
    unit works on, even with no step of its own. The pauses between batches are
    :func:`_between`'s.
    """
    strategy = settings.strategy
    steps_at: dict[int, list[tuple[int, Step]]] = {}
    at = 0
    for index, step in enumerate(settings.steps):
        if isinstance(step, Advance):
            at = min(total, max(0, step.resolve(desired) - on_target))
            if at > 0 and isinstance(strategy, Batches):
                # The batch that crosses the mark completes; a mark already met is crossed
                # by none, so the steps after it run before the first batch.
                at = min((end for end in ends if end >= at), default=total)
            steps_at.setdefault(at, [])
        else:
            steps_at.setdefault(at, []).append((index, step))
    return steps_at


def _between(settings: Settings, end: dict[str, int], position: int, total: int) -> Step | None:
    """The pause between batches at ``position``: after each batch but the last."""
    strategy = settings.strategy
    if isinstance(strategy, Batches) and "batch" in end and position < total:
        return strategy.pause
    return None


def plan_rollback(settings: Settings, changed: list[Slot], desired: int) -> Plan:
    """Plan the rollback of ``changed`` (already in the order they go back in)."""
    barriers: list[Barrier] = []
    strategy = settings.strategy
    if isinstance(strategy, Batches):
        position = 0
        for size in strategy.resolve(len(changed), whole=desired):
            position += size
            barriers.append(Barrier(position=position))
    return Plan(units=changed, skipped=[], barriers=barriers, groups=Groups(), wave_keys=[])

"""One run of a rollout: the effects that carry out the scheduler's decisions.

Everything that awaits a driver, router, check or hook lives here. Three kinds
of await exist in a unit of work, and they are treated differently:

* *effects* (driver, router and hook calls) are shielded from cancellation and
  bounded by ``effect_timeout``: once started they finish, so the engine always
  knows what exists and what is in traffic. When the run is cancelled their
  bound tightens to ``cleanup_timeout``;
* *waits* (readiness, back-off) can be interrupted by a trigger (abort, budget,
  gate, deadline) and by cancellation;
* the *settle* step that follows an interruption or a cancellation runs
  shielded: a surge instance not yet in traffic is terminated, and an instance
  left out of traffic is put back in when it answers its check (or left out and
  reported).
"""

from __future__ import annotations

import collections
import math
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

import anyio
import anyio.abc
import anyio.lowlevel
import attrs
from anyio.streams.memory import MemoryObjectSendStream

from ._errors import ConfigError, RollingError
from ._journal import begin_record
from ._policies import DeadlineAction, RollbackMode
from ._probe import wait_ready
from ._recovery import Recovered, reconcile, recover
from ._result import InstanceOutcome, InstanceResult, RolloutResult, RolloutStatus
from ._scheduler import Barrier, Mode, Scheduler, Start
from ._steps import Advance, Gate, Pause, Step
from ._strategy import Batches
from ._validate import percent_of
from .events import (
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
    WaveStarted,
)
from .health import probe_once

if TYPE_CHECKING:
    from ._engine import Rollout
    from .typing import Driver, ElasticDriver, Journal

__all__ = ["Execution", "Slot"]

_T = TypeVar("_T")

_SURVEY_WORKERS = 64
_PROGRESS_PHASES = frozenset({Phase.UPDATED, Phase.REVERTED})


class _StepFailedError(Exception):
    """An effect or a readiness wait failed; the attempt fails with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _InterruptedError(Exception):
    """A trigger interrupted a wait; the unit settles and ends."""


@attrs.define(eq=False)
class Slot:
    """The engine's record of one instance of the starting fleet and what stands in its place."""

    key: str
    position: int
    old_version: str
    live: Any
    serving_at_start: bool
    attached: bool = True
    ready: bool = True
    extra: Any = None
    extra_attached: bool = False
    tally: dict[InstanceOutcome, int] | None = attrs.field(default=None, kw_only=True, repr=False)
    """Slots by outcome, shared by the slots of a run, so status() need not scan them."""
    _outcome: InstanceOutcome = InstanceOutcome.PENDING
    reason: str = ""
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    changed_seq: int = -1
    # A tuple, not a list: nearly every slot has none, and the empty tuple is shared
    # (a list per slot is one more object for the collector to walk, a fleet's worth).
    replace_tried: bool = False
    strays: tuple[Any, ...] = ()

    @property
    def outcome(self) -> InstanceOutcome:
        """What happened to this instance so far."""
        return self._outcome

    @outcome.setter
    def outcome(self, value: InstanceOutcome) -> None:
        tally = self.tally
        if tally is not None:
            tally[self._outcome] -= 1
            tally[value] = tally.get(value, 0) + 1
        self._outcome = value

    @property
    def existing(self) -> int:
        """Instances this slot accounts for: what is in place, a surge instance, strays."""
        return (self.live is not None) + (self.extra is not None) + len(self.strays)


class Execution:
    """The state of one run; the engine creates one per :meth:`Rollout.start`."""

    def __init__(self, rollout: Rollout[Any]) -> None:
        self.rollout = rollout
        self.target = rollout.target
        self.status = RolloutStatus.PENDING
        self.result: RolloutResult | None = None
        self.slots: list[Slot] = []
        self._tally: dict[InstanceOutcome, int] = {}
        self._busy: set[Slot] = set()
        self.paused = False
        self.current_step: Step | None = None
        self.stop_reason = ""
        self._stop_mode: RollbackMode | None = None
        self._stop_status: RolloutStatus | None = None
        self._sched: Scheduler | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._wake = anyio.Event()
        self._step_event = anyio.Event()
        self._promote_one = False
        self._promote_full = False
        self._interruptible: set[anyio.CancelScope] = set()
        self._shields: set[anyio.CancelScope] = set()
        self._cancelling = False
        self._cleanup_deadline = math.inf
        self._finished = anyio.Event()
        self._started_at = 0.0
        self._progress_at = 0.0
        self._seq = 0
        self._failed = 0
        self._consecutive = 0
        self._batch_failed: dict[int, int] = {}
        self._batch_size: dict[int, int] = {}
        self._slot_batch: dict[str, int] = {}
        self._rng = random.Random(rollout.seed)
        self._observers = list(rollout.observers)
        self._streams: list[MemoryObjectSendStream[Event]] = []
        self._hooks = rollout.hook_methods
        self._budget = 0
        self._desired = 0
        self._max_unavailable = 0
        self._max_surge = 0
        self._rolling_back = False
        self._journal: Journal | None = rollout.journal
        self._recovered: Recovered | None = None
        self._doomed: tuple[Any, ...] = ()
        readiness = rollout.readiness
        # Without a check or delays, readiness is a formality: skip its scopes and sleeps.
        self._instant_ready = (
            rollout.check_function is None
            and readiness.initial_delay == 0
            and readiness.min_ready == 0
        )

    @property
    def _in_place_driver(self) -> Driver[Any]:
        """The driver, for ``replace``: used only in ``Mode.IN_PLACE``, so when ``can_replace``."""
        return cast("Driver[Any]", self.rollout.driver)

    @property
    def _elastic_driver(self) -> ElasticDriver[Any]:
        """The driver, for ``launch`` and ``terminate``: used only when ``can_launch``."""
        return cast("ElasticDriver[Any]", self.rollout.driver)

    # ------------------------------------------------------------------ events

    @property
    def listening(self) -> bool:
        """Whether anyone receives events (they are not even built otherwise)."""
        return bool(self._observers or self._streams)

    def subscribe(self) -> anyio.abc.ObjectReceiveStream[Event]:
        """Return a stream of every event from now on; it ends after :class:`RolloutFinished`."""
        send, receive = anyio.create_memory_object_stream[Event](math.inf)
        if self.result is not None:
            send.close()
        else:
            self._streams.append(send)
        return receive

    def emit(self, event_type: type[Event], **fields: Any) -> None:
        """Build an event and hand it to every observer and stream."""
        if not self.listening:
            return
        event = event_type(at=anyio.current_time(), wall=_wall(), **fields)
        for observer in self._observers:
            observer(event)
        for stream in self._streams:
            stream.send_nowait(event)

    def _phase(
        self, slot: Slot, phase: Phase, version: str, reason: str = "", instance: Any = None
    ) -> None:
        if not self.listening:
            return
        live = instance
        if live is None:
            live = slot.extra if slot.extra is not None else slot.live
        self.emit(
            InstancePhaseChanged,
            instance_id=slot.key,
            phase=phase,
            version=version,
            attempt=max(1, slot.attempts),
            current_id=None if live is None else live.id,
            reason=reason,
            rollback=self._rolling_back,
        )

    def _set_status(self, status: RolloutStatus) -> None:
        if status is not self.status:
            self.status = status
            self.emit(StatusChanged, status=status)

    # ----------------------------------------------------------------- control

    def pause(self) -> None:
        """Start no new instance until :meth:`resume`."""
        self.emit(ControlRequested, action="pause")
        self.paused = True
        if self._sched is not None:
            self._sched.paused = True
        if self.status is RolloutStatus.RUNNING:
            self._set_status(RolloutStatus.PAUSED)

    def resume(self) -> None:
        """Undo :meth:`pause`."""
        self.emit(ControlRequested, action="resume")
        self.paused = False
        if self._sched is not None:
            self._sched.paused = False
        self._progress_at = anyio.current_time()
        if self.status is RolloutStatus.PAUSED and self.current_step is None:
            self._set_status(RolloutStatus.RUNNING)
        self._notify()

    def promote(self, *, full: bool) -> bool:
        """End the current pause or gate (all remaining ones with ``full``)."""
        self.emit(ControlRequested, action="promote", detail=f"full={full}")
        if full:
            self._promote_full = True
        elif not isinstance(self.current_step, Pause | Gate):
            return False
        self._promote_one = True
        self._step_event.set()
        self._notify()
        return True

    def abort(self, *, rollback: bool) -> None:
        """Stop, and revert what changed unless ``rollback`` is false."""
        self.emit(ControlRequested, action="abort", detail=f"rollback={rollback}")
        if self._rolling_back:
            if not rollback:
                self.trigger("aborted during rollback", RollbackMode.HALT, RolloutStatus.ABORTED)
            return
        mode = RollbackMode.REVERT if rollback else RollbackMode.HALT
        self.trigger("aborted", mode, RolloutStatus.ABORTED)

    def trigger(self, reason: str, mode: RollbackMode, status: RolloutStatus) -> None:
        """Stop starting work, interrupt waits, and remember what to do next."""
        if self._rolling_back:
            # Only a halt can stop a rollback; it is the last resort of abort(rollback=False).
            if mode is RollbackMode.HALT and self._sched is not None:
                self.stop_reason += f"; {reason}"
                self._stop_status = status
                self._sched.stop()
                self._interrupt()
            return
        if self._stop_mode is not None:
            return
        self.stop_reason = reason
        self._stop_mode = mode
        self._stop_status = status
        if self._sched is not None:
            self._sched.stop()
        self._interrupt()

    def _interrupt(self) -> None:
        for scope in list(self._interruptible):
            scope.cancel()
        self._step_event.set()
        self._notify()

    def _notify(self) -> None:
        self._wake.set()

    # -------------------------------------------------------------- main flow

    async def run(self) -> RolloutResult:
        """Plan, roll forward, roll back if needed, and return the result."""
        self._started_at = self._progress_at = anyio.current_time()
        self._set_status(RolloutStatus.RUNNING)
        lock = self.rollout.lock
        if lock is not None:
            await lock.acquire()
        try:
            await self._run_locked()
        finally:
            if lock is not None:
                with anyio.CancelScope(shield=True):
                    await lock.release()
        await self._after_rollout()
        assert self.result is not None  # noqa: S101 - set by _finish just above
        return self.result

    async def _run_locked(self) -> None:
        try:
            await self._plan()
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._cancel_watcher)
                await self._resume()
                if self._stop_mode is None:
                    await self._forward()
                if self._stop_mode is RollbackMode.REVERT:
                    await self._revert()
                self._finished.set()
                tg.cancel_scope.cancel()
        except anyio.get_cancelled_exc_class():
            # No end record: a cancelled rollout is unfinished, and resumable.
            self._finish(RolloutStatus.CANCELLED, "cancelled")
            await self._close_journal()
            raise
        except BaseException as exc:
            self._finish(RolloutStatus.HALTED, f"error: {type(exc).__name__}: {exc}")
            await self._close_journal()
            raise
        self._finish(self._final_status(), self.stop_reason)
        await self._note({"t": "end", "status": str(self.status)}, sync=True)
        await self._close_journal()

    async def _note(self, record: dict[str, Any], *, sync: bool = False) -> None:
        """Append to the journal, if there is one; shielded, so a record is never half-made."""
        journal = self._journal
        if journal is not None:
            with anyio.CancelScope(shield=True):
                await journal.append(record, sync=sync)

    async def _close_journal(self) -> None:
        journal = self._journal
        if journal is not None:
            with anyio.CancelScope(shield=True):
                await journal.close()

    def _recorded(  # noqa: PLR0917 - mirrors _effect's positional call shape
        self,
        slot: Slot,
        op: str,
        instance: Any,
        version: str,
        what: str,
        fn: Callable[..., Awaitable[Any]],
        *args: Any,
    ) -> Awaitable[Any]:
        """Run one effect, journaled around it (write-ahead) when there is a journal."""
        if self._journal is None:
            # Not a coroutine of its own: without a journal this is the hot path.
            return self._effect(what, fn, *args)
        return self._journaled(slot, op, instance, version, what, fn, *args)

    async def _journaled(  # noqa: PLR0917 - the same call shape as _recorded
        self,
        slot: Slot,
        op: str,
        instance: Any,
        version: str,
        what: str,
        fn: Callable[..., Awaitable[Any]],
        *args: Any,
    ) -> Any:
        base = {
            "t": "fx",
            "k": slot.key,
            "op": op,
            "i": getattr(instance, "id", None),
            "v": version,
        }
        await self._note({**base, "s": "start"}, sync=True)
        try:
            result = await self._effect(what, fn, *args)
        except _StepFailedError:
            await self._note({**base, "s": "fail"})
            raise
        done = {**base, "s": "done"}
        if op in {"launch", "replace"}:
            done["n"] = [result.id, result.version]
        await self._note(done, sync=op == "launch")
        return result

    async def _set_live(self, slot: Slot, instance: Any) -> None:
        """Put ``instance`` in ``slot``'s place, journaling the swap when the id changes."""
        before = None if slot.live is None else slot.live.id
        after = None if instance is None else instance.id
        slot.live = instance
        if before != after:
            await self._note({"t": "swap", "k": slot.key, "i": after})

    def _final_status(self) -> RolloutStatus:
        if self._stop_status is not None:
            return self._stop_status
        if any(s.outcome is InstanceOutcome.FAILED for s in self.slots):
            return RolloutStatus.DEGRADED
        return RolloutStatus.SUCCEEDED

    async def _cancel_watcher(self) -> None:
        try:
            await anyio.sleep_forever()
        finally:
            if not self._finished.is_set():
                # The run is being cancelled: shielded effects get a short leash from now on.
                self._cancelling = True
                self._cleanup_deadline = anyio.current_time() + self.rollout.cleanup_timeout
                for scope in self._shields:
                    scope.deadline = min(scope.deadline, self._cleanup_deadline)

    async def _plan(self) -> None:
        rollout = self.rollout
        recovered = None
        if self._journal is not None:
            recovered = recover(await self._journal.load(), target=self.target)
        instances = list(await rollout.driver.list_instances())
        ids = collections.Counter(i.id for i in instances)
        if len(ids) != len(instances):
            duplicates = sorted(i for i, count in ids.items() if count > 1)
            msg = f"the driver listed duplicate instance ids {duplicates}; ids must be unique"
            raise RollingError(msg)
        if recovered is not None:
            await self._plan_resume(recovered, instances)
        else:
            healthy = await self._survey(instances)
            for position, (instance, ok) in enumerate(zip(instances, healthy, strict=True)):
                self.slots.append(
                    Slot(
                        key=instance.id,
                        position=position,
                        old_version=instance.version,
                        live=instance,
                        serving_at_start=ok,
                        ready=ok,
                        tally=self._tally,
                    )
                )
            fleet = [(i.id, i.version) for i in instances]
            await self._note(begin_record(self.target, fleet), sync=True)
        self._desired = len(self.slots)
        self._tally[InstanceOutcome.PENDING] = len(self.slots)
        self._budget = rollout.failure.budget(self._desired)

    async def _plan_resume(self, recovered: Recovered, instances: Sequence[Any]) -> None:
        """Rebuild the slots of an unfinished rollout from its journal and the live fleet."""
        matched = reconcile(recovered, instances)
        live = [matched.live[key] for key, _ in recovered.fleet]
        present = [i for i in live if i is not None]
        healthy = dict(zip((i.id for i in present), await self._survey(present), strict=True))
        for position, (key, old_version) in enumerate(recovered.fleet):
            instance = matched.live[key]
            attached = matched.attached[key]
            ok = instance is not None and healthy[instance.id]
            self.slots.append(
                Slot(
                    key=key,
                    position=position,
                    old_version=old_version,
                    live=instance,
                    serving_at_start=ok and attached,
                    ready=ok,
                    attached=attached,
                    tally=self._tally,
                )
            )
        self._recovered = recovered
        self._doomed = matched.doomed

    async def _resume(self) -> None:
        """Finish what a dead controller left half-done, before rolling on."""
        recovered = self._recovered
        if recovered is None:
            return
        for stray in self._doomed:
            holder = Slot(
                key=stray.id, position=-1, old_version="", live=stray, serving_at_start=False
            )
            try:
                await self._recorded(
                    holder,
                    "terminate",
                    stray,
                    "",
                    "driver.terminate",
                    self._elastic_driver.terminate,
                    stray,
                )
            except _StepFailedError as exc:
                raise RollingError(
                    f"could not clean up {stray.id} before resuming: {exc.reason}"
                ) from None
        for slot in self.slots:
            live = slot.live
            if live is not None and not slot.attached and slot.ready:
                # Left out of traffic by the dead controller, and healthy: put it back.
                await self._attach(slot, live, live.version)
                slot.serving_at_start = True
            if live is not None and slot.attached and live.version == self.target:
                slot.outcome = (
                    InstanceOutcome.SKIPPED
                    if slot.old_version == self.target
                    else InstanceOutcome.UPDATED
                )
                self._seq += 1
                slot.changed_seq = self._seq
        if recovered.rolling_back:
            self.stop_reason = f"resumed rollback: {recovered.reason}"
            self._stop_mode = RollbackMode.REVERT
            aborted = recovered.reason.startswith("aborted")
            self._stop_status = RolloutStatus.ABORTED if aborted else RolloutStatus.ROLLED_BACK
            for slot in self.slots:
                if slot.outcome is InstanceOutcome.PENDING and _changed(slot):
                    slot.outcome = InstanceOutcome.INTERRUPTED

    async def _survey(self, instances: Sequence[Any]) -> list[bool]:
        check = self.rollout.check_function
        if check is None:
            return [True] * len(instances)
        healthy = [True] * len(instances)
        timeout = self.rollout.readiness.timeout
        indices = iter(range(len(instances)))

        async def worker() -> None:
            for index in indices:
                healthy[index] = (await probe_once(check, instances[index], timeout)).healthy

        async with anyio.create_task_group() as tg:
            for _ in range(min(_SURVEY_WORKERS, len(instances))):
                tg.start_soon(worker)
        return healthy

    def _arrange(self) -> tuple[list[list[Slot]], list[Slot]]:
        """Split the slots to update into waves (unhealthy first in each) and the skipped ones."""
        rollout = self.rollout
        present = [s for s in self.slots if s.live is not None]
        by_instance = {id(s.live): s for s in present}
        ordered = rollout.order.arrange([s.live for s in present])
        # After a resume, a place whose instance is gone comes first: it serves nothing now.
        todo = [s for s in self.slots if s.live is None]
        todo += [
            by_instance[id(i)]
            for i in ordered
            if i.version != self.target or not by_instance[id(i)].attached
        ]
        skipped = [
            s
            for s in self.slots
            if s.old_version == self.target and s.outcome is InstanceOutcome.PENDING
        ]
        if rollout.waves is not None:
            absent = [s for s in todo if s.live is None]
            waves_of_instances = rollout.waves.split([s.live for s in todo if s.live is not None])
            waves = [[by_instance[id(i)] for i in wave] for wave in waves_of_instances]
            if absent:
                waves = [absent + (waves[0] if waves else []), *waves[1:]]
        else:
            waves = [todo] if todo else []
        waves = [
            [s for s in wave if not s.serving_at_start] + [s for s in wave if s.serving_at_start]
            for wave in waves
        ]
        return waves, skipped

    async def _forward(self) -> None:
        rollout = self.rollout
        waves, skipped = self._arrange()
        for slot in skipped:
            slot.outcome = InstanceOutcome.SKIPPED
            self._phase(slot, Phase.SKIPPED, self.target)
        units = [slot for wave in waves for slot in wave]
        barriers, groups = self._barriers(waves, len(skipped))
        window = rollout.window(self._desired)
        self._max_unavailable = window.max_unavailable
        self._max_surge = window.max_surge
        self.emit(
            RolloutStarted,
            target=self.target,
            desired=self._desired,
            to_update=tuple(s.key for s in units),
            skipped=tuple(s.key for s in skipped),
            unhealthy=tuple(s.key for s in self.slots if not s.serving_at_start),
            max_unavailable=window.max_unavailable,
            max_surge=window.max_surge,
        )
        hook = self._hooks.get("before_rollout")
        if hook is not None:
            try:
                await self._effect(
                    "hook before_rollout", hook, self.target, [s.live for s in self.slots]
                )
            except _StepFailedError as exc:
                self.trigger(exc.reason, RollbackMode.HALT, RolloutStatus.HALTED)
                return
        if not units and not barriers:
            return
        sched = Scheduler(
            serving_at_start=[s.serving_at_start for s in units],
            lockstep=isinstance(rollout.strategy, Batches),
            floor=window.floor,
            ceiling=window.ceiling,
            serving=sum(1 for s in self.slots if s.serving_at_start),
            existing=self._desired,
            cap=window.max_unavailable + window.max_surge,
            surge=rollout.surge_enabled,
            in_place=rollout.can_replace,
            barriers=barriers,
        )
        self._sched = sched
        sched.paused = self.paused
        if self._stop_mode is not None:
            # A trigger (abort, a failed before_rollout hook) came before there was a schedule.
            sched.stop()
        if rollout.progress_deadline is not None and self._tg is not None:
            self._tg.start_soon(self._watchdog)
        await self._drive(sched, units, self.target, groups)

    def _barriers(self, waves: list[list[Slot]], skipped: int) -> tuple[list[Barrier], _Groups]:
        """Turn waves, batches and steps into barriers over the unit sequence."""
        rollout = self.rollout
        strategy = rollout.strategy
        groups = _Groups()
        ends: dict[int, dict[str, int]] = {}
        position = 0
        for wave_index, wave in enumerate(waves):
            groups.waves.append((position, position + len(wave)))
            if isinstance(strategy, Batches):
                for size in strategy.resolve(len(wave), whole=self._desired):
                    batch_index = len(groups.batches)
                    groups.batches.append((position, position + size))
                    self._batch_size[batch_index] = size
                    for slot in wave[position - groups.waves[-1][0] :][:size]:
                        self._slot_batch[slot.key] = batch_index
                    position += size
                    ends.setdefault(position, {})["batch"] = batch_index
            else:
                position += len(wave)
            ends.setdefault(position, {})["wave"] = wave_index
        total = position
        steps_at = self._place_steps(ends, total, skipped)
        barriers = [
            Barrier(
                position=p,
                steps=tuple(steps_at.get(p, ())),
                batch=ends.get(p, {}).get("batch"),
                wave=ends.get(p, {}).get("wave"),
            )
            for p in sorted(set(ends) | set(steps_at))
        ]
        return barriers, groups

    def _place_steps(
        self, ends: dict[int, dict[str, int]], total: int, skipped: int
    ) -> dict[int, list[Step]]:
        """Find the unit position each step (and each between-batches pause) waits at."""
        rollout = self.rollout
        strategy = rollout.strategy
        steps_at: dict[int, list[Step]] = {}
        if isinstance(strategy, Batches) and strategy.pause is not None:
            for end, info in ends.items():
                if "batch" in info and end < total:
                    steps_at.setdefault(end, []).append(strategy.pause)
        at = 0
        previous_target = -1
        for index, step in enumerate(rollout.steps):
            if isinstance(step, Advance):
                on_target = _resolve_advance(step.to, self._desired)
                if on_target < previous_target:
                    raise ConfigError(
                        f"Rollout.steps[{index}]",
                        f"Advance({step.to!r}) goes back from an earlier Advance",
                        "list Advance targets in increasing order",
                    )
                previous_target = on_target
                at = min(total, max(0, on_target - skipped))
                if isinstance(strategy, Batches):
                    at = min((end for end in ends if end >= at), default=total)
                # An Advance holds what comes after it even with no step of its own.
                steps_at.setdefault(at, [])
            else:
                steps_at.setdefault(at, []).append(step)
        return steps_at

    async def _drive(
        self, sched: Scheduler, units: list[Slot], version: str | None, groups: _Groups
    ) -> None:
        """Run the scheduler's decisions until it is done.

        ``version`` None means each unit's own old version.
        """
        assert self._tg is not None  # noqa: S101 - set by run()
        drive = _Drive(sched, units, version, groups)
        while True:
            poll = sched.poll()
            for start in poll.starts:
                slot = units[start.index]
                if not self._opening(drive, start):
                    continue
                batch = groups.starting(groups.batches, start.index)
                if batch is not None and not await self._batch_start(sched, batch, units, groups):
                    _unstart(sched, slot, start.mode)
                    continue
                self._tg.start_soon(self._worker, drive, slot, start.mode)
            if poll.barrier is not None:
                await self._barrier(poll.barrier, units, groups)
                sched.pass_barrier()
                continue
            if poll.done:
                return
            if poll.stuck:
                self._stuck(sched, units)
                sched.stop()
                continue
            await self._wake.wait()
            self._wake = anyio.Event()

    def _opening(self, drive: _Drive, start: Start) -> bool:
        """Announce the wave ``start`` opens, if any; False if the rollout stopped meanwhile."""
        sched, units, groups = drive.sched, drive.units, drive.groups
        slot = units[start.index]
        if sched.stopping:
            _unstart(sched, slot, start.mode)
            return False
        wave = groups.starting(groups.waves, start.index)
        if wave is not None:
            first, end = groups.waves[wave]
            key = self.rollout.waves.key(slot.live) if self.rollout.waves else None
            ids = tuple(u.key for u in units[first:end])
            self.emit(WaveStarted, index=wave, key=key, instance_ids=ids)
        return True

    async def _worker(self, drive: _Drive, slot: Slot, mode: Mode) -> None:
        """Run one unit, then, in the same task, each next unit the scheduler allows.

        In a sliding window every finished unit frees room for exactly the next one,
        so handing it to the task that just finished saves spawning a task per unit
        (and the garbage that makes): most of the engine's own cost on a large fleet.
        """
        sched = drive.sched
        unit: tuple[Slot, Mode] | None = (slot, mode)
        try:
            while unit is not None:
                slot, mode = unit
                goal = slot.old_version if drive.version is None else drive.version
                await self._unit(sched, slot, mode, goal)
                unit = self._successor(drive)
                if unit is None:
                    break
                # Let other tasks run, and a cancellation land, before the next unit (as
                # when each unit was a task of its own): a driver that never waits must
                # not keep the event loop to itself.
                try:
                    await anyio.lowlevel.checkpoint()
                except BaseException:
                    _unstart(sched, *unit)
                    raise
                if sched.stopping:
                    # Stopped while this task yielded: the next unit does not start after all.
                    _unstart(sched, *unit)
                    self._notify()
                    unit = None
        except BaseException:
            self._notify()
            raise

    def _successor(self, drive: _Drive) -> tuple[Slot, Mode] | None:
        """After a unit ends: start what the scheduler now allows, keeping one for this task.

        What only the drive loop may do (reach a barrier, finish, handle a stuck
        schedule, open a lockstep batch, whose hook is awaited) wakes it instead.
        """
        sched = drive.sched
        if sched.lockstep:
            # A lockstep batch starts once the previous one has reached its barrier.
            self._notify()
            return None
        poll = sched.poll()
        if poll.barrier is not None or poll.done or poll.stuck:
            self._notify()
            return None
        kept: tuple[Slot, Mode] | None = None
        for start in poll.starts:
            if not self._opening(drive, start):
                continue
            slot = drive.units[start.index]
            if kept is None:
                kept = (slot, start.mode)
            else:
                assert self._tg is not None  # noqa: S101 - set by run()
                self._tg.start_soon(self._worker, drive, slot, start.mode)
        return kept

    def _stuck(self, sched: Scheduler, units: list[Slot]) -> None:
        reason = (
            f"stuck: {sched.serving} instances serve and the floor is {sched.floor}, so no more "
            "can be taken out (instances failed out of traffic or were unhealthy from the start)"
        )
        if self._rolling_back:
            for slot in units[sched.cursor :]:
                slot.outcome = InstanceOutcome.REVERT_FAILED
                slot.reason = reason
                self._phase(slot, Phase.REVERT_FAILED, slot.old_version, reason)
            sched.stop()
        else:
            self.trigger(reason, self.rollout.rollback, _status_for(self.rollout.rollback))

    async def _batch_start(
        self, sched: Scheduler, index: int, units: list[Slot], groups: _Groups
    ) -> bool:
        """Open lockstep batch ``index``; return False if the rollout stopped meanwhile."""
        first, end = groups.batches[index]
        members = units[first:end]
        self.emit(BatchStarted, index=index, instance_ids=tuple(s.key for s in members))
        hook = self._hooks.get("before_batch")
        if hook is not None:
            try:
                await self._effect("hook before_batch", hook, index, [s.live for s in members])
            except _StepFailedError as exc:
                self.trigger(exc.reason, self.rollout.rollback, _status_for(self.rollout.rollback))
        # The hook's failure, or another task while it ran, may have stopped the rollout.
        return not sched.stopping

    async def _barrier(self, barrier: Barrier, units: list[Slot], groups: _Groups) -> None:
        if barrier.batch is not None:
            first, end = groups.batches[barrier.batch]
            failed = self._batch_failed.get(barrier.batch, 0)
            self.emit(BatchFinished, index=barrier.batch, failed=failed)
            hook = self._hooks.get("after_batch")
            if hook is not None:
                try:
                    lives = [s.live for s in units[first:end]]
                    await self._effect("hook after_batch", hook, barrier.batch, lives)
                except _StepFailedError as exc:
                    self.trigger(
                        exc.reason, self.rollout.rollback, _status_for(self.rollout.rollback)
                    )
                    return
        for index, step in enumerate(barrier.steps):
            if self._stop_mode is not None:
                return
            await self._run_step(index, step)

    async def _run_step(self, index: int, step: Step) -> None:
        if self._promote_full:
            self.emit(StepStarted, index=index, step=step)
            self.emit(StepFinished, index=index, step=step, promoted=True)
            return
        self.current_step = step
        self._promote_one = False
        self._step_event = anyio.Event()
        self.emit(StepStarted, index=index, step=step)
        promoted = False
        if isinstance(step, Pause):
            self._set_status(RolloutStatus.PAUSED)
            with anyio.move_on_after(math.inf if step.seconds is None else step.seconds):
                await self._step_event.wait()
            promoted = self._promote_one or self._promote_full
        elif isinstance(step, Gate):
            promoted = await self._run_gate(step)
        self.current_step = None
        self._progress_at = anyio.current_time()
        if self._stop_mode is None:
            self._set_status(RolloutStatus.PAUSED if self.paused else RolloutStatus.RUNNING)
        self.emit(StepFinished, index=index, step=step, promoted=promoted)

    async def _run_gate(self, gate: Gate) -> bool:
        outcome: tuple[bool, str] | None = None

        async def ask() -> None:
            nonlocal outcome
            try:
                with anyio.fail_after(math.inf if gate.timeout is None else gate.timeout):
                    answer = await gate.check()
            except TimeoutError:
                outcome = (False, f"timed out after {gate.timeout}s")
            except Exception as exc:  # noqa: BLE001 - a crashing gate is a closed gate, with the cause
                outcome = (False, f"raised {type(exc).__name__}: {exc}")
            else:
                if isinstance(answer, tuple):
                    outcome = (bool(answer[0]), str(answer[1]))
                else:
                    outcome = (bool(answer), "")
            self._step_event.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(ask)
            await self._step_event.wait()
            tg.cancel_scope.cancel()
        if outcome is None:
            promoted = self._promote_one or self._promote_full
            self.emit(
                GateChecked,
                name=gate.name,
                passed=promoted,
                reason="promoted" if promoted else "stopped",
            )
            return promoted
        passed, reason = outcome
        self.emit(GateChecked, name=gate.name, passed=passed, reason=reason)
        if not passed:
            why = f"gate {gate.name} failed" + (f": {reason}" if reason else "")
            self.trigger(why, self.rollout.rollback, _status_for(self.rollout.rollback))
        return False

    async def _watchdog(self) -> None:
        deadline = self.rollout.progress_deadline
        assert deadline is not None  # noqa: S101 - started only with a deadline
        while self._stop_mode is None:
            now = anyio.current_time()
            if self.paused or self.current_step is not None:
                self._progress_at = now
            remaining = self._progress_at + deadline.seconds - now
            if remaining > 0:
                await anyio.sleep(remaining)
                continue
            self.emit(
                ProgressDeadlineExceeded, seconds=deadline.seconds, action=str(deadline.action)
            )
            reason = f"no instance completed within the {deadline.seconds}s progress deadline"
            if deadline.action is DeadlineAction.REPORT:
                self._progress_at = now
            elif deadline.action is DeadlineAction.HALT:
                self.trigger(reason, RollbackMode.HALT, RolloutStatus.HALTED)
            else:
                self.trigger(reason, self.rollout.rollback, _status_for(self.rollout.rollback))

    async def _revert(self) -> None:
        self._rolling_back = True
        self._set_status(RolloutStatus.ROLLING_BACK)
        await self._note({"t": "rollback", "reason": self.stop_reason}, sync=True)
        changed = [s for s in self.slots if _needs_revert(s)]
        changed.sort(key=lambda s: s.changed_seq, reverse=True)
        # Newest first, but what is already out of traffic goes before all of it: it costs
        # no availability, and a window that is full could otherwise never reach it.
        changed.sort(key=lambda s: s.attached and s.ready and s.live is not None)
        self.emit(
            RollbackStarted,
            reason=self.stop_reason,
            mode=str(RollbackMode.REVERT),
            instance_ids=tuple(s.key for s in changed),
        )
        if not changed:
            return
        for slot in changed:
            slot.serving_at_start = slot.attached and slot.ready
        window = self.rollout.window(self._desired)
        barriers: list[Barrier] = []
        strategy = self.rollout.strategy
        if isinstance(strategy, Batches):
            position = 0
            for size in strategy.resolve(len(changed), whole=self._desired):
                position += size
                barriers.append(Barrier(position=position))
        sched = Scheduler(
            serving_at_start=[s.serving_at_start for s in changed],
            lockstep=isinstance(strategy, Batches),
            floor=window.floor,
            ceiling=window.ceiling,
            serving=sum(1 for s in self.slots if s.attached and s.ready and s.live is not None),
            existing=sum(s.existing for s in self.slots),
            cap=window.max_unavailable + window.max_surge,
            surge=self.rollout.surge_enabled,
            in_place=self.rollout.can_replace,
            barriers=barriers,
        )
        self._sched = sched
        await self._drive(sched, changed, None, _Groups())

    # ------------------------------------------------------------------ units

    async def _unit(self, sched: Scheduler, slot: Slot, mode: Mode, version: str) -> None:
        rolling_back = self._rolling_back
        self._busy.add(slot)
        slot.outcome = InstanceOutcome.IN_PROGRESS
        if slot.started_at is None:
            slot.started_at = anyio.current_time()
        counted_before = slot.serving_at_start
        taken = counted_before and mode is not Mode.SURGE
        existed_before = slot.existing
        reserved = 1 if mode is Mode.SURGE else 0
        if rolling_back:
            self._phase(slot, Phase.REVERTING, version)
        settled = False
        try:
            ok, reason = await self._attempts(slot, mode, version, rolling_back=rolling_back)
            if ok:
                self._succeed(slot, rolling_back=rolling_back)
            elif rolling_back:
                slot.outcome = InstanceOutcome.REVERT_FAILED
                slot.reason = reason
                self._phase(slot, Phase.REVERT_FAILED, version, reason)
                await self._settle(slot, attach_if_healthy=True)
            else:
                await self._fail(slot, mode, reason)
            settled = True
        except _InterruptedError:
            await self._interrupted(slot, version, rolling_back=rolling_back)
            settled = True
        finally:
            if not settled:
                # Cancelled (or a bug): put things back under a shield before the error goes on.
                with anyio.CancelScope(shield=True) as scope:
                    scope.deadline = anyio.current_time() + self.rollout.cleanup_timeout
                    await self._interrupted(slot, version, rolling_back=rolling_back)
            if self._journal is not None:
                await self._note({"t": "unit", "k": slot.key, "o": str(slot.outcome)})
            counted_after = slot.attached and slot.ready and slot.live is not None
            sched.adjust(
                serving=int(counted_after) - (int(counted_before) - int(taken)),
                existing=slot.existing - existed_before - reserved,
            )
            sched.finished()
            self._busy.discard(slot)
            slot.finished_at = anyio.current_time()
            self._seq += 1
            slot.changed_seq = self._seq

    def _succeed(self, slot: Slot, *, rolling_back: bool) -> None:
        slot.outcome = InstanceOutcome.REVERTED if rolling_back else InstanceOutcome.UPDATED
        if not slot.strays:
            slot.reason = ""
        self._phase(slot, Phase.REVERTED if rolling_back else Phase.UPDATED, slot.live.version)
        self._progress_at = anyio.current_time()
        if not rolling_back:
            self._consecutive = 0

    async def _fail(self, slot: Slot, mode: Mode, reason: str) -> None:
        slot.outcome = InstanceOutcome.FAILED
        slot.reason = reason
        self._phase(slot, Phase.FAILED, self.target, reason)
        self._record_failure(slot)
        live = slot.live
        in_traffic_on_old = (
            live is not None and slot.attached and slot.ready and live.version == slot.old_version
        )
        if self.rollout.failure.restore_failed and not in_traffic_on_old:
            restore_mode = Mode.TAKE_OUT if slot.live is None else mode
            if restore_mode is Mode.SURGE:
                await self._settle(slot, attach_if_healthy=True)
                return
            try:
                self._phase(slot, Phase.REVERTING, slot.old_version)
                await self._apply(slot, restore_mode, slot.old_version, restoring=True)
            except _StepFailedError as exc:
                slot.reason = f"{reason}; restoring {slot.old_version} failed too: {exc.reason}"
                await self._settle(slot, attach_if_healthy=False)
            except _InterruptedError:
                await self._settle(slot, attach_if_healthy=True)
            else:
                slot.reason = f"{reason}; restored to {slot.old_version}"
        else:
            await self._settle(slot, attach_if_healthy=False)

    def _record_failure(self, slot: Slot) -> None:
        policy = self.rollout.failure
        self._failed += 1
        self._consecutive += 1
        why = ""
        batch = self._batch_of_slot(slot)
        if batch is not None:
            self._batch_failed[batch] = self._batch_failed.get(batch, 0) + 1
        if self._failed > self._budget:
            noun = "instance" if self._failed == 1 else "instances"
            why = f"{self._failed} {noun} failed, over the budget of {self._budget} (max_failed)"
        elif batch is not None and policy.batch_exceeded(
            self._batch_failed[batch], self._batch_size[batch]
        ):
            why = (
                f"{self._batch_failed[batch]} of {self._batch_size[batch]} instances"
                f" in batch {batch} failed,"
                f" over max_failed_per_batch={policy.max_failed_per_batch}"
            )
        elif policy.circuit_breaker is not None and self._consecutive >= policy.circuit_breaker:
            why = f"circuit breaker: {self._consecutive} failures in a row"
        if why:
            self.trigger(
                f"{why}; last: {slot.key}: {slot.reason}",
                self.rollout.rollback,
                _status_for(self.rollout.rollback),
            )

    def _batch_of_slot(self, slot: Slot) -> int | None:
        if self._rolling_back:
            return None
        return self._slot_batch.get(slot.key)

    async def _interrupted(self, slot: Slot, version: str, *, rolling_back: bool) -> None:
        attach = self._stop_mode is not RollbackMode.REVERT or rolling_back
        await self._settle(slot, attach_if_healthy=attach)
        if slot.outcome is InstanceOutcome.IN_PROGRESS:
            slot.outcome = InstanceOutcome.INTERRUPTED
            if slot.live is not None and slot.attached and slot.live.version == version:
                slot.outcome = InstanceOutcome.REVERTED if rolling_back else InstanceOutcome.UPDATED
            slot.reason = "" if slot.outcome is not InstanceOutcome.INTERRUPTED else "interrupted"
            phase = (
                Phase.INTERRUPTED
                if slot.outcome is InstanceOutcome.INTERRUPTED
                else Phase(slot.outcome)
            )
            self._phase(slot, phase, version, slot.reason)

    async def _attempts(
        self, slot: Slot, mode: Mode, version: str, *, rolling_back: bool
    ) -> tuple[bool, str]:
        policy = self.rollout.failure
        reason = ""
        for attempt in range(1, policy.retries + 2):
            if not rolling_back:
                slot.attempts += 1
            try:
                await self._apply(slot, mode, version, restoring=False)
            except _StepFailedError as exc:
                reason = exc.reason
            else:
                return True, ""
            if attempt <= policy.retries:
                delay = policy.backoff.delay(attempt, self._rng)
                self._phase(slot, Phase.BACKING_OFF, version, reason)
                await self._wait(anyio.sleep(delay))
        return False, reason

    async def _wait(self, awaitable: Coroutine[Any, Any, _T], *, interruptible: bool = True) -> _T:
        """Await ``awaitable`` unless a trigger interrupts it (cancellation always can)."""
        if not interruptible:
            return await awaitable
        if self._stop_mode is not None and not self._rolling_back:
            awaitable.close()
            raise _InterruptedError
        with anyio.CancelScope() as scope:
            self._interruptible.add(scope)
            try:
                return await awaitable
            finally:
                self._interruptible.discard(scope)
        raise _InterruptedError

    async def _effect(self, what: str, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """Run one driver, router or hook call to completion, shielded and bounded."""
        timeout = self.rollout.effect_timeout
        with anyio.CancelScope(shield=True) as scope:
            scope.deadline = anyio.current_time() + timeout
            if self._cancelling:
                scope.deadline = min(scope.deadline, self._cleanup_deadline)
            self._shields.add(scope)
            try:
                return await fn(*args)
            except Exception as exc:
                raise _StepFailedError(f"{what} raised {type(exc).__name__}: {exc}") from exc
            finally:
                self._shields.discard(scope)
        raise _StepFailedError(f"{what} did not return within {timeout}s")

    async def _hook(self, name: str, *args: Any) -> None:
        hook = self._hooks.get(name)
        if hook is not None:
            await self._effect(f"hook {name}", hook, *args)

    async def _detach(
        self, slot: Slot, instance: Any, version: str, *, extra: bool = False
    ) -> None:
        await self._hook("before_detach", instance)
        self._phase(slot, Phase.DETACHING, version, instance=instance)
        router = self.rollout.router
        if router is not None:
            await self._recorded(
                slot, "detach", instance, version, "router.detach", router.detach, instance
            )
        if extra:
            slot.extra_attached = False
        else:
            slot.attached = False
        self._phase(slot, Phase.DETACHED, version, instance=instance)
        await self._hook("after_detach", instance)

    async def _attach(
        self, slot: Slot, instance: Any, version: str, *, extra: bool = False
    ) -> None:
        await self._hook("before_attach", instance)
        self._phase(slot, Phase.ATTACHING, version, instance=instance)
        router = self.rollout.router
        if router is not None:
            await self._recorded(
                slot, "attach", instance, version, "router.attach", router.attach, instance
            )
        if extra:
            slot.extra_attached = True
        else:
            slot.attached = True
        self._phase(slot, Phase.ATTACHED, version, instance=instance)
        await self._hook("after_attach", instance)

    async def _terminate(self, slot: Slot, instance: Any, version: str) -> None:
        await self._hook("before_terminate", instance)
        self._phase(slot, Phase.TERMINATING, version, instance=instance)
        await self._recorded(
            slot,
            "terminate",
            instance,
            version,
            "driver.terminate",
            self._elastic_driver.terminate,
            instance,
        )
        self._phase(slot, Phase.TERMINATED, version, instance=instance)
        await self._hook("after_terminate", instance)

    async def _launch(self, slot: Slot, version: str) -> Any:
        await self._hook("before_launch", version)
        self._phase(slot, Phase.LAUNCHING, version)
        instance = await self._recorded(
            slot, "launch", None, version, "driver.launch", self._elastic_driver.launch, version
        )
        self._phase(slot, Phase.LAUNCHED, version, instance=instance)
        return instance

    async def _ready(
        self, slot: Slot, instance: Any, version: str, *, restoring: bool = False
    ) -> None:
        await self._hook("before_ready", instance)
        self._phase(slot, Phase.WAITING_READY, version)
        if not self._instant_ready:
            outcome = await self._wait(
                wait_ready(self.rollout.check_function, instance, self.rollout.readiness),
                interruptible=not restoring,
            )
            if not outcome.ready:
                raise _StepFailedError(outcome.reason)
        self._phase(slot, Phase.READY, version)
        await self._hook("after_ready", instance)

    async def _apply(self, slot: Slot, mode: Mode, version: str, *, restoring: bool) -> None:
        """Carry ``slot`` to ``version`` in ``mode`` from whatever state it is in."""
        if mode is Mode.SURGE:
            await self._apply_surge(slot, version)
            return
        if slot.attached and slot.live is not None:
            await self._detach(slot, slot.live, version)
        if mode is Mode.IN_PLACE and slot.live is not None:
            # A restore skips the replace only when none was tried: one that raised may
            # have stopped the old version already, whatever the instance still says.
            if not (restoring and slot.live.version == version and not slot.replace_tried):
                await self._hook("before_replace", slot.live, version)
                self._phase(slot, Phase.REPLACING, version)
                slot.ready = False
                slot.replace_tried = True
                replaced = await self._recorded(
                    slot,
                    "replace",
                    slot.live,
                    version,
                    "driver.replace",
                    self._in_place_driver.replace,
                    slot.live,
                    version,
                )
                await self._set_live(slot, replaced)
                await self._hook("after_replace", replaced)
        else:
            if slot.live is not None:
                old = slot.live
                slot.ready = False
                await self._terminate(slot, old, version)
                await self._set_live(slot, None)
            slot.ready = False
            launched = await self._launch(slot, version)
            await self._set_live(slot, launched)
            await self._hook("after_launch", launched)
        await self._ready(slot, slot.live, version, restoring=restoring)
        slot.ready = True
        await self._attach(slot, slot.live, version)

    async def _apply_surge(self, slot: Slot, version: str) -> None:
        if slot.extra is not None:
            # A failed earlier attempt: its instance goes before a new one comes.
            await self._drop_extra(slot, version)
        await self._hook("before_launch", version)
        self._phase(slot, Phase.LAUNCHING, version)
        slot.extra = await self._recorded(
            slot, "launch", None, version, "driver.launch", self._elastic_driver.launch, version
        )
        self._phase(slot, Phase.LAUNCHED, version)
        await self._hook("after_launch", slot.extra)
        await self._ready(slot, slot.extra, version)
        await self._attach(slot, slot.extra, version, extra=True)
        old = slot.live
        if old is not None and slot.attached:
            await self._detach(slot, old, version)
        # From here the new instance is in traffic and the old one out: swap them first,
        # so a failing terminate leaves a stray to report, not an instance to roll back.
        new, slot.extra = slot.extra, None
        await self._set_live(slot, new)
        slot.attached, slot.extra_attached = True, False
        slot.ready = True
        if old is not None:
            try:
                await self._terminate(slot, old, version)
            except _StepFailedError as exc:
                slot.strays += (old,)
                slot.reason = f"old instance {old.id} left running out of traffic: {exc.reason}"

    async def _drop_extra(self, slot: Slot, version: str) -> None:
        extra = slot.extra
        if slot.extra_attached:
            await self._detach(slot, extra, version, extra=True)
        try:
            await self._terminate(slot, extra, version)
        except _StepFailedError:
            slot.strays += (extra,)
            raise
        finally:
            slot.extra = None

    async def _settle(self, slot: Slot, *, attach_if_healthy: bool) -> None:
        """Leave ``slot`` consistent.

        No surge instance is left outside traffic, and nothing detached unchecked.
        """
        try:
            if slot.extra is not None:
                await self._drop_extra(slot, slot.old_version)
            if (
                attach_if_healthy
                and slot.live is not None
                and not slot.attached
                and await self._healthy_now(slot.live)
            ):
                slot.ready = True
                await self._attach(slot, slot.live, slot.live.version)
        except _StepFailedError as exc:
            slot.reason = f"{slot.reason}; cleanup: {exc.reason}" if slot.reason else exc.reason

    async def _healthy_now(self, instance: Any) -> bool:
        check = self.rollout.check_function
        if check is None:
            return True
        with anyio.CancelScope(shield=True):
            result = await probe_once(check, instance, self.rollout.readiness.timeout)
            return result.healthy
        return False  # only if the shield were cancelled, and nothing cancels it

    # ----------------------------------------------------------------- result

    def _finish(self, status: RolloutStatus, reason: str) -> None:
        now = anyio.current_time()
        self.status = status
        instances = tuple(_instance_result(s) for s in self.slots)
        self.result = RolloutResult(
            status=status,
            target=self.target,
            reason=reason,
            instances=instances,
            started_at=self._started_at,
            finished_at=now,
        )
        self.emit(StatusChanged, status=status)
        self.emit(RolloutFinished, result=self.result)
        for stream in self._streams:
            stream.close()
        self._streams.clear()

    async def _after_rollout(self) -> None:
        hook = self._hooks.get("after_rollout")
        if hook is None:
            return
        try:
            await self._effect("hook after_rollout", hook, self.result)
        except _StepFailedError as exc:
            self.rollout.logger.warning("after_rollout hook failed: %s", exc.reason)

    def snapshot_counts(self) -> dict[InstanceOutcome, int]:
        """Instances by outcome so far."""
        return {outcome: count for outcome, count in self._tally.items() if count}

    def in_flight(self) -> tuple[str, ...]:
        """Ids of instances being worked on."""
        return tuple(s.key for s in sorted(self._busy, key=lambda s: s.position))


@attrs.frozen
class _Drive:
    """One run of :meth:`Execution._drive`: what its workers need to start more units.

    ``version`` None means each unit's own old version (a rollback).
    """

    sched: Scheduler
    units: list[Slot]
    version: str | None
    groups: _Groups


@attrs.define
class _Groups:
    """Waves and lockstep batches as contiguous ranges of the unit sequence."""

    waves: list[tuple[int, int]] = attrs.Factory(list[tuple[int, int]])
    batches: list[tuple[int, int]] = attrs.Factory(list[tuple[int, int]])
    _next: dict[int, int] = attrs.Factory(dict[int, int])

    def starting(self, ranges: list[tuple[int, int]], index: int) -> int | None:
        """Return the number of the range that unit ``index`` opens, if it opens one."""
        key = id(ranges)
        group = self._next.get(key, 0)
        if group < len(ranges) and ranges[group][0] == index:
            self._next[key] = group + 1
            return group
        return None


def _unstart(sched: Scheduler, slot: Slot, mode: Mode) -> None:
    """Hand back what the scheduler reserved for a unit that will not run after all."""
    if mode is Mode.SURGE:
        sched.adjust(existing=-1)
    elif slot.serving_at_start:
        sched.adjust(serving=1)
    sched.finished()


def _instance_result(slot: Slot) -> InstanceResult:
    live = slot.live
    return InstanceResult(
        id=slot.key,
        outcome=slot.outcome,
        old_version=slot.old_version,
        version=None if live is None else live.version,
        current_id=None if live is None else live.id,
        serving=live is not None and slot.attached,
        attempts=slot.attempts,
        reason=slot.reason,
        started_at=slot.started_at,
        finished_at=slot.finished_at,
        strays=tuple(stray.id for stray in slot.strays),
    )


def _changed(slot: Slot) -> bool:
    """Whether what stands in its place differs from the start: gone, other version, out."""
    live = slot.live
    return live is None or live.version != slot.old_version or not slot.attached


def _needs_revert(slot: Slot) -> bool:
    untouched = slot.outcome in {InstanceOutcome.PENDING, InstanceOutcome.SKIPPED}
    return not untouched and _changed(slot)


def _status_for(mode: RollbackMode) -> RolloutStatus:
    return RolloutStatus.ROLLED_BACK if mode is RollbackMode.REVERT else RolloutStatus.HALTED


def _resolve_advance(to: int | str, desired: int) -> int:
    if isinstance(to, int):
        return min(to, desired)
    return math.ceil(percent_of(to) * desired / 100)


def _wall() -> float:
    return time.time()

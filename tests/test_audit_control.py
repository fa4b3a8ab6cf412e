"""A second docs audit, of the control handle, events, observers, snapshots and results.

Written from README.md, docs/*.md and the public docstrings only, with a driver and
router of its own (in memory, every call taking virtual time), as an outside user
would. Each test names the promise it holds the engine to.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import anyio
import attrs
import pytest

import rolling
from rolling import (
    Batches,
    BlueGreen,
    Canary,
    ControlError,
    InstanceOutcome,
    Pause,
    Phase,
    Readiness,
    Rollout,
    RolloutStatus,
    SetWeight,
)
from rolling import events as ev

pytestmark = pytest.mark.anyio


@attrs.define
class Box:
    id: str
    version: str


class Fleet:
    """A fleet whose every call takes ``delay`` seconds of (virtual) time."""

    def __init__(self, n: int = 3, delay: float = 1.0) -> None:
        self.boxes = [Box(f"i{k}", "v1") for k in range(n)]
        self.delay = delay
        self.numbers = itertools.count(100)
        self.attached: set[str] = {b.id for b in self.boxes}
        self.weights: dict[str, int] = {}

    def ids(self) -> list[str]:
        return [b.id for b in self.boxes]

    async def list_instances(self) -> list[Box]:
        return list(self.boxes)

    async def replace(self, box: Box, version: str) -> Box:
        await anyio.sleep(self.delay)
        box.version = version
        return box

    async def launch(self, version: str) -> Box:
        await anyio.sleep(self.delay)
        box = Box(f"n{next(self.numbers)}", version)
        self.boxes.append(box)
        return box

    async def terminate(self, box: Box) -> None:
        await anyio.sleep(self.delay)
        self.boxes = [b for b in self.boxes if b.id != box.id]
        self.attached.discard(box.id)


class InPlace:
    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    async def list_instances(self) -> list[Box]:
        return await self.fleet.list_instances()

    async def replace(self, instance: Box, version: str) -> Box:
        return await self.fleet.replace(instance, version)


class Elastic:
    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    async def list_instances(self) -> list[Box]:
        return await self.fleet.list_instances()

    async def launch(self, version: str) -> Box:
        return await self.fleet.launch(version)

    async def terminate(self, instance: Box) -> None:
        await self.fleet.terminate(instance)


class Router:
    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet

    async def attach(self, instance: Box) -> None:
        self.fleet.attached.add(instance.id)

    async def detach(self, instance: Box) -> None:
        self.fleet.attached.discard(instance.id)

    async def set_weight(self, instance: Box, weight: int) -> None:
        self.fleet.weights[instance.id] = weight


def in_place(fleet: Fleet, seen: list[ev.Event] | None = None, **options: Any) -> Rollout[Box]:
    observers = [] if seen is None else [seen.append]
    return Rollout(InPlace(fleet), "v2", router=Router(fleet), observers=observers, **options)


def elastic(fleet: Fleet, seen: list[ev.Event] | None = None, **options: Any) -> Rollout[Box]:
    observers = [] if seen is None else [seen.append]
    return Rollout(Elastic(fleet), "v2", router=Router(fleet), observers=observers, **options)


def log() -> list[ev.Event]:
    return []


def of(seen: list[ev.Event], kind: type[Any]) -> list[Any]:
    return [e for e in seen if isinstance(e, kind)]


def controls(seen: list[ev.Event]) -> list[tuple[str, str]]:
    return [(e.action, e.detail) for e in of(seen, ev.ControlRequested)]


def statuses(seen: list[ev.Event]) -> list[RolloutStatus]:
    return [e.status for e in of(seen, ev.StatusChanged)]


# ------------------------------------------------------------------ fixed by this audit


async def test_a_control_before_the_first_await_is_stamped_like_every_event() -> None:
    # rolling.events: every event carries `at`, the event loop's clock, and `wall`, seconds
    # since the epoch. A pause() before the block's first await was stamped with the
    # process's monotonic clock for both (so it came "after" every later event on a virtual
    # clock, and its wall time was not an epoch time at all).
    fleet, seen = Fleet(2), log()
    async with in_place(fleet, seen).start() as handle:
        before = anyio.current_time()
        handle.pause()
        assert handle.status().status is RolloutStatus.PENDING
        assert handle.status().paused
        await anyio.sleep(1)
        handle.resume()
    first = seen[0]
    assert isinstance(first, ev.ControlRequested)
    assert first.action == "pause"
    assert first.at == before
    assert abs(first.wall - time.time()) < 3600
    assert [e.at for e in seen] == sorted(e.at for e in seen)
    walls = [e.wall - e.at for e in seen]
    assert max(walls) - min(walls) < 1  # one offset between the two clocks throughout


async def test_an_observer_may_promote_the_pause_that_just_started() -> None:
    # concepts.md, Control: the handle's methods may be called from any task while the
    # rollout runs; an observer is the obvious place to approve a pause as it starts. A
    # promote() from the observer of the pause's own StepStarted used to be lost (the wait
    # had not begun), and the rollout waited forever.
    fleet, seen = Fleet(3), log()
    handles: list[rolling.RolloutHandle] = []

    def approve(event: ev.Event) -> None:
        if isinstance(event, ev.StepStarted) and isinstance(event.step, Pause):
            handles[0].promote()

    rollout: Rollout[Box] = Rollout(
        InPlace(fleet),
        "v2",
        router=Router(fleet),
        steps=[rolling.Advance(1), Pause()],
        observers=[approve, seen.append],
    )
    streamed: list[ev.Event] = []
    with anyio.fail_after(100):
        async with rollout.start() as handle:
            handles.append(handle)
            async with handle.events() as stream:
                streamed.extend([e async for e in stream])
    assert handle.result.status is RolloutStatus.SUCCEEDED
    finished = of(seen, ev.StepFinished)
    assert [(e.index, e.promoted) for e in finished] == [(1, True)]
    # The control's event comes after the event it answered, for observers and streams alike.
    kinds = [type(e) for e in seen]
    assert kinds.index(ev.StepStarted) < kinds.index(ev.ControlRequested)
    assert kinds.index(ev.ControlRequested) < kinds.index(ev.StepFinished)
    assert streamed == seen


@pytest.mark.parametrize("step", ["pause", "gate"])
async def test_an_observer_may_abort_at_a_step_that_just_started(step: str) -> None:
    # The same for abort(): "waits in flight (readiness, back-off, pauses, gates) are
    # interrupted". The abort came before the wait began, and the wait never ended.
    fleet, seen = Fleet(3), log()
    handles: list[rolling.RolloutHandle] = []

    async def slow_gate() -> bool:
        await anyio.sleep(10_000)
        return True

    def abort(event: ev.Event) -> None:
        if isinstance(event, ev.StepStarted):
            handles[0].abort()

    hold = Pause() if step == "pause" else rolling.Gate(slow_gate, name="slow")
    rollout: Rollout[Box] = Rollout(
        InPlace(fleet),
        "v2",
        router=Router(fleet),
        steps=[rolling.Advance(1), hold],
        observers=[abort, seen.append],
    )
    with anyio.fail_after(100):
        async with rollout.start() as handle:
            handles.append(handle)
    result = handle.result
    assert result.status is RolloutStatus.ABORTED
    assert result.counts == {InstanceOutcome.REVERTED: 1, InstanceOutcome.PENDING: 2}
    assert result.duration < 10
    if step == "gate":
        assert [(g.passed, g.reason) for g in of(seen, ev.GateChecked)] == [(False, "stopped")]


@pytest.mark.parametrize("strategy", ["rolling", "blue-green"])
async def test_an_observer_s_abort_interrupts_the_readiness_wait_it_saw_begin(
    strategy: str,
) -> None:
    # concepts.md, Cancellation / Rollback: waits (readiness, back-off ...) are interrupted
    # at once. An abort from the observer of an instance's WAITING_READY came before that
    # wait began; the wait then ran to its full deadline.
    fleet, seen = Fleet(3), log()
    handles: list[rolling.RolloutHandle] = []

    async def never_ready(box: Box) -> bool:
        return box.version != "v2"  # v1 is ready at once: the rollback is quick

    def abort(event: ev.Event) -> None:
        if isinstance(event, ev.InstancePhaseChanged) and event.phase is Phase.WAITING_READY:
            handles[0].abort()

    readiness = Readiness(check=never_ready, period=1, deadline=1000)
    observers = [abort, seen.append]
    rollout: Rollout[Box] = (
        Rollout(InPlace(fleet), "v2", readiness=readiness, observers=observers)
        if strategy == "rolling"
        else Rollout(
            Elastic(fleet), "v2", readiness=readiness, strategy=BlueGreen(), observers=observers
        )
    )
    with anyio.fail_after(2000):
        async with rollout.start() as handle:
            handles.append(handle)
    assert handle.result.status is RolloutStatus.ABORTED
    assert handle.result.duration < 100
    assert sorted(fleet.ids()) == ["i0", "i1", "i2"]
    assert [b.version for b in fleet.boxes] == ["v1"] * 3


async def test_a_full_promote_keeps_blue_for_the_whole_scale_down_delay() -> None:
    # canary.md, Blue-green: blue stays, out of traffic, for scale_down_delay seconds (an
    # abort in this time switches back); promote(full=True) skips the pauses and gates
    # still to come. A full promote during the delay used to retire blue at once.
    fleet, seen = Fleet(2), log()
    rollout = elastic(fleet, seen, strategy=BlueGreen(scale_down_delay=30))
    async with rollout.start() as handle:
        await anyio.sleep(5)  # launched at 1 s, switched: 4 s into the delay
        assert handle.status().traffic == 100.0
        handle.promote(full=True)
        assert controls(seen)[-1] == ("promote", "full=True")
        await anyio.sleep(10)
        assert {"i0", "i1"} <= set(fleet.ids())  # blue is still there to switch back to
        handle.abort()
    assert handle.result.status is RolloutStatus.ABORTED
    assert sorted(fleet.ids()) == ["i0", "i1"]
    assert handle.status().traffic == 0.0


async def test_a_full_promote_does_not_shorten_a_canary_s_scale_down_delay() -> None:
    fleet, seen = Fleet(2), log()
    rollout = elastic(
        fleet, seen, strategy=Canary(scale_down_delay=20), steps=[SetWeight(50), Pause(5)]
    )
    async with rollout.start() as handle:
        await anyio.sleep(2)
        handle.promote(full=True)  # ends the pause, skips to the promotion
        await anyio.sleep(5)
        handle.promote(full=True)  # in the delay: nothing left to skip
    result = handle.result
    assert result.status is RolloutStatus.SUCCEEDED
    switch = of(seen, ev.TrafficShifted)[-1]
    assert switch.reason == "switch"
    assert result.finished_at - switch.at >= 20


async def test_a_full_promote_still_sets_the_flags_of_a_rolling_update_s_flag_steps() -> None:
    # concepts.md: promote(full=True) skips every pause and gate still to come; flags.md: a
    # SetFlag step sets its flag when the pass reaches it. A full promote used to skip the
    # flag steps of a rolling update too (announced as promoted steps, the flag never set).
    flags: list[tuple[str, object]] = []

    async def setter(flag: str, value: object) -> None:
        flags.append((flag, value))

    fleet, seen = Fleet(3), log()
    steps = [
        rolling.Advance(1),
        Pause(),
        rolling.SetFlag("new-format", True, setter=setter),
        rolling.Advance(2),
        Pause(),
    ]
    async with in_place(fleet, seen, steps=steps).start() as handle:
        await anyio.sleep(1.5)
        handle.promote(full=True)
    assert handle.result.status is RolloutStatus.SUCCEEDED
    assert flags == [("new-format", True)]
    assert [(f.flag, f.ok, f.cause) for f in handle.result.flags] == [("new-format", True, "step")]
    finished = [(e.index, e.promoted) for e in of(seen, ev.StepFinished)]
    assert finished == [(1, True), (2, False), (4, True)]


async def test_a_canary_s_snapshot_names_in_flight_what_it_counts_in_progress() -> None:
    # RolloutSnapshot: in_flight are the instances being worked on, and IN_PROGRESS
    # (concepts.md) is the outcome of an instance being worked on. During a canary's pause,
    # counts said one instance was in progress and in_flight named none.
    fleet = Fleet(4)
    rollout = elastic(fleet, strategy=Canary(), steps=[SetWeight(50), Pause()])
    async with rollout.start() as handle:
        await anyio.sleep(2.5)  # launched at 1 s, weighted at 2 s: in the pause
        assert handle.status().step == Pause()
        snapshot = handle.status()
        assert snapshot.status is RolloutStatus.PAUSED
        assert snapshot.traffic == 50.0
        assert snapshot.counts == {InstanceOutcome.IN_PROGRESS: 2, InstanceOutcome.PENDING: 2}
        assert snapshot.in_flight == ("i0", "i1")
        handle.promote()
        await anyio.sleep(1.5)  # the rest of the new set is being launched
        snapshot = handle.status()
        assert snapshot.in_flight == ("i0", "i1", "i2", "i3")
        assert snapshot.counts == {InstanceOutcome.IN_PROGRESS: 4}
    assert handle.status().in_flight == ()


async def test_an_async_observer_is_refused_when_the_rollout_is_built() -> None:
    # Rollout: observers are sync callables, and everything is validated when the rollout
    # is built. An async function was accepted, and then never ran: each event made a
    # coroutine nobody awaited.
    async def observer(_event: ev.Event) -> None:
        pass  # pragma: no cover - never called

    class AsyncCall:
        async def __call__(self, _event: ev.Event) -> None:
            pass  # pragma: no cover - never called

    fleet = Fleet(1)
    for bad in (observer, AsyncCall()):
        with pytest.raises(rolling.ConfigError) as caught:
            Rollout(InPlace(fleet), "v2", observers=[print, bad])
        assert caught.value.field == "Rollout.observers[1]"
        assert "async" in caught.value.problem


async def test_a_rollout_started_twice_says_so() -> None:
    # RolloutAlreadyStartedError: a Rollout runs once. While it still ran, the message said
    # it "already ran".
    fleet = Fleet(1)
    rollout = in_place(fleet)
    async with rollout.start() as handle:
        with pytest.raises(rolling.RolloutAlreadyStartedError, match="already been started"):
            await rollout.run()
    assert handle.result.ok
    with pytest.raises(rolling.RolloutAlreadyStartedError):
        await rollout.run()
    with pytest.raises(rolling.RolloutAlreadyStartedError):
        async with rollout.start():
            pass  # pragma: no cover - never entered
    assert issubclass(rolling.RolloutAlreadyStartedError, rolling.RollingError)


# ------------------------------------------------------------------- checked and found to hold


async def test_controls_before_the_first_await() -> None:
    # A pause before the run begins says PAUSED from the start; abort() stops before any
    # change; promote() with nothing running is a ControlError; promote(full=True) skips the
    # steps to come; resume() without pause() is accepted.
    fleet, seen = Fleet(3), log()
    async with in_place(fleet, seen, steps=[rolling.Advance(1), Pause()]).start() as handle:
        with pytest.raises(ControlError, match="nothing to promote"):
            handle.promote()
        handle.resume()
        handle.promote(full=True)
    assert handle.result.status is RolloutStatus.SUCCEEDED
    assert [(e.index, e.promoted) for e in of(seen, ev.StepFinished)] == [(1, True)]
    assert controls(seen) == [("promote", "full=False"), ("resume", ""), ("promote", "full=True")]
    assert RolloutStatus.PAUSED not in statuses(seen)

    for rollback in (True, False):
        fleet, seen = Fleet(3), log()
        async with in_place(fleet, seen).start() as handle:
            handle.abort(rollback=rollback)
        result = handle.result
        assert result.status is RolloutStatus.ABORTED
        assert result.counts == {InstanceOutcome.PENDING: 3}
        assert [b.version for b in fleet.boxes] == ["v1"] * 3
        assert controls(seen) == [("abort", f"rollback={rollback}")]
        assert statuses(seen)[-1] is RolloutStatus.ABORTED
        assert isinstance(seen[-1], ev.RolloutFinished)


async def test_pause_during_a_batch_lets_it_finish_and_starts_no_other() -> None:
    fleet, seen = Fleet(6), log()
    async with in_place(fleet, seen, strategy=Batches(2)).start() as handle:
        await anyio.sleep(0.5)
        handle.pause()
        handle.pause()  # twice: still one pause
        snapshot = handle.status()
        assert snapshot.status is RolloutStatus.PAUSED
        assert snapshot.paused
        assert snapshot.in_flight == ("i0", "i1")
        await anyio.sleep(10)
        snapshot = handle.status()
        assert snapshot.in_flight == ()
        assert snapshot.counts == {InstanceOutcome.UPDATED: 2, InstanceOutcome.PENDING: 4}
        assert len(of(seen, ev.BatchStarted)) == 1
        assert len(of(seen, ev.BatchFinished)) == 1
        handle.resume()
        assert handle.status().status is RolloutStatus.RUNNING
    assert handle.result.status is RolloutStatus.SUCCEEDED
    assert controls(seen) == [("pause", ""), ("pause", ""), ("resume", "")]
    assert statuses(seen) == [
        RolloutStatus.RUNNING,
        RolloutStatus.PAUSED,
        RolloutStatus.RUNNING,
        RolloutStatus.SUCCEEDED,
    ]


async def test_between_batches_a_promote_under_pause_waits_for_resume() -> None:
    fleet, seen = Fleet(4), log()
    rollout = in_place(fleet, seen, strategy=Batches(2, pause=Pause()))
    async with rollout.start() as handle:
        await anyio.sleep(1.5)  # batch 0 done, the pause after it runs
        assert handle.status().step == Pause()
        handle.pause()
        handle.promote(full=True)
        await anyio.sleep(5)
        snapshot = handle.status()
        assert snapshot.status is RolloutStatus.PAUSED
        assert snapshot.step is None
        assert len(of(seen, ev.BatchStarted)) == 1
        handle.resume()
    assert handle.result.status is RolloutStatus.SUCCEEDED
    assert [(e.index, e.promoted) for e in of(seen, ev.StepFinished)] == [(0, True)]


async def test_pause_then_abort_reverts_and_ends_aborted() -> None:
    fleet, seen = Fleet(6), log()
    async with in_place(fleet, seen, strategy=Batches(2)).start() as handle:
        await anyio.sleep(0.5)
        handle.pause()
        handle.abort()
        handle.abort()  # twice: one abort
        with pytest.raises(ControlError):
            handle.promote()
    result = handle.result
    assert result.status is RolloutStatus.ABORTED
    assert result.reason == "aborted"
    assert result.counts == {InstanceOutcome.REVERTED: 2, InstanceOutcome.PENDING: 4}
    started = of(seen, ev.RollbackStarted)
    assert [(e.reason, e.mode, set(e.instance_ids)) for e in started] == [
        ("aborted", "revert", {"i0", "i1"})
    ]


async def test_abort_without_rollback_stops_a_rollback_in_progress() -> None:
    fleet, seen = Fleet(4, delay=10), log()
    async with in_place(fleet, seen, strategy=Batches(2)).start() as handle:
        await anyio.sleep(15)  # batch 0 updated, batch 1 being replaced
        handle.abort()
        await anyio.sleep(7)  # batch 1 settled at 20 s, the rollback runs
        assert handle.status().status is RolloutStatus.ROLLING_BACK
        handle.pause()  # a rollback runs to its end: a pause does not hold it
        assert handle.status().status is RolloutStatus.ROLLING_BACK
        handle.abort(rollback=False)
    result = handle.result
    assert result.status is RolloutStatus.ABORTED
    assert "aborted during rollback" in result.reason
    assert InstanceOutcome.UPDATED in result.counts or InstanceOutcome.INTERRUPTED in result.counts


async def test_every_control_after_the_end_is_a_control_error() -> None:
    fleet = Fleet(1)
    async with in_place(fleet).start() as handle:
        with pytest.raises(ControlError, match="not finished"):
            _ = handle.result
    assert await handle.wait() is handle.result
    calls: dict[str, Callable[[], None]] = {
        "pause": handle.pause,
        "resume": handle.resume,
        "abort": handle.abort,
        "promote": lambda: handle.promote(full=True),
    }
    for action, call in calls.items():
        with pytest.raises(ControlError, match=f"cannot {action}: the rollout has already"):
            call()
    snapshot = handle.status()
    assert snapshot.status is RolloutStatus.SUCCEEDED
    assert snapshot.counts == {InstanceOutcome.UPDATED: 1}
    async with handle.events() as stream:
        assert [e async for e in stream] == []


async def test_gate_and_analysis_steps_answer_the_controls() -> None:
    # A promoted gate passes; a promote while an analysis measures skips the rest of it;
    # an inconclusive analysis pauses for a person, and resume() goes on.
    async def slow_gate() -> bool:
        await anyio.sleep(10_000)
        return True

    async def no_data(_context: object) -> None:
        return None

    analysis = rolling.Analysis(
        metrics=[
            rolling.Metric(
                name="m", provider=no_data, failure=lambda v: v > 1, on_no_data="inconclusive"
            )
        ],
        name="a",
    )
    fleet, seen = Fleet(3), log()
    steps = [rolling.Advance(1), rolling.Gate(slow_gate, name="g"), rolling.Analyze(analysis)]
    async with in_place(fleet, seen, steps=steps).start() as handle:
        await anyio.sleep(1.5)
        assert isinstance(handle.status().step, rolling.Gate)
        assert handle.status().status is RolloutStatus.RUNNING
        handle.promote()
        await anyio.sleep(0.5)
        snapshot = handle.status()
        assert snapshot.status is RolloutStatus.PAUSED  # inconclusive: a person decides
        assert not snapshot.paused
        assert isinstance(snapshot.step, rolling.Analyze)
        handle.resume()
    assert handle.result.status is RolloutStatus.SUCCEEDED
    assert [(g.passed, g.reason) for g in of(seen, ev.GateChecked)] == [(True, "promoted")]
    assert [(e.index, e.promoted) for e in of(seen, ev.StepFinished)] == [(1, True), (2, True)]


async def test_blue_green_waits_for_a_promote_and_an_abort_in_the_hold_switches_back() -> None:
    fleet, seen = Fleet(2), log()
    rollout = elastic(fleet, seen, strategy=BlueGreen(auto_promote=False, scale_down_delay=30))
    async with rollout.start() as handle:
        await anyio.sleep(3)
        snapshot = handle.status()
        assert snapshot.status is RolloutStatus.PAUSED
        assert snapshot.step == Pause(None)
        assert snapshot.traffic is None
        handle.promote()
        await anyio.sleep(1)
        assert handle.status().traffic == 100.0
        assert fleet.weights["i0"] == 0
        handle.abort()
    result = handle.result
    assert result.status is RolloutStatus.ABORTED
    assert [(i.id, i.outcome, i.version, i.serving) for i in result.instances] == [
        ("i0", InstanceOutcome.REVERTED, "v1", True),
        ("i1", InstanceOutcome.REVERTED, "v1", True),
    ]
    assert sorted(fleet.ids()) == ["i0", "i1"]
    assert [(e.index, e.promoted) for e in of(seen, ev.StepFinished)] == [(1, True)]
    assert [e.reason for e in of(seen, ev.TrafficShifted)] == ["switch"]


async def test_event_streams_from_before_the_first_await_late_and_closed() -> None:
    fleet, seen = Fleet(3), log()
    got: dict[str, list[ev.Event]] = {"early": [], "other": [], "closed": [], "late": []}

    async def read(name: str, stream: Any, limit: int | None = None) -> None:
        async with stream:
            async for event in stream:
                got[name].append(event)
                if len(got[name]) == limit:
                    break

    async with in_place(fleet, seen, steps=[rolling.Advance(1), Pause(2)]).start() as handle:
        early, other, closed = handle.events(), handle.events(), handle.events()
        handle.pause()
        async with anyio.create_task_group() as tg:
            tg.start_soon(read, "early", early)
            tg.start_soon(read, "other", other)
            tg.start_soon(read, "closed", closed, 3)
            await anyio.sleep(0.5)
            handle.resume()
            await anyio.sleep(1.2)
            tg.start_soon(read, "late", handle.events())
    assert got["early"] == seen
    assert got["other"] == seen
    assert got["closed"] == seen[:3]
    assert isinstance(seen[0], ev.ControlRequested)
    assert isinstance(seen[-1], ev.RolloutFinished)
    assert seen[-1].result is handle.result
    late = got["late"]
    assert late
    assert late == seen[-len(late) :]
    assert all(e.at >= 1.7 + seen[1].at - 0.001 for e in late)


@pytest.mark.parametrize("how", ["run", "start"])
async def test_an_observer_that_raises_halts_the_rollout_and_comes_out(how: str) -> None:
    fleet, seen = Fleet(3), log()
    calls = [0]

    def bad(_event: ev.Event) -> None:
        calls[0] += 1
        if calls[0] == 5:
            raise KeyError("boom")

    rollout: Rollout[Box] = Rollout(
        InPlace(fleet), "v2", router=Router(fleet), observers=[bad, seen.append]
    )

    async def run() -> None:
        if how == "run":
            await rollout.run()
        else:
            async with rollout.start():
                pass

    with pytest.raises(KeyError, match="boom"):
        await run()
    assert calls[0] == 5  # called no more once it raised
    finished = seen[-1]
    assert isinstance(finished, ev.RolloutFinished)
    assert finished.result.status is RolloutStatus.HALTED
    assert "KeyError" in finished.result.reason

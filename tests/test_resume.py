"""Resume: a rollout cancelled at any effect is finished by the next run on its journal."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import rolling
from helpers import MUTATING, cancel_then_resume, rollout_for
from rolling import (
    InstanceOutcome,
    JournalError,
    RollingUpdate,
    Rollout,
    RolloutStatus,
)
from rolling._journal import begin_record
from rolling._recovery import reconcile, recover
from rolling.testing import (
    EventRecorder,
    FleetChange,
    Latency,
    MemoryJournal,
    SimulatedFleet,
)

pytestmark = pytest.mark.anyio


async def journal_of(keys: str, records: list[dict[str, Any]]) -> MemoryJournal:
    """A journal, made durable, of a rollout to v2 of the fleet ``keys`` (all on v1)."""
    journal = MemoryJournal()
    for record in [begin_record("v2", [(key, "v1") for key in keys]), *records]:
        await journal.append(record, sync=True)
    return journal


def test_recovery_rules_on_a_hand_written_journal() -> None:
    records: list[dict[str, Any]] = [
        {"t": "begin", "target": "v2", "fleet": [["a", "v1"], ["b", "v1"], ["c", "v1"]]},
        {"t": "fx", "k": "a", "op": "detach", "s": "start", "i": "a", "v": "v2"},
        {"t": "fx", "k": "a", "op": "detach", "s": "done", "i": "a", "v": "v2"},
        {"t": "fx", "k": "b", "op": "launch", "s": "start", "i": None, "v": "v2"},
        {"t": "fx", "k": "b", "op": "launch", "s": "done", "i": None, "v": "v2", "n": ["n1", "v2"]},
        {"t": "fx", "k": "c", "op": "launch", "s": "start", "i": None, "v": "v2"},
    ]
    recovered = recover(records, target="v2")
    assert recovered is not None
    assert recovered.attached["a"] is False
    assert recovered.attached["b"] is True
    assert recovered.launched == {"n1"}
    assert recovered.unreported_launches == 1
    assert not recovered.rolling_back

    class Inst:
        def __init__(self, id: str, version: str) -> None:  # noqa: A002 - the protocol's name
            self.id, self.version = id, version

    fleet = [
        Inst("a", "v1"),
        Inst("b", "v1"),
        Inst("c", "v1"),
        Inst("n1", "v2"),
        Inst("ghost", "v2"),
    ]
    matched = reconcile(recovered, fleet)
    assert matched.attached == {"a": False, "b": True, "c": True}
    assert sorted(i.id for i in matched.doomed) == ["ghost", "n1"]
    with pytest.raises(JournalError, match="never saw"):
        reconcile(recovered, [*fleet, Inst("ghost2", "v2")])
    assert recover([*records, {"t": "end", "status": "succeeded"}], target="v2") is None


async def count_effects(make: Any) -> int:
    fleet, rollout = make()
    result = await rollout.run()
    assert result.status is RolloutStatus.SUCCEEDED
    return sum(1 for c in fleet.calls if c.op in MUTATING)


def in_place(path: MemoryJournal) -> Any:
    def make() -> tuple[SimulatedFleet, Rollout[Any]]:
        fleet = SimulatedFleet(5, latency=Latency(replace=3, detach=1, attach=1))
        return fleet, rollout_for(fleet, path, strategy=RollingUpdate(max_unavailable=2))

    return make


def elastic(path: MemoryJournal) -> Any:
    def make() -> tuple[SimulatedFleet, Rollout[Any]]:
        fleet = SimulatedFleet(4, latency=Latency(launch=3, terminate=1, detach=1, attach=1))
        strategy = RollingUpdate(max_unavailable=0, max_surge=1)
        return fleet, rollout_for(fleet, path, strategy=strategy)

    return make


@pytest.mark.parametrize("shape", [in_place, elastic], ids=["in_place", "elastic"])
async def test_cancel_at_every_effect_then_resume_from_the_journal(shape: Any) -> None:
    effects = await count_effects(shape(MemoryJournal()))
    assert effects >= 10
    for k in range(1, effects + 1):
        _, monitor = await cancel_then_resume(shape, k, MUTATING)
        monitor.assert_ok()


async def test_resume_continues_a_rollback() -> None:
    fleet = SimulatedFleet(5, latency=Latency(replace=5))
    fleet.fault("i-002", version="v2", never_ready=True)
    path = MemoryJournal()
    rollout = rollout_for(fleet, path, strategy=RollingUpdate(max_unavailable=1))
    recorder = EventRecorder()
    rollout.observers = (recorder,)
    with anyio.CancelScope() as scope:

        def stop_in_rollback(event: rolling.Event) -> None:
            if isinstance(event, rolling.InstancePhaseChanged) and event.rollback:
                scope.cancel()

        rollout.observers = (recorder, stop_in_rollback)
        await rollout.run()
    assert recorder.of_type(rolling.RollbackStarted)
    assert fleet.version_counts().get("v2", 0) >= 1
    result = await rollout_for(fleet, path, strategy=RollingUpdate(max_unavailable=1)).run()
    assert result.status is RolloutStatus.ROLLED_BACK
    assert result.reason.startswith("resumed rollback")
    assert fleet.version_counts() == {"v1": 5}
    assert set(fleet.attached_ids) == {i.id for i in fleet.instances}


def test_an_original_instance_swapped_out_but_not_terminated_is_cleaned_up() -> None:
    records: list[dict[str, Any]] = [
        {"t": "begin", "target": "v2", "fleet": [["a", "v1"]]},
        {"t": "fx", "k": "a", "op": "launch", "s": "start", "i": None, "v": "v2"},
        {"t": "fx", "k": "a", "op": "launch", "s": "done", "i": None, "v": "v2", "n": ["n1", "v2"]},
        {"t": "fx", "k": "a", "op": "attach", "s": "done", "i": "n1", "v": "v2"},
        {"t": "fx", "k": "a", "op": "detach", "s": "done", "i": "a", "v": "v2"},
        {"t": "swap", "k": "a", "i": "n1"},
        {"t": "fx", "k": "a", "op": "terminate", "s": "start", "i": "a", "v": "v2"},
    ]
    recovered = recover(records, target="v2")
    assert recovered is not None

    class Inst:
        def __init__(self, id: str, version: str) -> None:  # noqa: A002 - the protocol's name
            self.id, self.version = id, version

    matched = reconcile(recovered, [Inst("a", "v1"), Inst("n1", "v2")])
    assert [i.id for i in matched.doomed] == ["a"]
    assert matched.live["a"].id == "n1"
    assert matched.attached["a"] is True


async def test_a_resumed_rollback_reverts_what_is_out_of_traffic_first() -> None:
    fleet = SimulatedFleet(ids=["a", "b", "c", "d"])
    a, b, *_ = await fleet.list_instances()
    await fleet.replace(a, "v2")
    await fleet.replace(b, "v2")
    await fleet.detach(b)
    fleet.fault("b", unhealthy_at_start=True)
    records: list[dict[str, Any]] = [
        {"t": "unit", "k": "a", "o": "updated"},
        {"t": "fx", "k": "b", "op": "detach", "s": "done", "i": "b", "v": "v2"},
        {"t": "unit", "k": "c", "o": "failed"},
        {"t": "rollback", "reason": "1 instance failed"},
    ]
    journal = await journal_of("abcd", records)
    result = await rollout_for(fleet, journal, strategy=RollingUpdate(max_unavailable=1)).run()
    assert result.status is RolloutStatus.ROLLED_BACK
    assert fleet.version_counts() == {"v1": 4}
    assert {result.by_id(k).outcome for k in "ab"} == {InstanceOutcome.REVERTED}


async def test_a_full_promote_holds_across_a_resume() -> None:
    """Steps a full promote skipped stay skipped when the rollout is resumed."""
    fleet = SimulatedFleet(4, latency=Latency(replace=10))
    journal = MemoryJournal()
    steps: list[rolling.Step] = [
        rolling.Advance(1), rolling.Pause(), rolling.Advance(2), rolling.Pause()
    ]  # fmt: skip

    def rollout(**options: Any) -> rolling.Rollout[Any]:
        return rolling.Rollout(
            fleet, "v2", strategy=rolling.RollingUpdate(max_unavailable=1), journal=journal,
            steps=steps, **options,
        )  # fmt: skip

    with anyio.move_on_after(25):  # cut while the instances after the first pause update
        async with rollout().start() as handle:
            await anyio.sleep(12)
            assert handle.status().step == rolling.Pause()
            handle.promote(full=True)
    assert fleet.version_counts() == {"v1": 1, "v2": 3}
    recorder = EventRecorder()
    with anyio.fail_after(1000):  # a resumed run that held at the last Pause() would not end
        result = await rollout(observers=[recorder]).run()
    assert result.status is rolling.RolloutStatus.SUCCEEDED
    assert fleet.version_counts() == {"v2": 4}
    assert all(e.promoted for e in recorder.of_type(rolling.StepFinished))


class ReplaceOnly:
    """A driver over a simulated fleet with only ``replace``: nothing can be launched."""

    def __init__(self, fleet: SimulatedFleet) -> None:
        self.fleet = fleet

    async def list_instances(self) -> Any:
        return await self.fleet.list_instances()

    async def replace(self, instance: Any, version: str) -> Any:
        return await self.fleet.replace(instance, version)


@pytest.mark.parametrize("cut", ["old_detach", "new_detach"])
async def test_a_leftover_surge_instance_in_traffic_is_detached_before_it_is_terminated(
    cut: str,
) -> None:
    """A launched instance that was attached but never swapped in may be in traffic.

    ``old_detach``: the controller died as it took the old instance out, the new one
    attached. ``new_detach``: a cancelled run's detach of the new one was cut off.
    """
    fleet = SimulatedFleet(ids=["a", "b"])
    new = await fleet.launch("v2")
    await fleet.attach(new)
    fx: dict[str, Any] = {"t": "fx", "k": "a", "v": "v2"}
    records: list[dict[str, Any]] = [
        {**fx, "op": "launch", "s": "start", "i": None},
        {**fx, "op": "launch", "s": "done", "i": None, "n": [new.id, "v2"]},
        {**fx, "op": "attach", "s": "start", "i": new.id},
        {**fx, "op": "attach", "s": "done", "i": new.id},
        {**fx, "op": "detach", "s": "start", "i": "a" if cut == "old_detach" else new.id},
    ]
    journal = await journal_of("ab", records)
    terminated_in_traffic: list[str] = []

    def watch(change: FleetChange) -> None:
        begins = change.op == "terminate" and change.phase == "begin"
        if begins and fleet.is_attached(change.instance_id):
            terminated_in_traffic.append(change.instance_id)

    fleet.add_listener(watch)
    strategy = RollingUpdate(max_surge=1, max_unavailable=0)
    result = await rollout_for(fleet, journal, strategy=strategy).run()
    assert result.status is RolloutStatus.SUCCEEDED, result.reason
    assert terminated_in_traffic == []
    ops = [(c.op, c.instance_id) for c in fleet.calls]
    assert ops.index(("detach", new.id)) < ops.index(("terminate", new.id))
    assert fleet.version_counts() == {"v2": 2}
    assert set(fleet.attached_ids) == {i.id for i in fleet.instances}


def test_recovery_tells_which_leftover_launch_may_be_in_traffic() -> None:
    begin = {"t": "begin", "target": "v2", "fleet": [["a", "v1"], ["b", "v1"], ["c", "v1"]]}
    records: list[dict[str, Any]] = [begin]
    for key, new, last in [("a", "n1", "attach"), ("b", "n2", "detach"), ("c", "n3", "")]:
        fx: dict[str, Any] = {"t": "fx", "k": key, "v": "v2"}
        records += [
            {**fx, "op": "launch", "s": "start", "i": None},
            {**fx, "op": "launch", "s": "done", "i": None, "n": [new, "v2"]},
        ]
        if last:
            records += [
                {**fx, "op": "attach", "s": "start", "i": new},
                {**fx, "op": "attach", "s": "done", "i": new},
                {**fx, "op": "detach", "s": "start", "i": new},
            ]
        if last == "detach":
            records.append({**fx, "op": "detach", "s": "done", "i": new})
    recovered = recover(records, target="v2")
    assert recovered is not None

    class Inst:
        def __init__(self, id: str, version: str) -> None:  # noqa: A002 - the protocol's name
            self.id, self.version = id, version

    fleet = [Inst(i, "v1") for i in "abc"] + [Inst(i, "v2") for i in ("n1", "n2", "n3")]
    matched = reconcile(recovered, fleet)
    assert sorted(i.id for i in matched.doomed) == ["n1", "n2", "n3"]
    # n1's detach never finished: it may be in traffic. n2 was detached; n3 never attached.
    assert matched.in_traffic == {"n1"}


STEPS: list[rolling.Step] = [
    rolling.Advance(1), rolling.Pause(), rolling.Advance(3), rolling.Pause()
]  # fmt: skip


async def _pauses(handle: rolling.RolloutHandle, fleet: SimulatedFleet) -> list[int]:
    """Promote each pause of ``handle``'s run; how many instances ran v2 at each."""
    seen: list[int] = []
    live = {RolloutStatus.PENDING, RolloutStatus.RUNNING, RolloutStatus.PAUSED}
    while handle.status().status in live:
        if handle.status().status is RolloutStatus.PAUSED:
            seen.append(fleet.version_counts().get("v2", 0))
            handle.promote()
        await anyio.sleep(1)
    return seen


@pytest.mark.parametrize("promoted", [False, True], ids=["at_pause", "past_pause"])
async def test_a_resumed_rollout_counts_what_is_on_the_target_for_its_advances(
    promoted: bool,
) -> None:
    """Instances updated before the cut count toward each Advance of the resumed run.

    Cut at the first Pause (1 on v2), the resumed run holds there again, then with 3 on v2.
    Cut after that Pause was promoted, it holds only at the second one: a hold the dead
    controller got past is not held again, as with a canary's steps.
    """
    fleet = SimulatedFleet(4, latency=Latency(replace=10))
    journal = MemoryJournal()

    def rollout() -> rolling.Rollout[Any]:
        strategy = RollingUpdate(max_unavailable=1)
        return rollout_for(fleet, journal, strategy=strategy, steps=STEPS)

    scope = anyio.CancelScope()

    def cut(change: FleetChange) -> None:
        # As the second instance's replace ends, before a third one starts.
        if change.op == "replace" and change.phase == "end":
            scope.cancel()

    with scope:
        async with rollout().start() as handle:
            while handle.status().status is not RolloutStatus.PAUSED:  # noqa: ASYNC110 - a status has no event to wait on
                await anyio.sleep(1)
            assert fleet.version_counts() == {"v1": 3, "v2": 1}
            if promoted:
                fleet.add_listener(cut)
                handle.promote()
                await anyio.sleep_forever()
            scope.cancel()
    if promoted:
        fleet.remove_listener(cut)
    assert fleet.version_counts() == ({"v1": 2, "v2": 2} if promoted else {"v1": 3, "v2": 1})
    with anyio.fail_after(1000):
        async with rollout().start() as handle:
            pauses = await _pauses(handle, fleet)
            result = await handle.wait()
    assert result.status is RolloutStatus.SUCCEEDED, result.reason
    assert pauses == ([3] if promoted else [1, 3])
    assert fleet.version_counts() == {"v2": 4}


@pytest.mark.parametrize("rolling_back", [False, True], ids=["forward", "rollback"])
async def test_a_resumed_in_place_rollout_reports_an_instance_that_is_gone(
    rolling_back: bool,
) -> None:
    """A replace-only driver cannot launch what stood in a vanished instance's place.

    The resume goes on with the rest; the vanished instance is FAILED, saying why.
    """
    fleet = SimulatedFleet(ids=["a", "b", "c", "d"])
    a, b, *_ = await fleet.list_instances()
    await fleet.replace(a, "v2")
    await fleet.replace(b, "v2")
    gone = b if rolling_back else (await fleet.list_instances())[3]
    await fleet.terminate(gone)
    records: list[dict[str, Any]] = [
        {"t": "unit", "k": "a", "o": "updated"},
        {"t": "unit", "k": "b", "o": "updated"},
    ]
    if rolling_back:
        records.append({"t": "rollback", "reason": "aborted"})
    journal = await journal_of("abcd", records)
    rollout = Rollout(
        ReplaceOnly(fleet),
        "v2",
        router=fleet,
        readiness=rolling.Readiness(check=fleet, period=1, deadline=30),
        journal=journal,
        strategy=RollingUpdate(max_unavailable=1),
    )
    result = await rollout.run()
    lost = result.by_id(gone.id)
    assert lost.outcome is InstanceOutcome.FAILED
    assert "gone" in lost.reason
    assert "launch" in lost.reason
    assert lost.current_id is None
    others = [i.id for i in fleet.instances]
    assert len(others) == 3
    if rolling_back:
        assert result.status is RolloutStatus.ABORTED
        assert fleet.version_counts() == {"v1": 3}
    else:
        assert result.status is RolloutStatus.DEGRADED
        assert fleet.version_counts() == {"v2": 3}
    assert set(fleet.attached_ids) == set(others)
    assert not any(c.op == "launch" for c in fleet.calls)


async def test_an_advance_already_met_holds_before_the_first_batch() -> None:
    """Instances on the target before the run count: no batch has to cross the mark."""
    fleet = SimulatedFleet(4, latency=Latency(replace=10))
    for instance in (await fleet.list_instances())[:2]:
        await fleet.replace(instance, "v2")
    rollout = rollout_for(
        fleet,
        MemoryJournal(),
        strategy=rolling.Batches(1),
        steps=[rolling.Advance(2), rolling.Pause(), rolling.Advance(3), rolling.Pause()],
    )
    with anyio.fail_after(1000):
        async with rollout.start() as handle:
            pauses = await _pauses(handle, fleet)
            result = await handle.wait()
    assert result.status is RolloutStatus.SUCCEEDED, result.reason
    assert pauses == [2, 3]

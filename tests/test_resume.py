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
from rolling._recovery import reconcile, recover
from rolling.testing import (
    EventRecorder,
    Latency,
    MemoryJournal,
    SimulatedFleet,
)

pytestmark = pytest.mark.anyio


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
    journal = MemoryJournal()
    begin: dict[str, Any] = {"t": "begin", "format": 1, "target": "v2"}
    begin["fleet"] = [["a", "v1"], ["b", "v1"], ["c", "v1"], ["d", "v1"]]
    records: list[dict[str, Any]] = [
        begin,
        {"t": "unit", "k": "a", "o": "updated"},
        {"t": "fx", "k": "b", "op": "detach", "s": "done", "i": "b", "v": "v2"},
        {"t": "unit", "k": "c", "o": "failed"},
        {"t": "rollback", "reason": "1 instance failed"},
    ]
    for record in records:
        await journal.append(record, sync=True)
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

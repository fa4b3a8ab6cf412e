"""Journal, lock and resume: a rollout that dies can be picked up where it stopped."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import anyio
import pytest

from helpers import MUTATING, rollout_for
from rolling import (
    FileJournal,
    FileLock,
    InstanceOutcome,
    JournalError,
    LockedError,
    RolloutStatus,
)
from rolling.testing import Latency, SimulatedFleet

pytestmark = [pytest.mark.anyio, pytest.mark.real_time]


async def test_file_journal_round_trip_mode_and_group_commit(tmp_path: Path) -> None:
    journal = FileJournal(tmp_path / "j.jsonl")

    async def write(n: int) -> None:
        await journal.append({"t": "x", "n": n}, sync=True)

    async with anyio.create_task_group() as tg:
        for n in range(50):
            tg.start_soon(write, n)
    await journal.close()
    records = await FileJournal(tmp_path / "j.jsonl").load()
    assert sorted(r["n"] for r in records) == list(range(50))
    assert stat.S_IMODE((tmp_path / "j.jsonl").stat().st_mode) == 0o600
    # Fifty durable appends, far fewer fsyncs: they were grouped.
    assert journal.syncs < 50


async def test_a_torn_last_line_is_ignored_and_a_corrupt_one_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    path.write_text('{"t": "begin", "target": "v2", "fleet": []}\n{"t": "fx", "k"')
    assert [r["t"] for r in await FileJournal(path).load()] == ["begin"]
    path.write_text('{"t": "begin"}\nnot json\n{"t": "end"}\n')
    with pytest.raises(JournalError, match="line 2 is not JSON"):
        await FileJournal(path).load()
    path.write_text('[1, 2]\n{"t": "end"}\n')
    with pytest.raises(JournalError, match="line 1 is not a journal record"):
        await FileJournal(path).load()


async def test_the_next_append_after_a_torn_last_line_starts_on_a_line_of_its_own(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.jsonl"
    # A torn record (the process died mid-write) is cut off before the next write.
    path.write_text('{"t": "begin"}\n{"t": "fx", "k"')
    journal = FileJournal(path)
    assert [r["t"] for r in await journal.load()] == ["begin"]
    await journal.append({"t": "end"}, sync=True)
    await journal.close()
    assert path.read_text() == '{"t": "begin"}\n{"t":"end"}\n'
    # A whole record short of only its newline is kept (load reads it), and ended.
    path.write_text('{"t": "begin"}\n{"t": "fx"}')
    journal = FileJournal(path)
    assert [r["t"] for r in await journal.load()] == ["begin", "fx"]
    await journal.append({"t": "end"}, sync=True)
    await journal.close()
    assert [r["t"] for r in await FileJournal(path).load()] == ["begin", "fx", "end"]
    # A torn tail longer than one read block, and a file that is nothing but a torn line.
    path.write_text('{"t": "begin"}\n{"t": "fx", "k": "' + "x" * 100_000)
    journal = FileJournal(path)
    await journal.append({"t": "end"}, sync=True)
    await journal.close()
    assert path.read_text() == '{"t": "begin"}\n{"t":"end"}\n'
    path.write_text('{"t": "be')
    journal = FileJournal(path)
    await journal.append({"t": "begin"}, sync=True)
    await journal.close()
    assert path.read_text() == '{"t":"begin"}\n'


async def test_a_rollout_resumed_past_a_torn_line_can_be_resumed_again(tmp_path: Path) -> None:
    # The resume appended right after the fragment: the next run found a damaged line.
    path = tmp_path / "j"
    fleet = SimulatedFleet(4, latency=Latency(replace=0.2))
    for cut in (0.3, 0.3):
        with anyio.move_on_after(cut):
            await rollout_for(fleet, FileJournal(path)).run()
        with path.open("a") as file:
            file.write('{"t":"fx","k":"i-002","op":"det')  # died mid-write
    result = await rollout_for(fleet, FileJournal(path)).run()
    assert result.status is RolloutStatus.SUCCEEDED
    assert {i.version for i in await fleet.list_instances()} == {"v2"}
    again = await rollout_for(fleet, FileJournal(path)).run()
    assert again.counts == {InstanceOutcome.SKIPPED: 4}


async def test_a_second_controller_is_refused_and_told_who_holds_the_lock(tmp_path: Path) -> None:
    first = FileLock(tmp_path / "fleet.lock")
    await first.acquire()
    with pytest.raises(LockedError, match=f'"pid": {os.getpid()}') as caught:
        await FileLock(tmp_path / "fleet.lock").acquire()
    assert "locked by another rollout" in str(caught.value)
    await first.release()
    again = FileLock(tmp_path / "fleet.lock")
    await again.acquire()
    await again.release()


async def test_a_rollout_holds_the_lock_next_to_its_journal(tmp_path: Path) -> None:
    fleet = SimulatedFleet(3, latency=Latency(replace=0.3))
    rollout = rollout_for(fleet, FileJournal(tmp_path / "j.jsonl"))
    async with rollout.start() as handle:
        await anyio.sleep(0.1)
        other = rollout_for(SimulatedFleet(3), FileJournal(tmp_path / "j.jsonl"))
        with pytest.raises(LockedError):
            await other.run()
    assert handle.result.status is RolloutStatus.SUCCEEDED


async def test_a_finished_journal_starts_a_new_rollout(tmp_path: Path) -> None:
    fleet = SimulatedFleet(3)
    assert (
        await rollout_for(fleet, FileJournal(tmp_path / "j")).run()
    ).status is RolloutStatus.SUCCEEDED
    again = await rollout_for(fleet, FileJournal(tmp_path / "j")).run()
    assert again.counts == {InstanceOutcome.SKIPPED: 3}
    records = await FileJournal(tmp_path / "j").load()
    assert [r["t"] for r in records if r["t"] in {"begin", "end"}] == ["begin", "end"] * 2


async def test_another_target_or_fleet_or_a_broken_journal_changes_nothing(tmp_path: Path) -> None:
    fleet = SimulatedFleet(4, latency=Latency(replace=0.2))
    with anyio.move_on_after(0.3):
        await rollout_for(fleet, FileJournal(tmp_path / "j")).run()
    calls = len(fleet.calls)
    with pytest.raises(JournalError, match="unfinished rollout to 'v2', not 'v3'"):
        await rollout_for(fleet, FileJournal(tmp_path / "j"), target="v3").run()
    other = SimulatedFleet(ids=["x-1", "x-2"])
    with pytest.raises(JournalError, match="another fleet"):
        await rollout_for(other, FileJournal(tmp_path / "j")).run()
    (tmp_path / "k").write_text('{"t": "begin", "target": "v2", "fleet": []}\ngarbage\n{}\n')
    with pytest.raises(JournalError, match="line 2"):
        await rollout_for(fleet, FileJournal(tmp_path / "k")).run()
    assert not [c for c in fleet.calls[calls:] if c.op in MUTATING]
    assert not [c for c in other.calls if c.op in MUTATING]

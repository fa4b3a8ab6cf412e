"""EtcdJournal and EtcdLock against a real 3-member etcd cluster on loopback.

Asyncio and real time (aetcd is built on grpc.aio); on trio the journal refuses
to start with a ConfigError, which ``test_trio_is_refused_before_the_fleet_is_touched``
checks. Every test uses a fleet name of its own, so they share one cluster,
except those that kill members, which start their own.
"""

from __future__ import annotations

import importlib
import itertools
import json
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from etcd_cluster import Cluster, running_cluster
from rolling import (
    ConfigError,
    EtcdJournal,
    EtcdLock,
    Event,
    LockedError,
    LockLostError,
    Readiness,
    RollingUpdate,
    Rollout,
    RolloutFinished,
    RolloutStatus,
)
from rolling.testing import FleetChange, InvariantMonitor, Latency, SimulatedFleet

pytestmark = pytest.mark.anyio

_names = itertools.count()


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    """Real time, asyncio: aetcd runs on grpc.aio."""
    return ("asyncio", {})


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("etcd")) as running:
        yield running


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A cluster for one test, which may kill its members."""
    with running_cluster(tmp_path / "etcd") as running:
        yield running


@pytest.fixture
def fleet_name() -> str:
    return f"f{next(_names)}-{time.monotonic_ns()}"


@pytest.fixture
async def raw(cluster: Cluster) -> AsyncIterator[Any]:
    """A plain aetcd client, to look at and meddle with the keys."""
    aetcd: Any = importlib.import_module("aetcd")  # untyped: used as Any
    client: Any = aetcd.Client(host="127.0.0.1", port=int(cluster.endpoints[0].split(":")[1]))
    try:
        yield client
    finally:
        await client.close()


def record(kind: str, **fields: Any) -> dict[str, Any]:
    return {"t": kind, **fields}


# ------------------------------------------------------------------ journal


async def test_journal_round_trip_and_compact_chunks(cluster: Cluster, fleet_name: str) -> None:
    journal = EtcdJournal(cluster.endpoints, fleet=fleet_name)
    fleet = [[f"i{k}", "v1"] for k in range(2000)]
    written = [record("begin", format=1, target="v2", fleet=fleet)]
    written += [
        record("fx", k=f"i{k}", op="detach", i=f"i{k}", v="v1", s="start") for k in range(3)
    ]
    await journal.lock.acquire()
    try:
        assert await journal.load() == []
        for index, item in enumerate(written):
            await journal.append(item, sync=index in {0, 3})  # one write, then a group of three
        await journal.close()
    finally:
        await journal.lock.release()
    assert journal.writes == 2
    # The begin record (about 30 kB of JSON) is stored compressed, a few kB.
    assert journal.bytes < 12_000
    reader = EtcdJournal(cluster.endpoints, fleet=fleet_name)
    try:
        assert await reader.load() == written
    finally:
        await reader.lock.release()


async def test_keys_are_namespaced_and_old_rollouts_pruned(
    cluster: Cluster, fleet_name: str, raw: Any
) -> None:
    journal = EtcdJournal(cluster.endpoints, fleet=fleet_name, prefix="/team", keep=1)
    await journal.lock.acquire()
    try:
        for target in ("v2", "v3", "v4"):
            await journal.append(record("begin", format=1, target=target, fleet=[]), sync=True)
            await journal.append(record("end", status="succeeded"), sync=True)
    finally:
        await journal.lock.release()
    keys = sorted(kv.key.decode() for kv in await raw.get_prefix(b"/team/"))
    root = f"/team/{fleet_name}/journal/"
    # Rollout 3 began and deleted rollout 1; rollout 2, the last finished one, stays.
    assert keys == [root + f"0000000{r}/0000000{c}" for r in (2, 3) for c in (0, 1)]
    plain = await raw.get(f"{root}00000003/00000001".encode())
    assert json.loads(plain.value) == {"t": "end", "status": "succeeded"}
    reader = EtcdJournal(cluster.endpoints, fleet=fleet_name, prefix="/team")
    try:
        targets = [r["target"] for r in await reader.load() if r["t"] == "begin"]
    finally:
        await reader.lock.release()
    assert targets == ["v3", "v4"]


async def test_a_damaged_chunk_is_a_journal_error(
    cluster: Cluster, fleet_name: str, raw: Any
) -> None:
    await raw.put(f"/rolling/{fleet_name}/journal/00000001/00000000".encode(), zlib.compress(b"["))
    journal = EtcdJournal(cluster.endpoints, fleet=fleet_name)
    try:
        with pytest.raises(Exception, match="is not a journal chunk") as caught:
            await journal.load()
    finally:
        await journal.lock.release()
    assert type(caught.value).__name__ == "JournalError"


# --------------------------------------------------------------------- lock


async def test_a_second_controller_is_locked_out_then_stands_by(
    cluster: Cluster, fleet_name: str
) -> None:
    first = EtcdLock(cluster.endpoints, fleet=fleet_name, ttl=2)
    await first.acquire()
    try:
        with pytest.raises(LockedError, match='"pid"'):
            await EtcdLock(cluster.endpoints, fleet=fleet_name).acquire()
        standby = EtcdLock(cluster.endpoints, fleet=fleet_name, ttl=2, wait=10)
        held = first.revision
        async with anyio.create_task_group() as tg:
            tg.start_soon(first.hold)
            tg.start_soon(standby.acquire)
            await anyio.sleep(3)  # past both ttls: both keep their leases alive
            assert standby.revision == 0
            assert first.revision == held
            tg.cancel_scope.cancel()
        await first.release()
        with anyio.fail_after(1):
            await standby.acquire()  # within a poll of the release
        assert standby.revision > held
    finally:
        await first.release()
    await standby.release()


async def test_a_standby_gives_up_after_wait(cluster: Cluster, fleet_name: str) -> None:
    first = EtcdLock(cluster.endpoints, fleet=fleet_name)
    await first.acquire()
    try:
        started = time.monotonic()
        with pytest.raises(LockedError):
            await EtcdLock(cluster.endpoints, fleet=fleet_name, wait=0.5).acquire()
        assert 0.5 <= time.monotonic() - started < 2
    finally:
        await first.release()


async def test_fencing_refuses_a_writer_whose_lease_was_lost(
    cluster: Cluster, fleet_name: str, raw: Any
) -> None:
    """The old holder's lease goes, a new holder takes the lock: the old one cannot write."""
    old = EtcdJournal(cluster.endpoints, fleet=fleet_name, ttl=10)
    await old.lock.acquire()
    await old.append(record("begin", format=1, target="v2", fleet=[["a", "v1"]]), sync=True)
    # The lease is revoked behind its back (as if it expired while the holder was away):
    # locally the lock still looks valid, so only the transaction's condition can stop it.
    lease = (await raw.get(old.lock.key)).lease
    await raw.revoke_lease(lease)
    new = EtcdJournal(cluster.endpoints, fleet=fleet_name)
    await new.lock.acquire()
    try:
        with pytest.raises(LockLostError, match="lost the lock"):
            await old.append(record("fx", k="a", op="detach", i="a", v="v1", s="start"), sync=True)
        assert old.lock.lost
        with pytest.raises(LockLostError):
            await old.append(record("unit", k="a", o="updated"), sync=True)
        await old.close()  # drops what it cannot write, raises nothing
        await new.append(record("rollback", reason="x"), sync=True)
        assert [r["t"] for r in await new.load()] == ["begin", "rollback"]
    finally:
        await old.lock.release()
        await new.lock.release()


async def test_a_paused_holder_asks_etcd_before_writing(cluster: Cluster, fleet_name: str) -> None:
    """Past its lease without renewing (as after SIGSTOP): the write asks etcd, which says no."""
    old = EtcdJournal(cluster.endpoints, fleet=fleet_name, ttl=2)
    await old.lock.acquire()
    new = EtcdLock(cluster.endpoints, fleet=fleet_name, ttl=2, wait=10)
    try:
        await new.acquire()  # the old lease runs out (no hold() renews it) and the key goes
        with pytest.raises(LockLostError, match="lease ran out"):
            await old.append(record("begin", format=1, target="v2", fleet=[]), sync=True)
    finally:
        await old.lock.release()
        await new.release()


async def test_hold_renews_and_raises_once_the_lease_is_gone(
    cluster: Cluster, fleet_name: str, raw: Any
) -> None:
    lock = EtcdLock(cluster.endpoints, fleet=fleet_name, ttl=2)
    await lock.acquire()
    try:
        with anyio.move_on_after(3):  # longer than the ttl: renewals keep it
            await lock.hold()
        await lock.confirm()
        await raw.revoke_lease((await raw.get(lock.key)).lease)
        with anyio.fail_after(3), pytest.raises(LockLostError, match="lease ran out"):
            await lock.hold()
    finally:
        await lock.release()


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"EtcdLock\.ttl"):
        EtcdLock("127.0.0.1:2379", fleet="web", ttl=1)
    with pytest.raises(ConfigError, match=r"EtcdLock\.fleet"):
        EtcdLock("127.0.0.1:2379", fleet="a/b")
    with pytest.raises(ConfigError, match="not an IPv4 address"):
        EtcdLock(["etcd-a:2379", "etcd-b:2379"], fleet="web")
    with pytest.raises(ConfigError, match="not host:port"):
        EtcdLock("etcd", fleet="web")
    with pytest.raises(ConfigError, match=r"EtcdJournal\.keep"):
        EtcdJournal("127.0.0.1:2379", fleet="web", keep=-1)


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_trio_is_refused_before_the_fleet_is_touched() -> None:
    fleet = SimulatedFleet(3, version="v1")
    rollout = Rollout(fleet, "v2", router=fleet, journal=EtcdJournal("127.0.0.1:1", fleet="web"))
    with pytest.raises(ConfigError, match="runs on asyncio only"):
        await rollout.run()
    assert fleet.calls == []


# ----------------------------------------------------------------- rollouts


def rollout_on(
    fleet: SimulatedFleet, journal: EtcdJournal, events: list[Event] | None = None
) -> Rollout[Any]:
    return Rollout(
        fleet,
        "v2",
        strategy=RollingUpdate(max_unavailable=2),
        router=fleet,
        readiness=Readiness(check=fleet, period=0.01),
        journal=journal,
        observers=[] if events is None else [events.append],
    )


async def test_a_rollout_on_etcd_and_its_rerun(cluster: Cluster, fleet_name: str) -> None:
    fleet = SimulatedFleet(6, version="v1", latency=Latency(replace=0.02))
    monitor = InvariantMonitor(fleet, max_unavailable=2, max_surge=0)
    journal = EtcdJournal(cluster.endpoints, fleet=fleet_name, ttl=2)
    result = await rollout_on(fleet, journal).run()
    assert result.status is RolloutStatus.SUCCEEDED
    assert fleet.version_counts() == {"v2": 6}
    monitor.check_result(result)
    monitor.assert_ok()
    assert journal.lock.revision == 0  # released
    again = EtcdJournal(cluster.endpoints, fleet=fleet_name, ttl=2)
    result = await rollout_on(fleet, again).run()
    assert result.status is RolloutStatus.SUCCEEDED
    assert not [c for c in fleet.calls[-6:] if c.op == "replace"]


async def test_losing_the_lock_halts_at_once_and_nothing_changes_after(
    cluster: Cluster, fleet_name: str, raw: Any
) -> None:
    fleet = SimulatedFleet(12, version="v1", latency=Latency(replace=0.2))
    begun: list[tuple[float, str]] = []

    def listen(change: FleetChange) -> None:
        if change.phase == "begin":
            begun.append((time.monotonic(), change.op))

    fleet.add_listener(listen)
    journal = EtcdJournal(cluster.endpoints, fleet=fleet_name, ttl=2)
    events: list[Event] = []
    rollout = rollout_on(fleet, journal, events)
    revoked = 0.0

    async def revoke_soon() -> None:
        nonlocal revoked
        await anyio.sleep(0.5)
        lease = (await raw.get(journal.lock.key)).lease
        await raw.revoke_lease(lease)
        revoked = time.monotonic()

    async with anyio.create_task_group() as tg:
        tg.start_soon(revoke_soon)
        with pytest.raises(LockLostError, match="lost the lock"):
            await rollout.run()
    finished = [e.result for e in events if isinstance(e, RolloutFinished)]
    assert finished[-1].status is RolloutStatus.HALTED
    assert finished[-1].reason.startswith("error: LockLostError: lost the lock")
    # Calls in flight finish; none starts after the loss (its write-ahead record is refused).
    # (A write that etcd committed just before the revoke may let its call start a moment
    # after our clock read `revoked`: 50 ms of slack for the event loop.)
    after = [op for at, op in begun if at > revoked + 0.05]
    assert after == [], [(round(at - revoked, 3), op) for at, op in begun][-4:]
    assert 0 < fleet.version_counts().get("v2", 0) < 12
    # The journal holds every change that started: a new controller resumes and finishes.
    resumed = await rollout_on(fleet, EtcdJournal(cluster.endpoints, fleet=fleet_name)).run()
    assert resumed.status is RolloutStatus.SUCCEEDED
    assert fleet.version_counts() == {"v2": 12}
    assert sorted(fleet.attached_ids) == sorted(i.id for i in fleet.instances)


# ----------------------------------------------------------- member losses


@pytest.mark.parametrize("which", ["leader", "follower"])
async def test_a_rollout_goes_on_when_a_member_dies(own_cluster: Cluster, which: str) -> None:
    fleet = SimulatedFleet(10, version="v1", latency=Latency(replace=0.1))
    journal = EtcdJournal(own_cluster.endpoints, fleet="web", ttl=2)

    async def kill_one() -> None:
        await anyio.sleep(0.3)
        leader = await anyio.to_thread.run_sync(own_cluster.leader)
        victim = (
            leader if which == "leader" else next(m for m in own_cluster.members if m is not leader)
        )
        own_cluster.kill(victim)

    async with anyio.create_task_group() as tg:
        tg.start_soon(kill_one)
        result = await rollout_on(fleet, journal).run()
        assert result.status is RolloutStatus.SUCCEEDED
    assert fleet.version_counts() == {"v2": 10}
    reader = EtcdJournal(own_cluster.endpoints, fleet="web")
    try:
        records = await reader.load()
    finally:
        await reader.lock.release()
    assert records[-1] == {"t": "end", "status": "succeeded"}
    assert sum(1 for r in records if r["t"] == "unit") == 10


async def test_quorum_lost_stops_changes_and_the_rollout_resumes_with_it(
    own_cluster: Cluster,
) -> None:
    fleet = SimulatedFleet(10, version="v1", latency=Latency(replace=0.1))
    begun: list[float] = []
    fleet.add_listener(lambda c: begun.append(time.monotonic()) if c.phase == "begin" else None)
    journal = EtcdJournal(own_cluster.endpoints, fleet="web", ttl=2)
    outage: list[float] = []

    async def lose_quorum() -> None:
        await anyio.sleep(0.4)
        down = own_cluster.members[:2]
        for member in down:
            own_cluster.kill(member)
        outage.append(time.monotonic())
        await anyio.sleep(3)  # longer than the ttl: the lock is in doubt, not lost
        outage.append(time.monotonic())
        for member in down:
            own_cluster.restart(member)

    async with anyio.create_task_group() as tg:
        tg.start_soon(lose_quorum)
        result = await rollout_on(fleet, journal).run()
        assert result.status is RolloutStatus.SUCCEEDED
    assert fleet.version_counts() == {"v2": 10}
    lost, back = outage
    # Changes already sent land; then none starts until a quorum is back.
    during = [at for at in begun if lost + 0.3 < at < back]
    assert during == []
    assert any(at > back for at in begun)
    reader = EtcdJournal(own_cluster.endpoints, fleet="web")
    try:
        records = await reader.load()
    finally:
        await reader.lock.release()
    assert sum(1 for r in records if r["t"] == "unit") == 10
    assert records[-1]["t"] == "end"


# ------------------------------------------------------------ the example


async def test_the_standby_example_takes_over_a_controller_that_stops(cluster: Cluster) -> None:
    from test_examples import load_example  # noqa: PLC0415 - the one helper that loads examples

    example = load_example("etcd_standby")
    fleet = SimulatedFleet(6, version="v1", latency=Latency(replace=0.2))
    locked = anyio.Event()
    replaced_at_lock: list[int] = []

    async def make_fleet() -> SimulatedFleet:
        locked.set()
        replaced_at_lock.append(sum(1 for c in fleet.calls if c.op == "replace"))
        return fleet

    async def first() -> None:
        with anyio.move_on_after(0.8):  # it goes away mid-rollout (cancelled: it cleans up)
            await example.controller(cluster.endpoints, make_fleet, "v2", ttl=2)

    results: list[Any] = []

    async def second() -> None:
        results.append(await example.controller(cluster.endpoints, make_fleet, "v2", ttl=2))

    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        await locked.wait()
        tg.start_soon(second)
    assert [r.status for r in results] == [RolloutStatus.SUCCEEDED]
    # The second took over mid-rollout: some instances were done, some were not.
    assert replaced_at_lock[0] == 0
    assert 0 < replaced_at_lock[1] < 6
    assert fleet.version_counts() == {"v2": 6}
    assert sorted(fleet.attached_ids) == sorted(i.id for i in fleet.instances)

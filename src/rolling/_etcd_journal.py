"""A journal on etcd, fenced by its lock: a controller that lost the lock cannot write.

Rules:

1. Keys: ``<prefix>/<fleet>/journal/<rollout>/<chunk>``, both numbers zero
   padded so that key order is record order. A ``begin`` record starts the
   next rollout number; every write is one new *chunk* key holding the
   records queued since the last one, as JSON lines (zlib-compressed when
   longer than :data:`COMPRESS_OVER` bytes; a plain chunk starts with ``{``).
   A chunk is written once and never changed.
2. Fencing: every write is a transaction whose one condition is that the lock
   key still has the create revision this controller's lock got
   (:attr:`EtcdLock.revision`). When it fails the lock is lost: the write
   raises :class:`~rolling.LockLostError` and so do all later ones. Before
   writing, the lock must also be valid locally (:meth:`EtcdLock.confirm`),
   so a controller that was paused past its lease asks etcd first.
3. Durability and group commit as in :class:`~rolling.FileJournal`: a
   ``sync`` append returns once its chunk is committed (a quorum has it);
   concurrent syncs share one transaction.
4. etcd unreachable (a member or the leader lost, no quorum): the write is
   retried, with the same key and value (so a retry of a write that did land
   changes nothing), until the lock is confirmed or lost (rule 2 of
   :mod:`rolling._etcd_lock`). Meanwhile the unit waiting on it makes no
   change: write-ahead, that is what stops new disruptions.
5. Pruning: the transaction that writes a ``begin`` record also deletes the
   keys of every rollout before the last ``keep`` ones (which are finished:
   a new rollout begins only once the last one ended).
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Sequence
from typing import cast

import anyio

from ._etcd_lock import POLL, EtcdLock, unreachable
from ._journal import JournalError
from ._lock import LockLostError
from .typing import JournalRecord
from .validate import check_int

__all__ = ["COMPRESS_OVER", "EtcdJournal"]

COMPRESS_OVER = 1024
"""Chunks longer than this (bytes of JSON lines) are stored zlib-compressed."""
_CHUNK = 256 * 1024
"""Most bytes of JSON lines in one chunk; etcd refuses requests over 1.5 MiB by default."""
_BATCH = 512
_DIGITS = 8


class EtcdJournal:
    """A journal on an etcd cluster, fenced by an :class:`~rolling.EtcdLock`; see the module rules.

    ``Rollout(..., journal=EtcdJournal(endpoints, fleet="web"))`` is all a
    rollout needs: the rollout takes :attr:`lock` as its lock. Writes need
    that lock held (they are fenced by it); reading needs only etcd. Run the same
    code in a second controller with ``wait`` set and it stands by, then
    resumes the rollout from the journal when the first one dies.

    Args:
        endpoints: As for :class:`~rolling.EtcdLock`.
        fleet: Names the fleet; every key of it is under ``<prefix>/<fleet>/``.
        prefix: Where rolling's keys live in etcd.
        ttl: The lock's lease, in whole seconds (at least 2).
        wait: Seconds to stand by for the lock (see :class:`~rolling.EtcdLock`).
        keep: Finished rollouts kept when a new one begins (older ones are deleted).
        lock: Use this lock (its endpoints, fleet and prefix) instead of making one.

    .. versionadded:: 0.2.0
    """

    def __init__(
        self,
        endpoints: str | Sequence[str] = "",
        *,
        fleet: str = "",
        prefix: str = "/rolling",
        ttl: int = 10,
        wait: float = 0.0,
        keep: int = 1,
        lock: EtcdLock | None = None,
    ) -> None:
        if lock is None:
            lock = EtcdLock(endpoints, fleet=fleet, prefix=prefix, ttl=ttl, wait=wait)
        check_int("EtcdJournal.keep", keep, minimum=0)
        self.lock = lock
        """The lock that fences this journal's writes; the rollout's lock by default."""
        self.keep = keep
        self.root = f"{lock.prefix}/{lock.fleet}/journal/"
        self._rollout = -1  # unknown until the keys are read
        self._chunk = 0
        self._buffer: list[tuple[int, str]] = []
        self._prune: int | None = None
        self._queued = 0
        self._durable = 0
        self._writing = anyio.Lock()
        self.writes = 0
        """Transactions written (for benchmarks and tests)."""
        self.bytes = 0
        """Bytes of chunk values written (for benchmarks and tests)."""

    def _key(self, rollout: int, chunk: int) -> bytes:
        return f"{self.root}{rollout:0{_DIGITS}d}/{chunk:0{_DIGITS}d}".encode()

    async def load(self) -> list[JournalRecord]:
        """Read every record of the rollouts kept, oldest first."""
        chunks = await self._scan()
        records: list[JournalRecord] = []
        for key, value in chunks:
            records += _decode(key, value)
        return records

    async def _scan(self) -> list[tuple[str, bytes]]:
        """Every chunk, in order; sets where the next one goes."""
        give_up = time.monotonic() + self.lock.doubt
        while True:
            try:
                found = await self.lock.call_etcd("get_prefix", self.root.encode())
                break
            except unreachable():
                if time.monotonic() > give_up:
                    raise JournalError(
                        f"etcd did not answer for {self.lock.doubt:g}s: the journal cannot be "
                        "read; check the cluster and run the rollout again"
                    ) from None
                await anyio.sleep(POLL)
        chunks = sorted((kv.key.decode(), bytes(kv.value)) for kv in found)
        self._rollout, self._chunk = 0, 0
        if chunks:
            rollout, chunk = chunks[-1][0].removeprefix(self.root).split("/")
            self._rollout, self._chunk = int(rollout), int(chunk) + 1
        return chunks

    async def append(self, record: JournalRecord, *, sync: bool = False) -> None:
        """Queue ``record``; with ``sync``, wait until a quorum of etcd has it."""
        if self._rollout < 0:
            await self._scan()
        if record.get("t") == "begin":
            if self._buffer:
                await self._flush(self._queued)  # the last rollout's records keep its number
            self._rollout += 1
            self._chunk = 0
            self._prune = self._rollout - self.keep
        self._buffer.append((self._rollout, json.dumps(record, separators=(",", ":"))))
        self._queued += 1
        if sync or len(self._buffer) >= _BATCH:
            await self._flush(self._queued)

    async def _flush(self, upto: int) -> None:
        async with self._writing:
            if self._durable >= upto:
                return  # another task's write already covered this record
            target = self._queued
            with anyio.CancelScope(shield=True):
                # Shielded: the engine waits for a write-ahead record before every change.
                queued, self._buffer = self._buffer, []
                written = 0
                try:
                    while written < len(queued):
                        rollout = queued[written][0]
                        end, size = written, 0
                        while end < len(queued) and queued[end][0] == rollout and size < _CHUNK:
                            size += len(queued[end][1]) + 1
                            end += 1
                        await self._write(rollout, [line for _, line in queued[written:end]])
                        written = end
                except BaseException:
                    # Not written: back to the front, so a task whose record was among them
                    # and that waits for this lock tries (and fails) itself, never assumes.
                    self._buffer[:0] = queued[written:]
                    raise
            self._durable = target

    async def _write(self, rollout: int, lines: list[str]) -> None:
        lock = self.lock
        text = ("\n".join(lines) + "\n").encode()
        value = zlib.compress(text) if len(text) > COMPRESS_OVER else text
        key = self._key(rollout, self._chunk)
        prune = self._prune if self._chunk == 0 else None
        while True:
            await lock.confirm()
            client = await lock.client()
            tx = client.transactions
            success = [tx.put(key, value)]
            if prune is not None and prune > 0:
                success.append(tx.delete(self.root.encode(), self._key(prune, 0)))
            try:
                ok, _ = await lock.call_etcd(
                    "transaction",
                    compare=[tx.create(lock.key) == lock.revision],
                    success=success,
                    failure=[],
                )
            except unreachable():
                await anyio.sleep(POLL)
                continue  # same key, same value: a retry of a write that landed changes nothing
            break
        if not ok:
            lock.lose("the lock key changed: another controller holds it now")
            await lock.confirm()  # raises
        self._chunk += 1
        self.writes += 1
        self.bytes += len(value)

    async def close(self) -> None:
        """Write what is queued (dropped if the lock is lost: nothing may write then)."""
        try:
            await self._flush(self._queued)
        except LockLostError:
            self._buffer.clear()


def _decode(key: str, value: bytes) -> list[JournalRecord]:
    try:
        text = (value if value[:1] == b"{" else zlib.decompress(value)).decode()
        records = [json.loads(line) for line in text.splitlines() if line]
    except (zlib.error, UnicodeDecodeError, json.JSONDecodeError):
        raise JournalError(
            f"etcd key {key} is not a journal chunk; the journal is damaged: delete the rollout's "
            "keys and reconcile the fleet by hand"
        ) from None
    if not all(isinstance(r, dict) and "t" in r for r in records):
        raise JournalError(f"etcd key {key} holds something that is not a journal record")
    return [cast("JournalRecord", r) for r in records]

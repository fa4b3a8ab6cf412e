"""Journals: an append-only record of a rollout, so another process can pick up where it died.

Records are small JSON objects, one per line. A record is *durable* once the
journal says so; the engine asks for durability (``sync=True``) before every
effect that changes the fleet (write-ahead) and after every launch (so a new
instance is never unknown), and lets the rest ride along with the next sync.
Concurrent syncs share one ``fsync`` (group commit), which keeps large
fleets fast.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import cast

import anyio

from ._errors import RollingError
from ._validate import path_of
from .typing import JournalRecord

__all__ = ["FileJournal", "JournalError"]

_FORMAT = 1
_BATCH = 512
_TAIL_BLOCK = 64 * 1024


class JournalError(RollingError, ValueError):
    """A journal cannot be read or does not belong to this rollout.

    Raised before anything touches the fleet.
    """


class FileJournal:
    """A journal in a local file: JSON lines, mode 0600, fsync'd in groups.

    A torn last line (the process died mid-write) is ignored on load, and cut off
    (durably) before the first append after it, so the next record starts a line of
    its own; any other line that is not a JSON object is an error naming the line.

    Args:
        path: The journal file (a str or path-like); created if missing.

    Raises:
        ConfigError: ``path`` is not a file path (bytes, a number, an empty string).

    .. versionadded:: 0.1.0
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = path_of("FileJournal.path", path)
        self._buffer: list[str] = []
        self._queued = 0
        self._durable = 0
        self._lock = anyio.Lock()
        self._fd: int | None = None
        self.syncs = 0
        """How many fsyncs ran (for benchmarks and tests)."""

    async def load(self) -> list[JournalRecord]:
        """Read every record; see the class docstring for damaged lines."""
        return await anyio.to_thread.run_sync(self._read)

    def _read(self) -> list[JournalRecord]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        lines = text.split("\n")
        records: list[JournalRecord] = []
        last = len(lines) - 1
        for number, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                if number == last:
                    break  # a torn final write: the effect it announced never started
                raise JournalError(
                    f"{self.path}: line {number + 1} is not JSON ({line[:60]!r}); the journal is "
                    "damaged: move it aside and reconcile the fleet by hand"
                ) from None
            if not isinstance(record, dict) or "t" not in record:
                raise JournalError(
                    f"{self.path}: line {number + 1} is not a journal record ({line[:60]!r})"
                )
            records.append(cast("JournalRecord", record))
        return records

    async def append(self, record: JournalRecord, *, sync: bool = False) -> None:
        """Queue ``record``; with ``sync``, wait until it is on disk."""
        self._buffer.append(json.dumps(record, separators=(",", ":")))
        self._queued += 1
        if sync or len(self._buffer) >= _BATCH:
            await self._flush(self._queued)

    async def _flush(self, upto: int) -> None:
        async with self._lock:
            if self._durable >= upto:
                return  # another task's fsync already covered this record
            lines, self._buffer = self._buffer, []
            target = self._queued
            with anyio.CancelScope(shield=True):
                # Shielded: a record half-written because of a cancellation would be a lie.
                await anyio.to_thread.run_sync(self._write, lines)
            self._durable = target
            self.syncs += 1

    def _write(self, lines: list[str]) -> None:
        start = b""
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            start = _mend_tail(self._fd)
        if lines:
            os.write(self._fd, start + ("\n".join(lines) + "\n").encode())
        elif start:
            os.write(self._fd, start)
        os.fsync(self._fd)

    async def close(self) -> None:
        """Flush and close the file."""
        await self._flush(self._queued)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _mend_tail(fd: int) -> bytes:
    """Make a file that does not end with a newline safe to append lines to.

    A process that died mid-write leaves a last line with no newline. If it is not
    JSON, :meth:`FileJournal.load` ignores it (a torn record), so it is cut off here
    and the cut made durable before anything is appended after it; otherwise the
    next record would join it on one line, which the next load finds damaged. A
    last line that is JSON (a whole record short of only its newline) is kept: the
    answer is the newline to write before the next record.
    """
    end = os.fstat(fd).st_size
    if end == 0 or os.pread(fd, 1, end - 1) == b"\n":
        return b""
    tail = b""
    start = end
    while start > 0:
        size = min(_TAIL_BLOCK, start)
        start -= size
        tail = os.pread(fd, size, start) + tail
        newline = tail.rfind(b"\n")
        if newline >= 0:
            start += newline + 1
            tail = tail[newline + 1 :]
            break
    try:
        json.loads(tail)
    except ValueError:  # not JSON, or not UTF-8 (JSONDecodeError and UnicodeDecodeError)
        os.ftruncate(fd, start)
        os.fsync(fd)
        return b""
    return b"\n"


def begin_record(target: str, fleet: Sequence[tuple[str, str]]) -> JournalRecord:
    """The first record of a rollout."""
    return {"t": "begin", "format": _FORMAT, "target": target, "fleet": [list(i) for i in fleet]}

"""The runner's side of the journal: write-ahead, and nothing more once it failed.

Rules:

1. Every record is appended shielded from cancellation: a record the machine asked for is
   written whole or not at all.
2. The journal's first error halts the run (nothing new starts) and is what ``run()``
   raises; after it, nothing more is appended.
3. Write-ahead: a record that announces an effect (a unit's ``start``, the rollout's
   ``begin``) must be written for the effect to start, so once the journal failed (or its
   lock was lost) writing one raises. A record that reports what already happened (a call
   that returned, an outcome) does not: its unit goes on from what the call did, so the
   result tells the truth about the fleet although the journal does not know it.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio

from ._effects import Record
from ._lock import LockLostError
from .typing import Journal

__all__ = ["JournalWriter"]


class JournalWriter:
    """Appends the machine's records to one journal (rules at the top of the module)."""

    __slots__ = ("_journal", "_on_error", "error")

    def __init__(self, journal: Journal, on_error: Callable[[Exception], None]) -> None:
        self._journal = journal
        self._on_error = on_error
        self.error: Exception | None = None
        """The journal's first error (rule 2), if it failed."""

    async def load(self) -> object:
        """What the journal holds (for a resume)."""
        return await self._journal.load()

    async def write(self, effect: Record) -> None:
        """Append ``effect``'s record, or raise when rule 3 says it must not be skipped."""
        record = effect.record
        announces = record.get("s") == "start" or record.get("t") == "begin"
        failed = self.error
        if failed is None:
            try:
                with anyio.CancelScope(shield=True):
                    await self._journal.append(record, sync=effect.sync)
            except LockLostError as exc:
                if announces:
                    raise
                self._on_error(exc)
                return
            except Exception as exc:  # noqa: BLE001 - kept, raised by run() once units settle
                self.error = failed = exc
                self._on_error(exc)
            else:
                return
        if announces:
            raise failed

    async def close(self) -> None:
        """Close the journal, shielded: the run is over, however it ended."""
        with anyio.CancelScope(shield=True):
            await self._journal.close()

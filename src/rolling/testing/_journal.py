"""An in-memory journal for tests in virtual time, where a real file's worker threads cannot be."""

from __future__ import annotations

import copy

from rolling.typing import JournalRecord

__all__ = ["MemoryJournal"]


class MemoryJournal:
    """A :class:`~rolling.typing.Journal` in a list, shared by the rollouts given the same object.

    ``durable`` holds what a :class:`~rolling.FileJournal` would have on disk:
    records appended with ``sync=False`` become durable only with the next
    sync, so :meth:`crash` (drop what is not durable) shows what a controller
    that died at that moment would leave behind.

    .. versionadded:: 0.1.0
    """

    def __init__(self) -> None:
        self.durable: list[JournalRecord] = []
        self.pending: list[JournalRecord] = []

    async def load(self) -> list[JournalRecord]:
        """Every durable record, oldest first."""
        return copy.deepcopy(self.durable)

    async def append(self, record: JournalRecord, *, sync: bool = False) -> None:
        """Queue ``record``; with ``sync``, make it and all before it durable."""
        self.pending.append(copy.deepcopy(record))
        if sync:
            self.durable += self.pending
            self.pending = []

    async def close(self) -> None:
        """Make everything durable."""
        self.durable += self.pending
        self.pending = []

    def crash(self) -> None:
        """Forget what was never made durable, as a killed process would."""
        self.pending = []

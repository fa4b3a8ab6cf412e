"""Locks: one controller per fleet at a time."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio

from ._errors import RollingError
from ._validate import path_of

if TYPE_CHECKING:
    from .typing import Lock

__all__ = ["FileLock", "LockLostError", "LockedError", "under_lock"]


class LockedError(RollingError, RuntimeError):
    """Another controller holds the fleet's lock.

    Attributes:
        holder: What the holder wrote about itself (pid, host, since), as text.
    """

    def __init__(self, where: str, holder: str) -> None:
        self.holder = holder
        super().__init__(
            f"{where} is locked by another rollout ({holder}); wait for it to finish, "
            "or stop it, before starting this one"
        )


class LockLostError(RollingError, RuntimeError):
    """This controller lost the fleet's lock while a rollout ran: it stopped, and wrote no more.

    The lock's lease ran out (the controller was paused, partitioned or too
    slow to renew it) or another controller holds it now. The rollout halted
    at once: nothing new started, and no journal write (hence, write-ahead, no
    change to the fleet) was made after the loss was seen. The controller that
    holds the lock now resumes the rollout from the journal.

    .. versionadded:: 0.2.0
    """


class FileLock:
    """An advisory ``flock`` on a local file, which the kernel drops when its holder dies.

    The file holds the holder's pid, host name and start time, so the error a
    second controller gets names who is in the way.

    Args:
        path: The lock file (a str or path-like); created if missing.

    Raises:
        ConfigError: ``path`` is not a file path (bytes, a number, an empty string).

    .. versionadded:: 0.1.0
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = path_of("FileLock.path", path)
        self._fd: int | None = None

    async def acquire(self) -> None:
        """Take the lock or raise :class:`LockedError`."""
        await anyio.to_thread.run_sync(self._acquire)

    def _acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown holder"
            os.close(fd)
            raise LockedError(str(self.path), holder) from None
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": round(time.time(), 3)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        self._fd = fd

    async def release(self) -> None:
        """Release the lock (the file stays, emptied)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


async def under_lock(
    lock: Lock | None,
    body: Callable[[], Awaitable[None]],
    lost: Callable[[Exception], None],
) -> None:
    """Run ``body`` holding ``lock`` (if any), and release it however ``body`` ends.

    A lock that can be lost (it has ``hold()``, see :class:`rolling.typing.Lock`) is
    held by a task of its own beside ``body``: when ``hold()`` raises or returns, the
    lock is lost and ``lost`` is called with the error (the runner halts the rollout).
    The task is shielded and ends only once ``body`` has: a cancelled run's clean-up
    writes the journal too, and needs the lock kept.
    """
    if lock is None:
        await body()
        return
    await lock.acquire()
    try:
        hold: Callable[[], Awaitable[None]] | None = getattr(lock, "hold", None)
        if hold is None:
            await body()
        else:
            await _while_held(hold, body, lost)
    finally:
        with anyio.CancelScope(shield=True):
            await lock.release()


async def _while_held(
    hold: Callable[[], Awaitable[None]],
    body: Callable[[], Awaitable[None]],
    lost: Callable[[Exception], None],
) -> None:
    keeper = anyio.CancelScope(shield=True)

    async def keep() -> None:
        with keeper:
            try:
                await hold()
            except Exception as exc:  # noqa: BLE001 - the rollout halts and run() raises it
                lost(exc)
            else:
                lost(LockLostError("lost the lock: its hold() returned"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(keep)
        try:
            await body()
        finally:
            keeper.cancel()

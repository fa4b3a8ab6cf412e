"""Processes the driver started or adopted: starting them, signalling their group, seeing them exit.

POSIX only; seeing an adopted process exit reads ``/proc`` (Linux).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Final

import anyio
import anyio.abc
import attrs

from ._proc import group_members, proc_stat
from ._types import ProcessDriverError

__all__ = [
    "Child",
    "close_log",
    "make_dir",
    "open_log",
    "posix_spawn",
    "stop_and_reap",
    "stop_by_pid",
]

_GROUP_POLL: Final = 0.05
"""Seconds between checks that a stopped child's process group is gone."""

_KILL_WAIT: Final = 30.0
"""Seconds to wait for a process to exit after SIGKILL before reporting it stuck."""


@attrs.define(eq=False)
class Child:
    """A process of the fleet that the driver has not seen exit yet.

    Without a state file, ``process`` is the :mod:`anyio` process the driver
    started. With one, ``process`` is None and the process is known by its pid
    and start time only: it may be the driver's child (started by it, and then
    reaped by it) or one adopted from a dead controller (reaped by init).
    """

    pid: int
    process: anyio.abc.Process | None = None
    start: int | None = None
    token: str | None = None
    exited: bool = False
    ours: bool = False
    """Whether it turned out to be this process's child (``waitpid`` could reap it)."""
    stopping: bool = False
    stopped: anyio.Event = attrs.Factory(anyio.Event)


async def _exited(process: anyio.abc.Process, *, within: float) -> bool:
    """Wait up to ``within`` seconds for ``process`` to exit (and reap it); say whether it did."""
    with anyio.move_on_after(within):
        await process.wait()
        return True
    return False


def _running(child: Child) -> bool:
    """Whether ``child`` still runs; reaps it if it is ours and has exited.

    Reads ``/proc/<pid>/stat`` (no disk I/O) for a process that is not ours: a
    zombie has exited, and another start time means the pid was reused.
    """
    if child.exited:
        return False
    try:
        reaped, _ = os.waitpid(child.pid, os.WNOHANG)
    except ChildProcessError:
        stat = proc_stat(child.pid)
        running = stat is not None and stat.state != "Z" and stat.start == child.start
    else:
        child.ours = True
        running = reaped == 0
    if not running:
        child.exited = True
    return running


async def _gone(child: Child, *, within: float) -> bool:
    """Wait up to ``within`` seconds for ``child`` to exit; say whether it did."""
    deadline = anyio.current_time() + within
    while _running(child):
        if anyio.current_time() >= deadline:
            return False
        await anyio.sleep(_GROUP_POLL)
    return True


def _signal_group(group: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # the whole group has exited already
        os.killpg(group, signum)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # a member exists, but changed its credentials
    return True


def make_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


def open_log(log_dir: Path, instance_id: str) -> tuple[IO[bytes], Path]:
    # The pid is known only once the process runs: write under a unique name, rename after.
    path = log_dir / f"{instance_id}-starting-{secrets.token_hex(4)}.log"
    return path.open("xb"), path


def close_log(log: tuple[IO[bytes], Path], final: Path | None) -> None:
    file, path = log
    file.close()
    if final is None:
        path.unlink(missing_ok=True)
    else:
        path.replace(final)


def posix_spawn(argv: list[str], env: Mapping[str, str], output: int | None) -> int:
    """Start ``argv`` in a new session, stdin from /dev/null, output to ``output`` or nowhere.

    Not :mod:`subprocess`: a ``Popen`` (or an asyncio transport) left behind
    kills or warns about a process meant to outlive it. The descriptors the
    driver opens are non-inheritable (PEP 446), so the child gets none of them.
    """
    actions: list[tuple[object, ...]] = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)]
    if output is None:
        actions += [
            (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_DUP2, 1, 2),
        ]
    else:
        actions += [(os.POSIX_SPAWN_DUP2, output, 1), (os.POSIX_SPAWN_DUP2, output, 2)]
    return os.posix_spawnp(
        argv[0],
        argv,
        env,
        file_actions=actions,
        setsid=True,
        setsigmask=(),
        # Python ignores SIGPIPE and SIGXFSZ; an ignored signal would stay ignored past exec.
        setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
    )


async def stop_by_pid(child: Child, *, grace: float) -> None:
    """Stop a process known by pid only (started with a state file, or adopted)."""
    group = child.pid
    deadline = anyio.current_time() + grace
    if not _running(child):
        if not child.ours:
            return  # exited before, reaped elsewhere: its pid may belong to another now
    else:
        _signal_group(group, signal.SIGTERM)
        if not await _gone(child, within=grace):
            _signal_group(group, signal.SIGKILL)
            if not await _gone(child, within=_KILL_WAIT):
                raise ProcessDriverError(
                    f"pid {child.pid} did not exit {_KILL_WAIT:.0f}s after SIGKILL"
                )
            return
    # The leader is gone; as in stop_and_reap, what is left of its group gets the
    # rest of the grace period. Read from /proc: zombies (which init may never reap)
    # would keep killpg(group, 0) succeeding forever.
    while await anyio.to_thread.run_sync(group_members, group):
        if anyio.current_time() >= deadline:
            _signal_group(group, signal.SIGKILL)
            return
        await anyio.sleep(_GROUP_POLL)


async def stop_and_reap(process: anyio.abc.Process, *, grace: float) -> None:
    """Stop a process the driver started (and reap it): SIGTERM, ``grace``, SIGKILL."""
    # The child leads its own process group (start_new_session), so its pid is the
    # group id. A group id stays reserved while any member lives, so signalling the
    # group of a reaped leader reaches only what it left behind.
    group = process.pid
    deadline = anyio.current_time() + grace
    _signal_group(group, signal.SIGTERM)
    if not await _exited(process, within=grace):
        _signal_group(group, signal.SIGKILL)
        # Bounded even now: a process stuck in the kernel (say, on a dead NFS mount)
        # ignores SIGKILL, and a clean-up must not hang forever on it.
        if not await _exited(process, within=_KILL_WAIT):
            raise ProcessDriverError(
                f"pid {process.pid} did not exit {_KILL_WAIT:.0f}s after SIGKILL"
            )
        return
    # The leader is gone; the rest of its group gets what is left of the grace period,
    # then SIGKILL. Their exit is not awaited: they are not our children, and where
    # init does not reap orphans their zombies would keep the group "alive" anyway.
    while _group_alive(group):
        if anyio.current_time() >= deadline:
            _signal_group(group, signal.SIGKILL)
            return
        await anyio.sleep(_GROUP_POLL)

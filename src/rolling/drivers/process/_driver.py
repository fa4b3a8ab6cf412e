"""The process driver: a fleet of local processes, each on its own port."""

from __future__ import annotations

import functools
import ipaddress
import os
import secrets
import socket
import subprocess
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Final, Literal, Self, TypeVar, cast

import anyio
import anyio.lowlevel
import anyio.to_thread
import attrs

from rolling import ConfigError, FileLock, LockedError
from rolling.validate import check_callable, check_int, check_seconds

from ._children import (
    Child,
    close_log,
    make_dir,
    open_log,
    posix_spawn,
    stop_and_reap,
    stop_by_pid,
)
from ._proc import TOKEN_VARIABLE, find_processes, start_time
from ._state import Entry, dump_state, read_state, write_state
from ._types import Command, ProcessDriverError, ProcessInstance

__all__ = ["ProcessDriver"]

_PORT_ATTEMPTS: Final = 32
"""How many ports the kernel may hand out before one not used by the fleet comes up."""

_T = TypeVar("_T")


@attrs.define(eq=False)
class _Member:
    """One place in the fleet: the instance last handed out and its process, if any.

    ``child`` is None only after a replace stopped the old process and could not
    start the new one; the member stays listed (it fails its health checks, so a
    rollout replaces it first) until it is replaced or terminated.
    """

    instance: ProcessInstance
    child: Child | None
    busy: bool = False


class ProcessDriver:
    """Runs a fleet of local processes, each serving on its own port.

    Use it as ``async with ProcessDriver(...) as driver:``. Every process it
    starts is stopped when the block is left, however it is left, unless
    ``keep_on_exit`` says otherwise (the default with a ``state_file``).

    Args:
        command: ``command(version, port)`` returns the argument vector that
            starts ``version`` serving on ``port``, such as
            ``["python", "-m", "app", "--port", "8001"]``. It must be a sequence
            of ``str``, never one string: no shell is used.
        grace: Seconds a stopped process group has to exit after SIGTERM before
            it gets SIGKILL.
        host: The IP address the processes serve on (an address, not a name,
            so that no lookup blocks); free ports are picked on it. Reported as
            :attr:`ProcessInstance.host`; ``command`` is responsible for
            passing it on if the program needs it.
        env: Variables added to the environment the driver runs in, for every
            process; None passes that environment unchanged.
        log_dir: Where each process writes its standard output and error, to
            ``<id>-<pid>.log``; created if missing. None discards the output.
        id_prefix: Instance ids are ``<id_prefix>-0``, ``<id_prefix>-1``, ...
        state_file: A JSON file listing every process of the fleet (id,
            version, host, port, pid, and the start time from
            ``/proc/<pid>/stat``, which guards against a reused pid). It is
            rewritten atomically (temporary file, ``fsync``, rename) on every
            change, before the call that made the change returns; a process
            about to start is announced in it first, with a token in its
            environment, so even one started an instant before the
            controller died is found. Entering the driver *adopts* the
            fleet the file lists: the processes that still run (see
            :attr:`adopted`) and, listed without a process, the instances
            whose process is gone (:attr:`dead`), exactly as the driver
            keeps an instance whose process exited or failed to restart:
            its health check fails, and a rollout replaces it (same id, same
            port) or terminates it. Adopted processes are not children of
            this controller: they are stopped like the others (SIGTERM to
            the group, ``grace``, SIGKILL), and their exit is seen in
            ``/proc``. A lock file next to it, ``<state_file>.lock``, keeps a
            second driver off the same fleet. Linux only.
        keep_on_exit: Leave the processes running when the ``async with``
            block is left, so that the fleet outlives the controller. None
            (the default) means True with a ``state_file`` and False without;
            True needs a ``state_file`` (or the fleet could never be found
            again).

    Attributes:
        adopted: The instances of ``state_file`` found running on entry.
        dead: The instances of ``state_file`` whose process was gone on
            entry; they stay listed until replaced or terminated.
        dropped: Ids of launches ``state_file`` announced whose process never
            started (the controller died first); no one knows them, they are
            forgotten.

    Raises:
        ConfigError: An argument is invalid.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        command: Command,
        *,
        grace: float = 5.0,
        host: str = "127.0.0.1",
        env: Mapping[str, str] | None = None,
        log_dir: Path | None = None,
        id_prefix: str = "p",
        state_file: Path | None = None,
        keep_on_exit: bool | None = None,
    ) -> None:
        """Check the settings; nothing starts before the driver is entered."""
        check_callable("ProcessDriver.command", command)
        check_seconds("ProcessDriver.grace", grace)
        _check_text("ProcessDriver.id_prefix", id_prefix, 'pass "p", say')
        _check_env(env)
        for name, path in (("log_dir", log_dir), ("state_file", state_file)):
            if path is not None and not isinstance(path, str | os.PathLike):
                raise ConfigError(
                    f"ProcessDriver.{name}",
                    f"expected a path, got {path!r}",
                    f'pass Path("{"logs" if name == "log_dir" else "fleet.json"}"), or None',
                )
        try:
            address = ipaddress.ip_address(_text(host))
        except ValueError:
            raise ConfigError(
                "ProcessDriver.host",
                f"expected an IP address, got {host!r}",
                'pass "127.0.0.1" or "::1"',
            ) from None
        if keep_on_exit is None:
            keep_on_exit = state_file is not None
        elif not isinstance(keep_on_exit, bool):
            raise ConfigError(
                "ProcessDriver.keep_on_exit",
                f"expected a bool or None, got {keep_on_exit!r}",
                "pass True, False or None",
            )
        if keep_on_exit and state_file is None:
            raise ConfigError(
                "ProcessDriver.keep_on_exit",
                "keeping the processes on exit needs a state_file, or no one could find them",
                'pass state_file=Path("fleet.json") as well',
            )
        self._command = command
        self._grace = float(grace)
        self._host = host
        self._family = socket.AF_INET6 if address.version == 6 else socket.AF_INET  # noqa: PLR2004 - IP version
        self._env = None if env is None else {**os.environ, **env}
        self._log_dir = None if log_dir is None else Path(log_dir)
        self._id_prefix = id_prefix
        self._state: Literal["new", "open", "closed"] = "new"
        self._members: dict[str, _Member] = {}
        self._children: dict[int, Child] = {}
        self._pending_ports: set[int] = set()
        self._next_index = 0
        self._state_file = None if state_file is None else Path(state_file)
        self._keep_on_exit = keep_on_exit
        self._starting: dict[str, Entry] = {}
        """Processes announced in the state file and not started yet, by instance id."""
        self._save_lock = anyio.Lock()
        self._file_lock: FileLock | None = None
        self.adopted: tuple[ProcessInstance, ...] = ()
        self.dead: tuple[ProcessInstance, ...] = ()
        self.dropped: tuple[str, ...] = ()

    # ---------------------------------------------------------------- context

    async def __aenter__(self) -> Self:
        """Open the driver; it can be entered once."""
        if self._state != "new":
            raise ProcessDriverError("a ProcessDriver can be entered only once; build a new one")
        if self._log_dir is not None:
            await anyio.to_thread.run_sync(make_dir, self._log_dir)
        if self._state_file is not None:
            await self._adopt(self._state_file)
        self._state = "open"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop every process the driver started (see :meth:`aclose`)."""
        await self.aclose()

    async def aclose(self) -> None:
        """Stop every process of the fleet, all at once, shielded from cancellation.

        Takes at most about ``grace`` seconds. With ``keep_on_exit``, nothing is
        stopped: the processes go on running, listed in the state file, for
        the next driver to adopt. The driver cannot start processes
        afterwards; calling this again does nothing.
        """
        if self._state == "closed":
            return
        opened, self._state = self._state == "open", "closed"
        with anyio.CancelScope(shield=True):
            if not self._keep_on_exit:
                async with anyio.create_task_group() as tg:
                    for child in list(self._children.values()):
                        tg.start_soon(self._stop, child)
                self._members.clear()
            if opened and self._state_file is not None:
                # Kept processes are in the file already; stopped ones leave it empty.
                await self._save()
                lock, self._file_lock = self._file_lock, None
                if lock is not None:
                    await lock.release()

    # ------------------------------------------------------------ the protocol

    async def list_instances(self) -> Sequence[ProcessInstance]:
        """Return the fleet in the order it was made.

        A replaced instance keeps its place; launched ones come last. An
        instance whose process has exited on its own stays listed until it is
        replaced or terminated: its health check fails, so a rollout replaces
        it first.
        """
        await anyio.lowlevel.checkpoint()
        return [member.instance for member in self._members.values()]

    async def spawn(self, count: int, version: str) -> list[ProcessInstance]:
        """Start ``count`` processes running ``version``: the initial fleet.

        Each gets a free port and the next id. The processes are started, not
        ready: wait for their health checks before sending them traffic. If one
        fails to start, those started before it stay in the fleet.

        Raises:
            ProcessDriverError: The driver is not open, or a process could not
                be started.
        """
        self._check_open("spawn")
        check_int("ProcessDriver.spawn.count", count, minimum=0)
        return [await self.launch(version) for _ in range(count)]

    async def launch(self, version: str) -> ProcessInstance:
        """Start one more process running ``version``, on a free port, under a new id.

        The port is found by binding a socket to port 0 and closing it before
        the process starts; in that short gap another program could take the
        port, and the new process would then fail its health check. Ports the
        fleet uses (even while a member restarts) are never handed out twice.
        This returns as soon as the process runs: it is not ready yet.

        Raises:
            ProcessDriverError: The driver is not open, or the process could not
                be started.
        """
        self._check_open("launch")
        _check_text("version", version, 'pass "v2", say')
        port = self._free_port()
        argv = self._argv(version, port)
        instance_id = f"{self._id_prefix}-{self._next_index}"
        while instance_id in self._members or instance_id in self._starting:
            # Adopted from a state file written by a driver with other ids: skip them.
            self._next_index += 1
            instance_id = f"{self._id_prefix}-{self._next_index}"
        self._next_index += 1
        self._pending_ports.add(port)
        try:
            return await self._start(argv, instance_id, version, port, member=None)
        finally:
            self._pending_ports.discard(port)

    async def terminate(self, instance: ProcessInstance) -> None:
        """Stop ``instance`` for good and remove it from the fleet.

        SIGTERM to its process group, up to ``grace`` seconds for the group to
        exit, then SIGKILL; the process is always reaped. Shielded from
        cancellation (so it takes up to about ``grace`` seconds even then).
        Terminating an instance that is already gone does nothing.

        Raises:
            ProcessDriverError: The instance is being replaced or terminated by
                another task.
        """
        member = self._members.get(instance.id)
        if member is None or member.instance.pid != instance.pid:
            await anyio.lowlevel.checkpoint()
            return
        self._claim(member, "terminate")
        del self._members[instance.id]
        try:
            if member.child is not None:
                await self._stop(member.child)
        finally:
            # After the stop, not before: a controller killed in between leaves the
            # process listed, to be adopted (and terminated again), never forgotten.
            await self._save()

    async def replace(self, instance: ProcessInstance, version: str) -> ProcessInstance:
        """Restart ``instance`` with ``version``, on the same port, under the same id.

        The old process is stopped as :meth:`terminate` does, then the new one
        starts; the returned instance has the new pid. The whole call is
        shielded from cancellation, so it either completes or fails with the
        fleet knowing exactly what runs. If the new process cannot start, the
        instance stays listed with its old version and no process, and may be
        replaced again.

        Raises:
            ProcessDriverError: The driver is not open, the instance is not in
                this fleet (or is an outdated copy), it is being worked on by
                another task, or the new process could not be started.
        """
        self._check_open("replace")
        _check_text("version", version, 'pass "v2", say')
        member = self._members.get(instance.id)
        if member is None:
            raise ProcessDriverError(f"{instance.id} is not in this driver's fleet")
        if member.instance.pid != instance.pid:
            raise ProcessDriverError(
                f"{instance.id} is an outdated copy (pid {instance.pid});"
                f" the fleet's is pid {member.instance.pid}: pass the instance last returned"
            )
        # Built before the old process stops, so that a failing command() changes nothing.
        argv = self._argv(version, member.instance.port)
        self._claim(member, "replace")
        try:
            return await _shielded(functools.partial(self._restart, member, argv, version))
        finally:
            member.busy = False

    # ----------------------------------------------------------------- helpers

    def pids(self) -> set[int]:
        """Process ids of every process the driver started (or adopted) and has not stopped."""
        return set(self._children)

    def _check_open(self, action: str) -> None:
        if self._state == "new":
            raise ProcessDriverError(
                f"{action}() needs an open driver: use `async with ProcessDriver(...) as driver:`"
            )
        if self._state == "closed":
            raise ProcessDriverError(f"cannot {action}(): the driver is closed")

    @staticmethod
    def _claim(member: _Member, action: str) -> None:
        if member.busy:
            raise ProcessDriverError(
                f"cannot {action} {member.instance.id}: another task is replacing or terminating it"
            )
        member.busy = True

    def _free_port(self) -> int:
        taken = {m.instance.port for m in self._members.values()} | self._pending_ports
        for _ in range(_PORT_ATTEMPTS):
            # Binding and closing at once never blocks; the kernel picks an unused port.
            with socket.socket(self._family, socket.SOCK_STREAM) as sock:
                sock.bind((self._host, 0))
                port: int = sock.getsockname()[1]
            if port not in taken:
                return port
        raise ProcessDriverError(f"no free port on {self._host} after {_PORT_ATTEMPTS} tries")

    def _argv(self, version: str, port: int) -> list[str]:
        argv: object = self._command(version, port)
        if isinstance(argv, str | bytes | os.PathLike) or not isinstance(argv, Sequence):
            raise ProcessDriverError(
                f"command({version!r}, {port}) returned {argv!r}; it must return a sequence"
                " of str arguments, such as ['python', '-m', 'app'] (no shell is used)"
            )
        arguments = list(argv)  # pyright: ignore[reportUnknownArgumentType] - checked just below
        if not arguments or not all(isinstance(a, str) for a in arguments):
            raise ProcessDriverError(
                f"command({version!r}, {port}) returned {argv!r}; it must return a non-empty"
                " sequence of str"
            )
        return [str(a) for a in arguments]

    async def _restart(self, member: _Member, argv: list[str], version: str) -> ProcessInstance:
        old = member.child
        if old is not None:
            # Still recorded while it stops: a controller killed meanwhile leaves it adoptable.
            await self._stop(old)
        member.child = None
        instance = member.instance
        return await self._start(argv, instance.id, version, instance.port, member=member)

    async def _start(
        self, argv: list[str], instance_id: str, version: str, port: int, *, member: _Member | None
    ) -> ProcessInstance:
        """Start a process and record it; registers ``instance_id`` if ``member`` is None."""
        # Shielded: a process that started but was never recorded would outlive the driver.
        return await _shielded(
            functools.partial(self._spawn, argv, instance_id, version, port, member)
        )

    async def _spawn(
        self,
        argv: list[str],
        instance_id: str,
        version: str,
        port: int,
        member: _Member | None,
    ) -> ProcessInstance:
        log = None
        if self._log_dir is not None:
            log = await anyio.to_thread.run_sync(open_log, self._log_dir, instance_id)
        output: int | IO[bytes] = subprocess.DEVNULL if log is None else log[0]
        try:
            if self._state_file is None:
                process = await anyio.open_process(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=output,
                    env=self._env,
                    start_new_session=True,
                )
                child = Child(process.pid, process=process)
            else:
                fd = None if log is None else log[0].fileno()
                child = await self._spawn_tracked(argv, instance_id, version, port, fd)
        except OSError as exc:
            if log is not None:
                await anyio.to_thread.run_sync(close_log, log, None)
            raise ProcessDriverError(f"could not start {argv!r}: {exc}") from exc
        self._children[child.pid] = child
        instance = ProcessInstance(
            id=instance_id, version=version, host=self._host, port=port, pid=child.pid
        )
        if member is None:
            self._members[instance_id] = _Member(instance, child)
        else:
            member.instance, member.child = instance, child
        self._starting.pop(instance_id, None)
        await self._save()
        if log is not None:
            final = log[1].with_name(f"{instance_id}-{child.pid}.log")
            await anyio.to_thread.run_sync(close_log, log, final)
        if self._state == "closed" and not self._keep_on_exit:
            # The driver closed while this process was starting: it must not outlive it.
            self._members.pop(instance_id, None)
            await self._stop(child)
            await self._save()
            raise ProcessDriverError(f"the driver closed while {instance_id} was starting")
        return instance

    async def _spawn_tracked(
        self, argv: list[str], instance_id: str, version: str, port: int, output: int | None
    ) -> Child:
        """Start a process for a driver with a state file: announced first, then recorded.

        The announcement (with the token the process will carry in its
        environment) is on disk before the process exists, so a controller
        killed at any point leaves a file from which the process can be found.
        """
        token = secrets.token_hex(8)
        self._starting[instance_id] = Entry(
            id=instance_id,
            version=version,
            host=self._host,
            port=port,
            pid=None,
            start=None,
            token=token,
        )
        await self._save()
        env = {**(os.environ if self._env is None else self._env), TOKEN_VARIABLE: token}
        try:
            pid = posix_spawn(argv, env, output)
        except OSError:
            self._starting.pop(instance_id, None)
            await self._save()
            raise
        # Our child, not reaped yet: its /proc entry exists even if it exited already.
        return Child(pid, start=start_time(pid), token=token)

    async def _adopt(self, path: Path) -> None:
        """Lock ``path``, take over the processes it lists that still run, drop the rest."""
        lock = FileLock(path.with_name(path.name + ".lock"))
        try:
            await lock.acquire()
        except LockedError as exc:
            raise ProcessDriverError(
                f"{path} is in use by another ProcessDriver ({exc.holder}); one driver per fleet"
            ) from None
        try:
            entries, next_index = await anyio.to_thread.run_sync(read_state, path)
            found = await anyio.to_thread.run_sync(find_processes, entries)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await lock.release()
            raise
        self._file_lock = lock
        adopted: list[ProcessInstance] = []
        dead: list[ProcessInstance] = []
        dropped: list[str] = []
        for entry in entries:
            located = found.get(entry.id)
            if located is not None:
                pid, start, version = located
                instance = ProcessInstance(
                    id=entry.id, version=version, host=entry.host, port=entry.port, pid=pid
                )
                child = Child(pid, start=start, token=entry.token)
                if entry.next_version is not None and version == entry.next_version:
                    child.token = entry.next_token
                self._children[pid] = child
                self._members[entry.id] = _Member(instance, child)
                adopted.append(instance)
            elif entry.pid is not None:
                # Its process is gone: listed without one, as after a failed restart.
                instance = ProcessInstance(
                    id=entry.id,
                    version=entry.version,
                    host=entry.host,
                    port=entry.port,
                    pid=entry.pid,
                )
                self._members[entry.id] = _Member(instance, None)
                dead.append(instance)
            else:
                dropped.append(entry.id)  # a launch that never started: nobody knows it
        self._next_index = next_index
        self.adopted, self.dead, self.dropped = tuple(adopted), tuple(dead), tuple(dropped)
        await self._save()

    async def _save(self) -> None:
        """Write the fleet to the state file, if there is one; shielded, serialised."""
        path = self._state_file
        if path is None:
            return
        with anyio.CancelScope(shield=True):
            async with self._save_lock:
                # Built under the lock: whoever writes, writes the latest fleet.
                await anyio.to_thread.run_sync(write_state, path, self._snapshot())

    def _snapshot(self) -> str:
        entries: list[Entry] = []
        for member in self._members.values():
            instance, child = member.instance, member.child
            starting = self._starting.get(instance.id)
            entries.append(
                Entry(
                    id=instance.id,
                    version=instance.version,
                    host=instance.host,
                    port=instance.port,
                    pid=instance.pid,
                    # No start time, no process: a member without one is adopted as such.
                    start=None if child is None else child.start,
                    token=None if child is None else child.token,
                    # Being replaced: the old process is stopped (or stopping).
                    next_version=None if starting is None else starting.version,
                    next_token=None if starting is None else starting.token,
                )
            )
        entries += [e for key, e in self._starting.items() if key not in self._members]
        return dump_state(entries, self._next_index)

    async def _stop(self, child: Child) -> None:
        """Stop and reap ``child``, shielded; a second caller waits for the first."""
        if child.stopping:
            await child.stopped.wait()
            return
        child.stopping = True
        try:
            with anyio.CancelScope(shield=True):
                if child.process is not None:
                    await stop_and_reap(child.process, grace=self._grace)
                else:
                    await stop_by_pid(child, grace=self._grace)
            self._children.pop(child.pid, None)
        finally:
            child.stopped.set()


async def _shielded(function: Callable[[], Awaitable[_T]]) -> _T:
    """Await ``function()`` shielded from cancellation: once started, it completes."""
    with anyio.CancelScope(shield=True):
        return await function()
    # Only cancel() on this very scope could end up here, and nothing calls it.
    raise AssertionError("a shielded scope was cancelled")  # pragma: no cover


def _text(value: object) -> str:
    """``value`` if a str, else "": ip_address() takes an int too (0 is 0.0.0.0, True 0.0.0.1)."""
    return value if isinstance(value, str) else ""


def _check_env(env: object) -> None:
    """``env`` is None or a mapping of str to str, as the environment of a process is."""
    if env is None:
        return
    if not isinstance(env, Mapping):
        raise ConfigError(
            "ProcessDriver.env", f"expected a mapping, got {env!r}", 'pass {"PORT_BASE": "8000"}'
        )
    for key, value in cast("Mapping[object, object]", env).items():
        if not isinstance(key, str) or not key or not isinstance(value, str):
            raise ConfigError(
                "ProcessDriver.env",
                f"expected str names and values, got {key!r}: {value!r}",
                'write each value as a str: {"WORKERS": "4"}',
            )


def _check_text(field: str, value: object, fix: str) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError(field, f"expected a non-empty str, got {value!r}", fix)

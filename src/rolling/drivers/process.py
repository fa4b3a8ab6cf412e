"""A driver for local OS processes, each serving on its own loopback port.

:class:`ProcessDriver` is both a :class:`~rolling.typing.Driver` (``replace``
restarts a process on the same port, under the same id) and an
:class:`~rolling.typing.ElasticDriver` (``launch`` starts one more process on a
fresh port, ``terminate`` stops one for good)::

    def command(version: str, port: int) -> list[str]:
        return ["/opt/app/" + version + "/bin/serve", "--port", str(port)]

    async with ProcessDriver(command, grace=10) as driver:
        await driver.spawn(3, "v1")
        result = await rolling.Rollout(driver, "v2", readiness=...).run()

Rules the driver keeps:

* no shell, ever: ``command`` returns the argument vector;
* every child runs in its own session and process group, and signals go to the
  whole group, so whatever a child starts goes down with it;
* stopping is SIGTERM, up to ``grace`` seconds for the group to exit, then
  SIGKILL, and the child is always reaped: no zombie is left behind (what the
  child started itself is orphaned when the child exits, and reaped by init);
* leaving the ``async with`` block (normally, on an error or on cancellation)
  stops every process the driver started, shielded from cancellation;
* starting and stopping are shielded too, so a cancelled caller never leaves a
  process the driver does not know about.

It needs POSIX process groups (Linux, macOS, the BSDs), not Windows.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import os
import secrets
import signal
import socket
import subprocess
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Literal, Self, TypeVar

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread
import attrs

from rolling._errors import ConfigError, RollingError
from rolling._validate import check_callable, check_int, check_seconds

__all__ = ["Command", "ProcessDriver", "ProcessDriverError", "ProcessInstance"]

_PORT_ATTEMPTS = 32
"""How many ports the kernel may hand out before one not used by the fleet comes up."""

_KILL_WAIT = 30.0
"""Seconds to wait for a process to exit after SIGKILL before reporting it stuck."""

_GROUP_POLL = 0.05
"""Seconds between checks that a stopped child's process group is gone."""

_T = TypeVar("_T")

Command = Callable[[str, int], Sequence[str]]
"""Builds the argv of one process from the version and the port it must serve on."""
"""Builds the argument vector of the process for ``(version, port)``."""


class ProcessDriverError(RollingError, RuntimeError):
    """A :class:`ProcessDriver` was misused, or a process could not be started.

    .. versionadded:: 0.1.0
    """


@attrs.frozen(kw_only=True)
class ProcessInstance:
    """One process of a :class:`ProcessDriver` fleet, as it was when handed out.

    Attributes:
        id: Identifier, unique in the fleet (``"p-0"``, ``"p-1"``, ...); kept
            when the instance is replaced.
        version: The version the process was started with.
        host: The address the process is expected to serve on.
        port: The port the process serves on; kept when the instance is replaced.
        pid: The process id; a replaced instance gets a new one.

    .. versionadded:: 0.1.0
    """

    id: str
    version: str
    host: str = "127.0.0.1"
    port: int
    pid: int


@attrs.define(eq=False)
class _Child:
    """A process the driver started and has not reaped yet."""

    process: anyio.abc.Process
    stopping: bool = False
    stopped: anyio.Event = attrs.Factory(anyio.Event)


@attrs.define(eq=False)
class _Member:
    """One place in the fleet: the instance last handed out and its process, if any.

    ``child`` is None only after a replace stopped the old process and could not
    start the new one; the member stays listed (it fails its health checks, so a
    rollout replaces it first) until it is replaced or terminated.
    """

    instance: ProcessInstance
    child: _Child | None
    busy: bool = False


class ProcessDriver:
    """Runs a fleet of local processes, each serving on its own port.

    Use it as ``async with ProcessDriver(...) as driver:``. Every process it
    starts is stopped when the block is left, however it is left.

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
    ) -> None:
        """Check the settings; nothing starts before the driver is entered."""
        check_callable("ProcessDriver.command", command)
        check_seconds("ProcessDriver.grace", grace)
        _check_text("ProcessDriver.id_prefix", id_prefix, 'pass "p", say')
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError(
                "ProcessDriver.host",
                f"expected an IP address, got {host!r}",
                'pass "127.0.0.1" or "::1"',
            ) from None
        self._command = command
        self._grace = float(grace)
        self._host = host
        self._family = socket.AF_INET6 if address.version == 6 else socket.AF_INET  # noqa: PLR2004 - IP version
        self._env = None if env is None else {**os.environ, **env}
        self._log_dir = log_dir
        self._id_prefix = id_prefix
        self._state: Literal["new", "open", "closed"] = "new"
        self._members: dict[str, _Member] = {}
        self._children: dict[int, _Child] = {}
        self._pending_ports: set[int] = set()
        self._next_index = 0

    # ---------------------------------------------------------------- context

    async def __aenter__(self) -> Self:
        """Open the driver; it can be entered once."""
        if self._state != "new":
            raise ProcessDriverError("a ProcessDriver can be entered only once; build a new one")
        if self._log_dir is not None:
            await anyio.to_thread.run_sync(_make_dir, self._log_dir)
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
        """Stop every process the driver started, all at once, shielded from cancellation.

        Takes at most about ``grace`` seconds. The driver cannot start processes
        afterwards; calling this again does nothing.
        """
        self._state = "closed"
        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as tg:
                for child in list(self._children.values()):
                    tg.start_soon(self._stop, child)
        self._members.clear()

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
        if member.child is not None:
            await self._stop(member.child)

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
        """Process ids of every process the driver started and has not reaped yet."""
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
        old, member.child = member.child, None
        if old is not None:
            await self._stop(old)
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
            log = await anyio.to_thread.run_sync(_open_log, self._log_dir, instance_id)
        output: int | IO[bytes] = subprocess.DEVNULL if log is None else log[0]
        try:
            process = await anyio.open_process(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                env=self._env,
                start_new_session=True,
            )
        except OSError as exc:
            if log is not None:
                await anyio.to_thread.run_sync(_close_log, log, None)
            raise ProcessDriverError(f"could not start {argv!r}: {exc}") from exc
        child = _Child(process)
        self._children[process.pid] = child
        instance = ProcessInstance(
            id=instance_id, version=version, host=self._host, port=port, pid=process.pid
        )
        if member is None:
            self._members[instance_id] = _Member(instance, child)
        else:
            member.instance, member.child = instance, child
        if log is not None:
            final = log[1].with_name(f"{instance_id}-{process.pid}.log")
            await anyio.to_thread.run_sync(_close_log, log, final)
        if self._state == "closed":
            # The driver closed while this process was starting: it must not outlive it.
            await self._stop(child)
            raise ProcessDriverError(f"the driver closed while {instance_id} was starting")
        return instance

    async def _stop(self, child: _Child) -> None:
        """Stop and reap ``child``, shielded; a second caller waits for the first."""
        if child.stopping:
            await child.stopped.wait()
            return
        child.stopping = True
        try:
            with anyio.CancelScope(shield=True):
                await self._signal_and_reap(child.process)
            self._children.pop(child.process.pid, None)
        finally:
            child.stopped.set()

    async def _signal_and_reap(self, process: anyio.abc.Process) -> None:
        # The child leads its own process group (start_new_session), so its pid is the
        # group id. A group id stays reserved while any member lives, so signalling the
        # group of a reaped leader reaches only what it left behind.
        group = process.pid
        deadline = anyio.current_time() + self._grace
        _signal_group(group, signal.SIGTERM)
        if not await _exited(process, within=self._grace):
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


async def _exited(process: anyio.abc.Process, *, within: float) -> bool:
    """Wait up to ``within`` seconds for ``process`` to exit (and reap it); say whether it did."""
    with anyio.move_on_after(within):
        await process.wait()
        return True
    return False


async def _shielded(function: Callable[[], Awaitable[_T]]) -> _T:
    """Await ``function()`` shielded from cancellation: once started, it completes."""
    with anyio.CancelScope(shield=True):
        return await function()
    # Only cancel() on this very scope could end up here, and nothing calls it.
    raise AssertionError("a shielded scope was cancelled")  # pragma: no cover


def _check_text(field: str, value: object, fix: str) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError(field, f"expected a non-empty str, got {value!r}", fix)


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


def _make_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


def _open_log(log_dir: Path, instance_id: str) -> tuple[IO[bytes], Path]:
    # The pid is known only once the process runs: write under a unique name, rename after.
    path = log_dir / f"{instance_id}-starting-{secrets.token_hex(4)}.log"
    return path.open("xb"), path


def _close_log(log: tuple[IO[bytes], Path], final: Path | None) -> None:
    file, path = log
    file.close()
    if final is None:
        path.unlink(missing_ok=True)
    else:
        path.replace(final)

"""The factories of rolling's own plugins, registered in its ``pyproject.toml``.

Each turns the plain values of a rollout file's table into the adapter's
arguments (a command template into a ``command`` function, tables into
``SSHHost`` objects, ...). The adapters are imported inside the factories,
because loading one entry point must not import every adapter and its extra
(asyncssh for SSH).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncGenerator, Generator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import anyio
import anyio.to_thread

from rolling import ConfigError

from ._registry import planning

if TYPE_CHECKING:
    from rolling.drivers.process import ProcessDriver, ProcessInstance
    from rolling.testing import SimulatedFleet

__all__ = [
    "balancer",
    "haproxy",
    "http_check",
    "process_driver",
    "simulated_fleet",
    "ssh_driver",
    "tcp_check",
]


def _command_template(command: object) -> list[str]:
    if (
        not isinstance(command, list)
        or not command
        or not all(isinstance(arg, str) for arg in command)  # pyright: ignore[reportUnknownVariableType]
    ):
        raise ConfigError(
            "command",
            f"expected a non-empty list of strings, got {command!r}",
            'write command = ["./serve", "--version", "{version}", "--port", "{port}"]',
        )
    return [str(arg) for arg in command]  # pyright: ignore[reportUnknownArgumentType, reportUnknownVariableType]


def _check_text(field: str, value: object, example: str) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError(field, f"expected a non-empty string, got {value!r}", f"write {example}")


def process_driver(
    *,
    command: list[str],
    instances: int = 0,
    version: str = "v1",
    state_file: str | None = None,
    log_dir: str | None = None,
    grace: float = 5.0,
    host: str = "127.0.0.1",
    env: Mapping[str, str] | None = None,
    id_prefix: str = "p",
    keep_on_exit: bool | None = None,
) -> contextlib.AbstractAsyncContextManager[ProcessDriver | _PlannedProcesses]:
    """``process``: local processes (:class:`~rolling.drivers.process.ProcessDriver`).

    ``command`` is the argument vector, in which ``{version}`` and ``{port}``
    are replaced (no shell). When the fleet is empty once the driver is
    entered (no ``state_file``, or one that lists no running process),
    ``instances`` processes of ``version`` are started first: the fleet a
    first deployment creates. With a ``state_file`` the processes outlive the
    run, and the next run adopts them.
    """
    from rolling.drivers.process import ProcessDriver  # noqa: PLC0415 - see the module docstring
    from rolling.validate import check_int  # noqa: PLC0415 - as above

    template = _command_template(command)
    check_int("instances", instances, minimum=0)
    _check_text("version", version, '"v1"')
    # Named here as the file writes them: Path() of a number is a TypeError with no key.
    if log_dir is not None:
        _check_text("log_dir", log_dir, 'log_dir = "logs"')
    if state_file is not None:
        _check_text("state_file", state_file, 'state_file = "fleet.json"')

    def build(version: str, port: int) -> list[str]:
        return [arg.replace("{version}", version).replace("{port}", str(port)) for arg in template]

    driver = ProcessDriver(
        build,
        grace=grace,
        host=host,
        env=env,
        log_dir=None if log_dir is None else Path(log_dir),
        id_prefix=id_prefix,
        state_file=None if state_file is None else Path(state_file),
        keep_on_exit=keep_on_exit,
    )

    @contextlib.asynccontextmanager
    async def running() -> AsyncGenerator[ProcessDriver | _PlannedProcesses]:
        if planning():  # entering would lock and write the state file: only read it
            yield _PlannedProcesses(None if state_file is None else Path(state_file))
            return
        async with driver:
            if instances and not await driver.list_instances():
                await driver.spawn(instances, version)
            yield driver

    return running()


class _PlannedProcesses:
    """The ``process`` driver as ``rolling plan`` sees it: its state file's fleet, read only.

    Entered, the driver itself adopts the fleet: it locks the state file (creating
    ``<state_file>.lock``) and writes it back. This reads the file and the processes it
    lists and changes nothing, even while a run holds the lock. It has the driver's
    methods for a Rollout to check; a plan calls only :meth:`list_instances`.
    """

    def __init__(self, state_file: Path | None) -> None:
        self.state_file = state_file

    async def list_instances(self) -> list[ProcessInstance]:
        """The processes the state file lists, as the driver would adopt them."""
        from rolling.drivers.process import ProcessInstance  # noqa: PLC0415 - see the module docstring
        from rolling.drivers.process._proc import find_processes  # noqa: PLC0415 - as above
        from rolling.drivers.process._state import read_state  # noqa: PLC0415 - as above

        if self.state_file is None:
            return []
        read = functools.partial(read_state, self.state_file, tidy=False)
        entries, _ = await anyio.to_thread.run_sync(read)
        found = await anyio.to_thread.run_sync(find_processes, entries)
        listed: list[ProcessInstance] = []
        for entry in entries:
            located = found.get(entry.id)
            if located is not None:
                pid, _, version = located
            elif entry.pid is not None:  # its process is gone: listed, as the driver does
                pid, version = entry.pid, entry.version
            else:
                continue  # a launch that never began: nobody knows it
            listed.append(
                ProcessInstance(
                    id=entry.id, version=version, host=entry.host, port=entry.port, pid=pid
                )
            )
        return listed

    async def replace(self, _instance: object, _version: str) -> None:
        """Never called by a plan."""
        raise _planned_error()

    async def launch(self, _version: str) -> None:
        """Never called by a plan."""
        raise _planned_error()

    async def terminate(self, _instance: object) -> None:
        """Never called by a plan."""
        raise _planned_error()


def _planned_error() -> Exception:
    from rolling.drivers.process import ProcessDriverError  # noqa: PLC0415 - see the module docstring

    return ProcessDriverError("`rolling plan` changes nothing: no process is replaced or started")


def ssh_driver(
    *,
    hosts: Sequence[Mapping[str, Any]],
    commands: Mapping[str, Any],
    known_hosts: str | None = None,
    host_keys: Mapping[str, str] | None = None,
    client_keys: Sequence[str] | None = None,
    concurrency: int = 10,
    connect_timeout: float = 10.0,
    command_timeout: float = 60.0,
    redact: Sequence[str] = (),
) -> Any:
    """``ssh``: hosts over SSH (:class:`~rolling.drivers.ssh.SSHDriver`, extra ``rolling[ssh]``).

    ``hosts`` is an array of tables with the fields of
    :class:`~rolling.drivers.ssh.SSHHost`; ``commands`` a table with those of
    :class:`~rolling.drivers.ssh.SSHCommands`. Host keys are always verified
    (``~/.ssh/known_hosts`` unless ``known_hosts`` or ``host_keys`` says).
    """
    from rolling.drivers.ssh import SSHCommands, SSHDriver, SSHHost  # noqa: PLC0415 - see the module docstring

    try:
        built_hosts = [SSHHost(**dict(host)) for host in hosts]
        built_commands = SSHCommands(**dict(commands))
    except TypeError as exc:
        raise ConfigError("hosts", str(exc), "use the fields of SSHHost and SSHCommands") from exc
    extra: dict[str, Any] = {}
    if known_hosts is not None:
        extra["known_hosts"] = known_hosts
    return SSHDriver(
        built_hosts,
        built_commands,
        host_keys=host_keys,
        client_keys=client_keys,
        concurrency=concurrency,
        connect_timeout=connect_timeout,
        command_timeout=command_timeout,
        redact=redact,
        **extra,
    )


def simulated_fleet(
    *,
    instances: int = 3,
    version: str = "v1",
    zones: Sequence[str] = ("a",),
    seed: int = 0,
    latency: Mapping[str, float] | None = None,
    faults: Sequence[Mapping[str, Any]] = (),
) -> SimulatedFleet:
    """``simulated``: an in-memory :class:`~rolling.testing.SimulatedFleet`, for trying files.

    ``latency`` takes the fields of :class:`~rolling.testing.Latency`
    (seconds, on the real clock under ``rolling run``); each table of
    ``faults`` takes ``instance_id`` and/or ``version`` and the fields of
    :class:`~rolling.testing.Fault`. The fleet lives as long as the command.
    """
    from rolling.testing import Fault, Latency, SimulatedFleet  # noqa: PLC0415 - see the module docstring
    from rolling.validate import check_int  # noqa: PLC0415 - as above

    check_int("instances", instances, minimum=0)  # named as the file names it
    # Each error names its key as the file writes it (latency.replace, faults), not as the
    # class does (Latency.replace), which the loader would read as driver.replace.
    with _named("latency", "use the fields of Latency"):
        timing = None if latency is None else Latency(**dict(latency))
    with _named("zones", "list zone names"):
        fleet = SimulatedFleet(
            instances, version=version, zones=_as_tuple(zones), seed=seed, latency=timing
        )
    with _named("faults", "use instance_id, version and the fields of Fault"):
        for entry in faults:
            fields = dict(entry)
            instance_id = fields.pop("instance_id", None)
            on_version = fields.pop("version", None)
            fleet.inject(Fault(**fields), instance_id=instance_id, version=on_version)
    return fleet


def _as_tuple(value: object) -> Any:
    """A list from the file as a tuple; a str or anything else as it is, for the check."""
    return tuple(cast("list[object]", value)) if isinstance(value, list) else value


@contextlib.contextmanager
def _named(key: str, fix: str) -> Generator[None]:
    """Errors of the block as a ConfigError naming ``key`` (and a field of its table)."""
    try:
        yield
    except ConfigError as exc:
        field = exc.field.rsplit(".", 1)[-1]
        name = key if field == key else f"{key}.{field}"
        raise ConfigError(name, exc.problem, exc.fix) from exc
    except (TypeError, ValueError) as exc:
        raise ConfigError(key, str(exc), fix) from exc


def balancer(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    drain_timeout: float = 30.0,
    connect_timeout: float = 5.0,
    retries: int = 0,
) -> Any:
    """``balancer``: rolling's loopback TCP balancer (:class:`~rolling.routers.balancer.Balancer`).

    It listens only while ``rolling run`` runs: for trying files and for
    single-host setups where the command stays up.
    """
    from rolling.routers.balancer import Balancer  # noqa: PLC0415 - see the module docstring

    return Balancer(
        host=host,
        port=port,
        drain_timeout=drain_timeout,
        connect_timeout=connect_timeout,
        retries=retries,
    )


def haproxy(
    *,
    socket: str | Sequence[str | int],
    backend: str = "app",
    drain_timeout: float = 30.0,
    up_timeout: float = 30.0,
    poll_interval: float = 0.5,
    command_timeout: float = 5.0,
) -> Any:
    """``haproxy``: HAProxy's Runtime API (:class:`~rolling.routers.haproxy.HAProxyRouter`).

    ``socket`` is the path of a unix stats socket or ``["host", port]``; each
    instance is the server named by its id in ``backend``.
    """
    from rolling.routers.haproxy import HAProxyRouter  # noqa: PLC0415 - see the module docstring

    where: Any = socket if isinstance(socket, str) else tuple(socket)
    return HAProxyRouter(
        where,
        server=lambda instance: (backend, instance.id),
        drain_timeout=drain_timeout,
        up_timeout=up_timeout,
        poll_interval=poll_interval,
        command_timeout=command_timeout,
    )


def http_check(
    *,
    path: str = "/healthz",
    timeout: float = 2.0,
    expect_status: Sequence[int] | None = None,
    body: str | None = None,
    host_header: str | None = None,
    tls: bool = False,
) -> Any:
    """``http``: :class:`~rolling.checks.HTTPCheck` (``expect_status`` default: any 2xx)."""
    from rolling.checks import HTTPCheck  # noqa: PLC0415 - see the module docstring

    _check_status_list(expect_status)
    if expect_status is None:
        return HTTPCheck(path, timeout=timeout, body=body, host_header=host_header, tls=tls)
    return HTTPCheck(
        path,
        timeout=timeout,
        expect_status=tuple(expect_status),
        body=body,
        host_header=host_header,
        tls=tls,
    )


def _check_status_list(value: object) -> None:
    """``expect_status`` as a file writes it: a list of ints (HTTPCheck checks their range)."""
    if value is None:
        return
    items = cast("list[object]", value) if isinstance(value, list) else []
    if not items or not all(isinstance(i, int) and not isinstance(i, bool) for i in items):
        raise ConfigError(
            "expect_status",
            f"expected a non-empty list of status codes, got {value!r}",
            "write expect_status = [200, 204]: a list of ints, not strings",
        )


def tcp_check(*, timeout: float = 1.0) -> Any:
    """``tcp``: :class:`~rolling.checks.TCPCheck`."""
    from rolling.checks import TCPCheck  # noqa: PLC0415 - see the module docstring

    return TCPCheck(timeout=timeout)

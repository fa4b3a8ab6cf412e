"""Hosts for SSH tests: network namespaces on a bridge, each with a real sshd.

A :class:`NetnsLab` makes, in the root network namespace, a bridge with the
address ``<subnet>.1/24``, and for each host ``i`` (from 1) a namespace with a
veth pair: one end on the bridge, the other (``eth0``) inside the namespace with
the address ``<subnet>.<10 + i>/24``; ``<subnet>`` is ``10.231.0`` unless
another lab (of this run or a concurrent one) holds it. In each namespace runs
``/usr/sbin/sshd -D`` listening on that address, port 22, with its own host
key, logging in ``root`` with the lab's client key. Every host has a work
directory holding ``VERSION`` (``v1`` at the start); :meth:`NetnsLab.commands`
are templates that run :mod:`rolling.demo.app` from it on port 8000, so the
app answers on ``http://<subnet>.<10 + i>:8000`` from the root namespace::

    @pytest.fixture
    def lab(tmp_path: Path) -> Iterator[NetnsLab]:
        require_netns()  # skip (or fail, on CI) without root, ip or sshd
        yield from open_lab(4, tmp_path)

    async def test_fleet(lab: NetnsLab) -> None:  # on asyncio only: asyncssh needs it
        async with lab.driver(command_timeout=5) as driver:
            fleet = await driver.list_instances()

Names carry this process's id (``rl-<pid>-<n>-h<i>`` namespaces, ``rb<pid>-<n>``
bridges, ``rv<pid>-<n>-<i>`` veths), so a crashed run's leftovers can be told
from a live run's: :func:`sweep_stale` removes those of processes that no
longer exist. :meth:`NetnsLab.close` removes everything the lab made (every
process in its namespaces is killed first), also after a failed start.

It needs root, ``ip`` (iproute2), ``sshd`` and ``ssh-keygen`` (openssh-server,
openssh-client) and ``ps`` (procps).

This is a helper module for tests, imported by them; it is not a conftest.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import attrs
import pytest

from rolling.drivers.ssh import SSHCommands, SSHDriver, SSHHost

__all__ = [
    "APP_PORT",
    "INSTALL_HINT",
    "NetnsHost",
    "NetnsLab",
    "missing_tools",
    "namespaces",
    "open_lab",
    "require_netns",
    "sweep_stale",
]

SSHD = "/usr/sbin/sshd"
APP_PORT = 8000
INSTALL_HINT = (
    "run as root with iproute2, openssh-server, openssh-client and procps installed"
    " (apt-get install iproute2 openssh-server openssh-client procps) and"
    " pip install 'rolling[ssh]'"
)
_START_TIMEOUT = 10.0
_STALE_NAME = re.compile(r"^(?:rl-(\d+)-\d+-h\d+|rb(\d+)-\d+|rv(\d+)-\d+-\d+)$")
_IFNAMSIZ = 15
_labs = itertools.count(1)


def missing_tools() -> list[str]:
    """What this machine lacks to run a lab (empty when nothing)."""
    missing = [tool for tool in ("ip", "ssh-keygen", "ps") if shutil.which(tool) is None]
    if not Path(SSHD).exists():
        missing.append(SSHD)
    if os.geteuid() != 0:
        missing.append("root")
    return missing


def require_netns() -> None:
    """Skip the calling test (fail it on CI, with CI=true) unless labs can run; sweep stale ones.

    Call it from a fixture, before :func:`open_lab`.
    """
    missing = missing_tools()
    if missing:
        message = f"SSH tests need {', '.join(missing)}: {INSTALL_HINT}"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    sweep_stale()  # what crashed runs left behind


def open_lab(count: int, root: Path, **options: Any) -> Iterator[NetnsLab]:
    """Yield a started lab of ``count`` hosts, then remove it and check nothing is left.

    For fixtures: ``yield from open_lab(4, tmp_path)``. ``options`` go to :class:`NetnsLab`.
    """
    lab = NetnsLab(count, root=root, **options)
    try:
        with lab:
            yield lab
    finally:
        assert lab.leftovers() == [], "the lab left namespaces or links behind"


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - argument lists built here, no shell
        argv, capture_output=True, text=True, check=check, timeout=30
    )


def namespaces() -> list[str]:
    """Names of every network namespace on the machine."""
    return [line.split()[0] for line in _run("ip", "netns", "list").stdout.splitlines() if line]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_namespace_processes(namespace: str) -> None:
    """SIGKILL every process in ``namespace`` and wait (briefly) until they are gone."""
    listing = _run("ip", "netns", "pids", namespace, check=False)
    pids = [int(pid) for pid in listing.stdout.split()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while (
        time.monotonic() < deadline
        and _run("ip", "netns", "pids", namespace, check=False).stdout.strip()
    ):
        time.sleep(0.02)


def _delete_namespace(namespace: str) -> None:
    _kill_namespace_processes(namespace)
    _run("ip", "netns", "del", namespace, check=False)


def _delete_link(name: str) -> None:
    if _run("ip", "link", "show", name, check=False).returncode == 0:
        _run("ip", "link", "del", name, check=False)


def sweep_stale() -> list[str]:
    """Remove namespaces, bridges and veths left by labs of processes that no longer run.

    Returns the names removed. Those of live processes (this one included) are
    left alone, so concurrent runs do not disturb each other.
    """
    removed: list[str] = []
    links = [
        line.split(":")[1].strip().split("@")[0]
        for line in _run("ip", "-o", "link", "show").stdout.splitlines()
        if line.count(":") >= 2  # "<index>: <name>: <flags> ..."
    ]
    for name in namespaces() + links:
        match = _STALE_NAME.match(name)
        if match is None:
            continue
        pid = int(next(group for group in match.groups() if group is not None))
        if _alive(pid):
            continue
        if name.startswith("rl-"):
            _delete_namespace(name)
        else:
            _delete_link(name)
        removed.append(name)
    return removed


@attrs.frozen(kw_only=True)
class NetnsHost:
    """One namespace host of a lab.

    Attributes:
        name: The host's name, ``h1``, ``h2``, ...: the instance id.
        namespace: The network namespace.
        address: Its IP address, where sshd and the app listen.
        veth: The veth end inside the namespace (``eth0``).
        bridge_port: The veth end on the bridge, in the root namespace.
        workdir: Its directory: VERSION, app.pid, app.log, sshd files.
        host_key: Its sshd's public host key, ``ssh-ed25519 AAAA...``.
    """

    name: str
    namespace: str
    address: str
    veth: str
    bridge_port: str
    workdir: Path
    host_key: str

    @property
    def sshd_log(self) -> Path:
        """Where its sshd logs (``-E``)."""
        return self.workdir / "sshd.log"


class NetnsLab:
    """``count`` namespace hosts with sshd, on one bridge; see the module docstring.

    Args:
        count: How many hosts (1 to 50).
        root: A directory for keys, configs and work directories (a
            ``tmp_path``); sshd reads it, so it must be on a local disk.
        subnet: The first three octets of the /24 the lab uses, such as
            ``"10.231.0"``. None takes the first free one from ``10.231.0``
            to ``10.231.63``: a lab holds a lock on its subnet (a ``flock`` on
            a file in ``/run/lock``) while it lives, so labs of concurrent
            test runs never share one.
        version: What every host's VERSION file holds at the start.
    """

    def __init__(
        self, count: int, *, root: Path, subnet: str | None = None, version: str = "v1"
    ) -> None:
        if not 1 <= count <= 50:  # addresses .11 to .60
            raise ValueError(f"count must be from 1 to 50, got {count}")
        self.count = count
        self.root = root
        self.initial_version = version
        self._lock: IO[bytes] | None = None
        self.subnet = self._claim_subnet(subnet)
        tag = f"{os.getpid()}-{next(_labs)}"
        self.bridge = f"rb{tag}"
        self.bridge_address = f"{self.subnet}.1"
        self._tag = tag
        self.hosts: list[NetnsHost] = []
        self._namespaces: list[str] = []
        self._links: list[str] = []
        self._sshd: list[subprocess.Popen[bytes]] = []
        self.client_key = root / "client_key"
        self.known_hosts = root / "known_hosts"
        self.authorized_keys = root / "authorized_keys"

    # ---------------------------------------------------------------- lifecycle

    def _claim_subnet(self, wanted: str | None) -> str:
        candidates = [wanted] if wanted is not None else [f"10.231.{i}" for i in range(64)]
        in_use = _run("ip", "-o", "-4", "addr", "show").stdout
        lock_dir = Path("/run/lock") if Path("/run/lock").is_dir() else Path("/tmp")  # noqa: S108 - lock files only
        for subnet in candidates:
            if f" {subnet}." in in_use:
                continue
            lock = (lock_dir / f"rolling-netns-{subnet}.lock").open("ab")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                continue
            self._lock = lock
            return subnet
        raise RuntimeError(f"no free subnet among {candidates[0]} to {candidates[-1]}")

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        """Make the bridge, the namespaces and the keys, and start every sshd."""
        self.root.mkdir(parents=True, exist_ok=True)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        _run(
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "rolling-tests",
            "-f",
            str(self.client_key),
        )
        self.authorized_keys.write_text(self.client_key.with_suffix(".pub").read_text())
        self._add_link(self.bridge)
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{self.bridge_address}/24", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        for index in range(1, self.count + 1):
            self.hosts.append(self._make_host(index))
        self.known_hosts.write_text(
            "".join(f"{host.address} {host.host_key}\n" for host in self.hosts)
        )
        for host in self.hosts:
            self._wait_for_sshd(host)

    def _add_link(self, name: str) -> None:
        if len(name) > _IFNAMSIZ:
            raise ValueError(f"interface name {name!r} is longer than {_IFNAMSIZ} characters")
        self._links.append(name)

    def _make_host(self, index: int) -> NetnsHost:
        name = f"h{index}"
        namespace = f"rl-{self._tag}-{name}"
        address = f"{self.subnet}.{10 + index}"
        bridge_port = f"rv{self._tag}-{index}"
        workdir = self.root / name
        workdir.mkdir()
        (workdir / "VERSION").write_text(self.initial_version)
        key = workdir / "ssh_host_ed25519_key"
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key))
        host_key = " ".join(key.with_suffix(".pub").read_text().split()[:2])

        self._namespaces.append(namespace)
        _run("ip", "netns", "add", namespace)
        self._add_link(bridge_port)
        _run(
            "ip",
            "link",
            "add",
            bridge_port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            namespace,
        )
        _run("ip", "link", "set", bridge_port, "master", self.bridge, "up")
        inside = ("ip", "netns", "exec", namespace)
        _run(*inside, "ip", "link", "set", "lo", "up")
        _run(*inside, "ip", "addr", "add", f"{address}/24", "dev", "eth0")
        _run(*inside, "ip", "link", "set", "eth0", "up")

        config = workdir / "sshd_config"
        config.write_text(
            f"ListenAddress {address}\n"
            "Port 22\n"
            f"HostKey {key}\n"
            f"PidFile {workdir / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {self.authorized_keys}\n"
            "PermitRootLogin prohibit-password\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            "StrictModes no\n"
            "UseDNS no\n"
            "LogLevel INFO\n"
            "MaxStartups 100\n"
            "MaxSessions 50\n"
        )
        host = NetnsHost(
            name=name,
            namespace=namespace,
            address=address,
            veth="eth0",
            bridge_port=bridge_port,
            workdir=workdir,
            host_key=host_key,
        )
        self._sshd.append(
            subprocess.Popen(  # noqa: S603 - a fixed argv, no shell
                [*inside, SSHD, "-D", "-f", str(config), "-E", str(host.sshd_log)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        return host

    def _wait_for_sshd(self, host: NetnsHost) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        process = self._sshd[self.hosts.index(host)]
        while True:
            if process.poll() is not None:
                log = host.sshd_log.read_text() if host.sshd_log.exists() else ""
                raise RuntimeError(f"sshd of {host.name} exited with {process.returncode}: {log}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection((host.address, 22), timeout=0.5),
            ):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"sshd of {host.name} is not listening on {host.address}:22")
            time.sleep(0.02)

    def close(self) -> None:
        """Kill every process in the lab's namespaces, delete them, the veths and the bridge."""
        for namespace in self._namespaces:
            _kill_namespace_processes(namespace)
        for process in self._sshd:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)
        for namespace in self._namespaces:
            _run("ip", "netns", "del", namespace, check=False)
        for link in reversed(self._links):
            _delete_link(link)
        self._namespaces.clear()
        self._links.clear()
        self._sshd.clear()
        if self._lock is not None:
            self._lock.close()  # releases the subnet
            self._lock = None

    def leftovers(self) -> list[str]:
        """Names of this lab's namespaces and links that still exist (empty after close)."""
        namespaces = _run("ip", "netns", "list").stdout
        links = _run("ip", "-o", "link", "show").stdout
        return [
            name
            for name in [f"rl-{self._tag}-", f"rb{self._tag}", f"rv{self._tag}-"]
            if name in namespaces or name in links
        ]

    # ------------------------------------------------------------------ driving

    def ssh_hosts(self, *, labels: Mapping[str, str] | None = None) -> list[SSHHost]:
        """The hosts as :class:`SSHHost`, app on port 8000, with ``dir`` and ``python`` labels."""
        return [
            SSHHost(
                name=host.name,
                address=host.address,
                app_port=APP_PORT,
                labels={"dir": str(host.workdir), "python": sys.executable, **(labels or {})},
            )
            for host in self.hosts
        ]

    @staticmethod
    def commands(*, deploy: str | None = None, startup_delay: float = 0.2) -> SSHCommands:
        """Templates that run :mod:`rolling.demo.app` from each host's ``dir``.

        ``deploy`` replaces the default, which writes ``{version}`` to VERSION.
        """
        return SSHCommands(
            probe="cat {dir}/VERSION",
            stop=(
                "cd {dir} && if [ -f app.pid ]; then pid=$(cat app.pid);"
                ' kill "$pid" 2>/dev/null;'
                # Until it is gone or a zombie (nothing may reap it in a container).
                ' while ps -o stat= -p "$pid" | grep -qv Z; do sleep 0.05; done;'
                " rm -f app.pid; fi"
            ),
            deploy=deploy or "cd {dir} && printf %s {version} > VERSION",
            start=(
                # Braces: only the app goes to the background, not the `cd && ...` list,
                # whose subshell would hold the session's stdout open (and the command).
                "cd {dir} && {{ setsid nohup {python} -m rolling.demo.app"
                ' --version "$(cat VERSION)" --port {port} --host {host}'
                f" --startup-delay {startup_delay} --latency-ms 5"
                " </dev/null >>app.log 2>&1 & echo $! > app.pid; }}"
            ),
        )

    def driver(
        self,
        commands: SSHCommands | None = None,
        *,
        hosts: Sequence[SSHHost] | None = None,
        **options: Any,
    ) -> SSHDriver:
        """An :class:`SSHDriver` for the lab: its known_hosts and client key, verification on."""
        options.setdefault("known_hosts", self.known_hosts)
        options.setdefault("client_keys", [self.client_key])
        return SSHDriver(
            self.ssh_hosts() if hosts is None else hosts,
            self.commands() if commands is None else commands,
            **options,
        )

    def host(self, name: str) -> NetnsHost:
        """The host named ``name``."""
        return next(host for host in self.hosts if host.name == name)

    def link_down(self, name: str) -> None:
        """Cut the host off the network: its ``eth0`` goes down, inside its namespace."""
        host = self.host(name)
        _run("ip", "netns", "exec", host.namespace, "ip", "link", "set", host.veth, "down")

    def link_up(self, name: str) -> None:
        """Undo :meth:`link_down`."""
        host = self.host(name)
        _run("ip", "netns", "exec", host.namespace, "ip", "link", "set", host.veth, "up")

    def logins(self, name: str) -> int:
        """How many SSH logins the host's sshd accepted so far."""
        log = self.host(name).sshd_log
        return log.read_text().count("Accepted publickey") if log.exists() else 0

    def version_file(self, name: str) -> str:
        """What the host's VERSION file holds."""
        return (self.host(name).workdir / "VERSION").read_text()

    def processes(self) -> Iterator[tuple[str, int]]:
        """``(namespace, pid)`` of every process running in the lab's namespaces."""
        for namespace in self._namespaces:
            for pid in _run("ip", "netns", "pids", namespace, check=False).stdout.split():
                yield namespace, int(pid)

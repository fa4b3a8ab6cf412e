"""A real etcd cluster on loopback for tests and benchmarks: members we can kill and restart.

:class:`Cluster` starts ``size`` members (Debian's ``etcd-server``) on free
loopback ports with data directories under a given root, each in a session of
its own (``setsid``) so that a test's process-group kill never takes one down
by accident. :meth:`Cluster.stop` SIGKILLs every member it started.

``require_etcd()`` finds the binary; without one a test fails under CI
(``CI=true``) and is skipped elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Generator
from pathlib import Path

import attrs
import pytest

__all__ = ["Cluster", "Member", "require_etcd", "running_cluster"]

INSTALL_HINT = "install etcd 3.4 or later: `apt-get install -y etcd-server etcd-client`"


def require_etcd() -> str:
    """The ``etcd`` binary; without one, fail under CI (``CI=true``) and skip elsewhere."""
    found = shutil.which("etcd")
    if found is not None:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail(f"etcd is not installed; {INSTALL_HINT} (.ci/run does)")
    pytest.skip(f"etcd is not installed; {INSTALL_HINT}")


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 just now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@attrs.define
class Member:
    """One etcd member: its name, ports, data directory and process (None while down)."""

    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"


@attrs.define
class Cluster:
    """A running cluster; see the module docstring."""

    binary: str
    members: list[Member]
    token: str

    @property
    def endpoints(self) -> list[str]:
        """Every member's client address, ``host:port``."""
        return [f"127.0.0.1:{m.client_port}" for m in self.members]

    def start_member(self, member: Member, *, state: str = "new") -> None:
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        argv = [self.binary, "--name", member.name, "--data-dir", str(member.data_dir)]
        argv += ["--listen-client-urls", member.client_url]
        argv += ["--advertise-client-urls", member.client_url]
        argv += ["--listen-peer-urls", member.peer_url]
        argv += ["--initial-advertise-peer-urls", member.peer_url]
        argv += ["--initial-cluster", initial, "--initial-cluster-state", state]
        argv += ["--initial-cluster-token", self.token]
        # Short heartbeats: a lost leader is replaced in about half a second, not a few seconds.
        argv += ["--heartbeat-interval", "50", "--election-timeout", "500"]
        with member.log.open("ab") as log:
            member.process = subprocess.Popen(  # noqa: S603 - our own argv
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def kill(self, member: Member) -> None:
        """SIGKILL ``member`` (its data stays, so :meth:`restart` brings it back)."""
        process, member.process = member.process, None
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGKILL)
            process.wait()

    def restart(self, member: Member) -> None:
        """Start a killed member again on its data directory."""
        self.start_member(member, state="existing")

    def leader(self) -> Member:
        """The member that is leader now (asked of each live member in turn)."""
        etcdctl = shutil.which("etcdctl") or "etcdctl"
        live = [m for m in self.members if m.process is not None]
        endpoints = ",".join(m.client_url for m in live)
        out = subprocess.run(  # noqa: S603 - our own argv
            [etcdctl, "--endpoints", endpoints, "endpoint", "status", "-w", "json"],
            capture_output=True,
            check=True,
            timeout=10,
            env={**os.environ, "ETCDCTL_API": "3"},
        ).stdout.decode()
        for entry in json.loads(out):
            status = entry["Status"]
            if status["leader"] == status["header"]["member_id"]:
                return next(m for m in live if m.client_url == entry["Endpoint"])
        raise AssertionError(f"no leader among {endpoints}: {out}")

    def healthy(self, within: float = 15.0) -> None:
        """Wait until every live member answers as healthy."""
        etcdctl = shutil.which("etcdctl") or "etcdctl"
        endpoints = ",".join(m.client_url for m in self.members if m.process is not None)
        deadline = time.monotonic() + within
        while True:
            done = subprocess.run(  # noqa: S603 - our own argv
                [etcdctl, "--endpoints", endpoints, "endpoint", "health"],
                capture_output=True,
                check=False,
                timeout=10,
                env={**os.environ, "ETCDCTL_API": "3"},
            )
            if done.returncode == 0:
                return
            if time.monotonic() > deadline:
                logs = "".join(m.log.read_text()[-2000:] for m in self.members)
                raise AssertionError(f"etcd never became healthy: {done.stderr!r}\n{logs}")
            time.sleep(0.05)

    def stop(self) -> None:
        for member in self.members:
            self.kill(member)


@contextlib.contextmanager
def running_cluster(root: Path, size: int = 3) -> Generator[Cluster]:
    """Start a ``size``-member cluster under ``root``; kill every member on the way out."""
    binary = require_etcd()
    root.mkdir(parents=True, exist_ok=True)
    ports = free_ports(2 * size)
    members = [
        Member(
            name=f"m{index}",
            client_port=ports[2 * index],
            peer_port=ports[2 * index + 1],
            data_dir=root / f"m{index}",
            log=root / f"m{index}.log",
        )
        for index in range(size)
    ]
    cluster = Cluster(binary=binary, members=members, token=f"rolling-{os.getpid()}-{ports[0]}")
    try:
        for member in members:
            cluster.start_member(member)
        cluster.healthy()
        yield cluster
    finally:
        cluster.stop()

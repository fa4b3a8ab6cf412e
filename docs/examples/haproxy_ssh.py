"""Roll a fleet of servers behind HAProxy to a new version, over SSH.

Usage: ``python haproxy_ssh.py v2``. Adapt HOSTS, COMMANDS, HAPROXY_SOCKET and KNOWN_HOSTS
to your fleet; the guide (docs/haproxy-ssh.md) explains every part.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio

import rolling
import rolling.typing
from rolling.checks import HTTPCheck
from rolling.drivers.ssh import SSHCommands, SSHDriver, SSHHost, SSHInstance
from rolling.routers.haproxy import HAProxyRouter, Socket

# One SSHHost per `server` line of the HAProxy backend: the name is the server's name (and the
# instance id), the address and app_port are what the server line points at.
HOSTS = [
    SSHHost(name="web-1", address="10.0.0.11", username="deploy", app_port=8000),
    SSHHost(name="web-2", address="10.0.0.12", username="deploy", app_port=8000),
    SSHHost(name="web-3", address="10.0.0.13", username="deploy", app_port=8000),
    SSHHost(name="web-4", address="10.0.0.14", username="deploy", app_port=8000),
]

# Each field ({version}, {id}, {host}, {port}, or a label key) is quoted with shlex.quote when
# the command is built: write it as a bare word, never inside quotes.
COMMANDS = SSHCommands(
    probe="cat /srv/app/VERSION 2>/dev/null || echo none",
    stop="sudo systemctl stop app",
    deploy="sudo /srv/app/bin/install {version} && printf %s {version} > /srv/app/VERSION",
    start="sudo systemctl start app",
)

# HAProxy's Runtime API at `level admin` (see the haproxy.cfg in the guide).
HAPROXY_SOCKET = "/run/haproxy/admin.sock"

# The hosts' public keys, obtained out of band. A host whose key is not here is refused.
KNOWN_HOSTS = Path("~/.ssh/known_hosts")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Timeouts:
    """Every time limit of the rollout, in seconds; each one bounds a wait that could hang."""

    connect: float = 10.0
    """To connect and log in to a host over SSH."""
    command: float = 300.0
    """For one SSH command: set it above your slowest deploy."""
    drain: float = 30.0
    """For a server's sessions to end after HAProxy stops sending it new ones."""
    up: float = 30.0
    """For a host to pass the router's check, then (separately) for HAProxy to report it UP."""
    check: float = 2.0
    """For one GET /healthz."""
    ready: float = 60.0
    """For an updated host to become ready; past it, the host has failed."""
    poll: float = 1.0
    """Between two health probes, and between two looks at HAProxy's `show stat`."""


def build_driver(
    hosts: Sequence[SSHHost],
    commands: SSHCommands = COMMANDS,
    *,
    known_hosts: str | Path = KNOWN_HOSTS,
    client_keys: Sequence[str | Path] | None = None,
    timeouts: Timeouts = Timeouts(),
    observers: Sequence[rolling.typing.Observer] = (),
) -> SSHDriver:
    """The SSH driver: enter it with ``async with`` (it holds one connection per host)."""
    return SSHDriver(
        hosts,
        commands,
        known_hosts=known_hosts,
        client_keys=client_keys,  # None: the SSH agent and ~/.ssh/id_*
        connect_timeout=timeouts.connect,
        command_timeout=timeouts.command,
        observers=observers,
    )


def build_rollout(
    driver: SSHDriver,
    version: str,
    *,
    socket: Socket = HAPROXY_SOCKET,
    timeouts: Timeouts = Timeouts(),
    failure: rolling.FailurePolicy | None = None,
    rollback: rolling.RollbackMode = rolling.RollbackMode.REVERT,
    observers: Sequence[rolling.typing.Observer] = (),
) -> rolling.Rollout[SSHInstance]:
    """One host at a time: out of HAProxy, updated over SSH, ready, back into HAProxy."""
    health = HTTPCheck("/healthz", timeout=timeouts.check)
    router = HAProxyRouter(
        socket,  # server <host name> of backend "app"; pass server=... to map otherwise
        check=health,
        drain_timeout=timeouts.drain,
        up_timeout=timeouts.up,
        poll_interval=timeouts.poll,
    )
    return rolling.Rollout(
        driver,
        version,
        strategy=rolling.RollingUpdate(max_unavailable=1),
        readiness=rolling.Readiness(
            check=health, period=timeouts.poll, timeout=timeouts.check, deadline=timeouts.ready
        ),
        router=router,
        # No host may fail: the first failure puts every host this rollout changed back on
        # its old version (or, with rollback=HALT, stops and leaves the fleet as it is).
        failure=failure or rolling.FailurePolicy(max_failed=0),
        rollback=rollback,
        observers=observers,
    )


async def main() -> int:
    """Roll HOSTS to the version named on the command line; 0 when every host runs it."""
    parser = argparse.ArgumentParser(description="Roll the fleet behind HAProxy over SSH.")
    parser.add_argument("version", help="the version to deploy, such as v2")
    args = parser.parse_args()
    version: str = args.version
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    log = rolling.LoggingObserver()  # the rollout's events and every SSH command, one stream
    async with build_driver(HOSTS, observers=[log]) as driver:
        result = await build_rollout(driver, version, observers=[log]).run()
    print(f"{result.status}: {result.reason}" if result.reason else result.status)
    for host in result.instances:
        print(f"  {host.id}: {host.outcome}, on {host.version}, serving={host.serving}")
        if host.reason:
            print(f"    {host.reason}")
    return 0 if result.ok else 1


if __name__ == "__main__":
    # asyncssh runs on asyncio only.
    sys.exit(anyio.run(main, backend="asyncio"))

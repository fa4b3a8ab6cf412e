"""One controller of the kill sweep: a real rollout, in a process of its own, that may be killed.

``python controller.py --journal J --state S --balancer SOCK --target v2 [--broken]``
builds a :class:`~rolling.drivers.process.ProcessDriver` on the state file
``S`` (adopting whatever a dead controller left running), a
:class:`RemoteBalancerRouter` to the balancer daemon at ``SOCK``, and runs
``Rollout(driver, target, journal=FileJournal(J), ...)``: a fresh rollout, or
the rest of the one the journal holds. On stdout it prints what it adopted,
``running`` once it starts the rollout, one line per phase change
(``<time> <id> <phase> <version> <current id> [[reason]] [(rollback)]``, and
``<time> * rollback_started <reason>`` when a rollback starts), and the result
status as its last line; it exits 0. The fleet outlives it.

``--spawn N`` instead starts ``N`` processes of ``--target``, waits until they
answer their health check, attaches them, prints ``spawned`` and exits: the
initial fleet.

``--etcd ENDPOINTS --fleet NAME`` keeps the journal and the lock on etcd
instead (:class:`~rolling.EtcdJournal`, lease ``--ttl``): the controller prints
``standby``, waits up to ``--wait`` seconds for the lock, prints ``<time>
locked`` once it holds it, and only then builds its driver (which reads the
state file); with ``--gate PATH``, only once that file exists. It prints
``<time> call <op>:<id>`` before every driver and router call it makes, and
if it loses the lock, ``<time> lost the lock: ...`` and ``lost the lock`` as
its last line (exit status 3). With ``--fleet-daemon SOCK`` its driver is the
fleet daemon's (``fleet_daemon.py``) rather than a process driver of its own.

``--broken`` makes the target version never ready, so the rollout fails and
rolls back; with ``--broken-after N``, only once ``N`` other instances run the
target (read from the state file, so it holds across controllers), so that
the rollback has ``N`` instances to revert. Every app process carries
``ROLLING_KILLSWEEP=<--tag>`` in its environment, so the sweep can find every
one it ever started.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/, for killsweep.*

from killsweep.remote_fleet import RemoteFleet
from killsweep.remote_router import RemoteBalancerRouter
from rolling import (
    EtcdJournal,
    EtcdLock,
    Event,
    FileJournal,
    InstancePhaseChanged,
    Journal,
    LockLostError,
    Readiness,
    RollbackStarted,
    RollingUpdate,
    Rollout,
)
from rolling.checks import HTTPCheck
from rolling.demo import app
from rolling.drivers.process import ProcessDriver, ProcessInstance

STARTUP_DELAY = 0.3
LATENCY_MS = 10.0


def log(text: str) -> None:
    print(f"{time.monotonic():.3f} {text}", flush=True)  # noqa: T201 - the protocol


def observe(event: Event) -> None:
    if isinstance(event, InstancePhaseChanged):
        back = " (rollback)" if event.rollback else ""
        why = f" [{event.reason}]" if event.reason else ""
        log(
            f"{event.instance_id} {event.phase.value} {event.version} {event.current_id}{why}{back}"
        )
    elif isinstance(event, RollbackStarted):
        log(f"* rollback_started {event.reason}")


async def wait_healthy(check: HTTPCheck, instance: ProcessInstance) -> None:
    with anyio.fail_after(30):
        while not (await check.check(instance)).healthy:  # noqa: ASYNC110 - a real probe
            await anyio.sleep(0.05)


class LoggedRouter:
    """The daemon's router, printing each call before it is made."""

    def __init__(self, router: RemoteBalancerRouter) -> None:
        self.router = router

    async def attach(self, instance: ProcessInstance) -> None:
        log(f"call attach:{instance.id}")
        await self.router.attach(instance)

    async def detach(self, instance: ProcessInstance) -> None:
        log(f"call detach:{instance.id}")
        await self.router.detach(instance)


class LoggedDriver:
    """A driver, printing each call that changes the fleet before it is made."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver

    async def list_instances(self) -> Sequence[Any]:
        instances: Sequence[Any] = await self.driver.list_instances()
        return instances

    async def replace(self, instance: Any, version: str) -> Any:
        log(f"call replace:{instance.id}")
        return await self.driver.replace(instance, version)

    async def launch(self, version: str) -> Any:
        log("call launch:-")
        return await self.driver.launch(version)

    async def terminate(self, instance: Any) -> None:
        log(f"call terminate:{instance.id}")
        await self.driver.terminate(instance)


async def main(args: argparse.Namespace) -> str:
    journal: Journal
    if args.etcd:
        lock = EtcdLock(args.etcd.split(","), fleet=args.fleet, ttl=args.ttl, wait=args.wait)
        journal = EtcdJournal(lock=lock)
        print("standby", flush=True)  # noqa: T201 - the protocol
        # The lock first, the driver after: the driver reads the state file when it starts,
        # which only the controller holding the lock may trust.
        await lock.acquire()
        log("locked")
        if args.gate is not None:
            async with anyio.create_task_group() as tg:
                tg.start_soon(lock.hold)  # run() is not holding it yet
                while not args.gate.exists():  # noqa: ASYNC110 - a file the test creates
                    await anyio.sleep(0.02)  # the test lets it go on once its standby is ready
                tg.cancel_scope.cancel()
        try:
            return await run_rollout(args, journal)
        except LockLostError as exc:
            log(str(exc))
            return "lost the lock"
    return await run_rollout(args, FileJournal(args.journal))


async def run_rollout(args: argparse.Namespace, journal: Journal) -> str:
    target: str = args.target
    broken: bool = args.broken

    def command(version: str, port: int) -> Sequence[str]:
        never_ready = broken and version == target and on_target(port) >= args.broken_after
        return app.command(
            version,
            port,
            startup_delay=STARTUP_DELAY,
            latency_ms=LATENCY_MS,
            never_ready=never_ready,
        )

    def on_target(port: int) -> int:
        """Instances other than the one on ``port`` that run the target, as the state file says."""
        fleet: list[dict[str, Any]] = []
        if args.state.exists():
            fleet = json.loads(args.state.read_text())["instances"]
        return sum(1 for i in fleet if i["version"] == target and i["port"] != port)

    check = HTTPCheck("/healthz", timeout=0.5)
    router = RemoteBalancerRouter(args.balancer)
    if args.fleet_daemon is not None:
        remote = RemoteFleet(args.fleet_daemon, never_ready=target if broken else None)
        return await roll(args, LoggedDriver(remote), LoggedRouter(router), journal)
    async with ProcessDriver(
        command,
        grace=5.0,
        state_file=args.state,
        env={"ROLLING_KILLSWEEP": args.tag},
        log_dir=args.log_dir,
    ) as driver:
        adopted, dead = [i.id for i in driver.adopted], [i.id for i in driver.dead]
        log(f"adopted {adopted} dead {dead} dropped {list(driver.dropped)}")
        if args.spawn:
            fleet = await driver.spawn(args.spawn, target)
            async with anyio.create_task_group() as tg:
                for instance in fleet:
                    tg.start_soon(wait_healthy, check, instance)
            for instance in fleet:
                await router.attach(instance)
            return "spawned"
        if args.etcd is not None:
            return await roll(args, LoggedDriver(driver), LoggedRouter(router), journal)
        return await roll(args, driver, router, journal)


async def roll(args: argparse.Namespace, driver: Any, router: Any, journal: Journal) -> str:
    """Run (or resume) the rollout; return its status."""
    rollout: Rollout[Any] = Rollout(
        driver,
        args.target,
        strategy=RollingUpdate(max_unavailable=1),
        router=router,
        readiness=Readiness(
            check=HTTPCheck("/healthz", timeout=0.5),
            period=0.1,
            timeout=0.5,
            deadline=args.deadline,
        ),
        journal=journal,
        observers=[observe],
        effect_timeout=60.0,
    )
    print("running", flush=True)  # noqa: T201 - the protocol
    result = await rollout.run()
    log(f"result {result.status.value}: {result.reason}")
    return result.status.value


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--journal", type=Path, required=True)
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--balancer", type=Path, required=True, help="the daemon's control socket")
    parser.add_argument("--target", required=True)
    parser.add_argument("--broken", action="store_true", help="the target never becomes ready")
    parser.add_argument("--broken-after", type=int, default=0, help="with --broken: see above")
    parser.add_argument("--deadline", type=float, default=10.0, help="readiness deadline")
    parser.add_argument("--spawn", type=int, default=0, help="start this many instances instead")
    parser.add_argument("--tag", default="killsweep", help="ROLLING_KILLSWEEP for every app")
    parser.add_argument("--log-dir", type=Path, default=None)
    parser.add_argument("--etcd", default=None, help="etcd endpoints, comma-separated")
    parser.add_argument("--fleet", default="killsweep", help="with --etcd: the fleet's name")
    parser.add_argument("--ttl", type=int, default=2, help="with --etcd: the lock's lease")
    parser.add_argument("--wait", type=float, default=60.0, help="with --etcd: stand by this long")
    parser.add_argument("--fleet-daemon", type=Path, default=None, help="drive fleet_daemon.py")
    parser.add_argument("--gate", type=Path, default=None, help="with --etcd: see above")
    status = anyio.run(main, parser.parse_args())
    print(status, flush=True)  # noqa: T201 - the protocol: the status is the last line
    sys.exit(3 if status == "lost the lock" else 0)

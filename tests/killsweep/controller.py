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

from killsweep.remote_router import RemoteBalancerRouter
from rolling import (
    Event,
    FileJournal,
    InstancePhaseChanged,
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


async def main(args: argparse.Namespace) -> str:
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
        rollout: Rollout[ProcessInstance] = Rollout(
            driver,
            target,
            strategy=RollingUpdate(max_unavailable=1),
            router=router,
            readiness=Readiness(check=check, period=0.1, timeout=0.5, deadline=args.deadline),
            journal=FileJournal(args.journal),
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
    status = anyio.run(main, parser.parse_args())
    print(status, flush=True)  # noqa: T201 - the protocol: the status is the last line
    sys.exit(0)

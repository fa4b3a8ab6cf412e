"""A fleet that outlives controllers and logs every call: a process driver behind a socket.

A platform's API, as several controllers on several machines would share it:
``python fleet_daemon.py --control SOCK --state S --spawn N --tag T`` runs a
:class:`~rolling.drivers.process.ProcessDriver` on the state file ``S``
(starting ``N`` app processes of ``v1`` if it lists none), prints
``listening`` and serves a Unix control socket, one JSON command per line,
one JSON reply per line:

* ``{"op": "list"}``: the instances (id, version, host, port);
* ``{"op": "replace", "id": "p-0", "version": "v2", "never_ready": false,
  "caller": 123}``: replaces it, replies with the new instance.

Every ``replace`` is appended to ``--calls`` as ``<time> <caller pid>
replace <id> <version>`` when it arrives (the fleet's call log). SIGTERM or
SIGINT stop it and every app process.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

from rolling.demo import app
from rolling.drivers.process import ProcessDriver, ProcessInstance

_LINE = 1 << 16
STARTUP_DELAY = 0.3


def described(instance: ProcessInstance) -> dict[str, Any]:
    return {
        "id": instance.id,
        "version": instance.version,
        "host": instance.host,
        "port": instance.port,
    }


async def main(args: argparse.Namespace) -> None:  # noqa: C901 - the daemon's whole protocol, in order
    never_ready: set[int] = set()

    def command(version: str, port: int) -> Sequence[str]:
        return app.command(
            version, port, startup_delay=STARTUP_DELAY, never_ready=port in never_ready
        )

    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        await anyio.Path(args.control).unlink(missing_ok=True)
        async with (
            ProcessDriver(
                command,
                grace=2.0,
                state_file=args.state,
                keep_on_exit=False,
                env={"ROLLING_KILLSWEEP": args.tag},
            ) as driver,
            await anyio.create_unix_listener(args.control) as listener,
            anyio.create_task_group() as tg,
        ):
            if not await driver.list_instances():
                await driver.spawn(args.spawn, "v1")

            async def answer(request: dict[str, Any]) -> dict[str, Any]:
                if request["op"] == "list":
                    return {
                        "ok": True,
                        "instances": [described(i) for i in await driver.list_instances()],
                    }
                with args.calls.open("a") as calls:
                    calls.write(
                        f"{time.monotonic():.3f} {request['caller']} replace {request['id']}"
                        f" {request['version']}\n"
                    )
                instance = next(i for i in await driver.list_instances() if i.id == request["id"])
                if request.get("never_ready"):
                    never_ready.add(instance.port)
                else:
                    never_ready.discard(instance.port)
                return {
                    "ok": True,
                    "instance": described(await driver.replace(instance, request["version"])),
                }

            async def handle(stream: anyio.abc.SocketStream) -> None:
                async with stream:
                    reader = BufferedByteReceiveStream(stream)
                    try:
                        line = await reader.receive_until(b"\n", _LINE)
                    except (anyio.EndOfStream, anyio.IncompleteRead):
                        return
                    try:
                        reply = await answer(json.loads(line))
                    except Exception as exc:  # noqa: BLE001 - told to the caller
                        reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                    try:
                        await stream.send(json.dumps(reply).encode() + b"\n")
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                        return  # the caller died: the call was carried out anyway

            tg.start_soon(listener.serve, handle)
            print("listening", flush=True)  # noqa: T201 - the protocol
            async for _ in signals:
                break
            tg.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--control", type=Path, required=True, help="the Unix control socket")
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--calls", type=Path, required=True, help="the call log")
    parser.add_argument("--spawn", type=int, default=4)
    parser.add_argument("--tag", default="killsweep")
    anyio.run(main, parser.parse_args())
    sys.exit(0)

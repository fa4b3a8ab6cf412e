"""A load balancer that outlives controllers: rolling's Balancer behind a control socket.

``python balancer_daemon.py --control /tmp/lb.sock`` listens on a free
loopback port, prints ``listening <port>`` once it accepts connections, and
serves a Unix control socket; one JSON command per line, one JSON reply per
line:

* ``{"op": "attach", "id": "p-0", "host": "127.0.0.1", "port": 8001}``
* ``{"op": "detach", "id": "p-0"}``: replies once the backend is drained (a
  client that goes away meanwhile does not stop the detach);
* ``{"op": "list"}``: the ids in the rotation and the balancer's counters.

Replies are ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.
SIGTERM or SIGINT stop it.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import attrs
from anyio.streams.buffered import BufferedByteReceiveStream

from rolling.routers.balancer import Balancer, BalancerError

_LINE = 1 << 16


@attrs.frozen
class Backend:
    """What the balancer needs of an instance."""

    id: str
    host: str
    port: int


async def answer(balancer: Balancer, command: dict[str, Any]) -> dict[str, Any]:
    """Carry out one command."""
    op = command.get("op")
    if op == "attach":
        await balancer.attach(Backend(str(command["id"]), str(command["host"]), command["port"]))
        return {"ok": True}
    if op == "detach":
        await balancer.detach(Backend(str(command["id"]), "", 0))
        return {"ok": True}
    if op == "list":
        stats = balancer.stats()
        return {
            "ok": True,
            "attached": list(balancer.backends),
            "accepted": stats.accepted,
            "refused": stats.refused,
            "drain_timeouts": stats.drain_timeouts,
        }
    return {"ok": False, "error": f"unknown op {op!r}"}


async def serve_client(balancer: Balancer, stream: anyio.abc.ByteStream) -> None:
    """Answer the commands of one control connection, in order."""
    async with stream:
        reader = BufferedByteReceiveStream(stream)
        while True:
            try:
                line = await reader.receive_until(b"\n", _LINE)
            except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError):
                return
            try:
                reply = await answer(balancer, json.loads(line))
            except (ValueError, KeyError, TypeError, BalancerError) as exc:
                reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            try:
                await stream.send(json.dumps(reply).encode() + b"\n")
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                return  # the client died (a killed controller): the command was carried out


async def main(control: Path, drain_timeout: float) -> None:
    """Run until SIGTERM or SIGINT."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        await anyio.Path(control).unlink(missing_ok=True)
        async with (
            Balancer(drain_timeout=drain_timeout) as balancer,
            await anyio.create_unix_listener(control) as listener,
            anyio.create_task_group() as tg,
        ):

            async def handle(stream: anyio.abc.SocketStream) -> None:
                await serve_client(balancer, stream)

            tg.start_soon(listener.serve, handle)
            print(f"listening {balancer.port}", flush=True)  # noqa: T201 - the protocol
            async for _ in signals:
                break
            tg.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--control", type=Path, required=True, help="the Unix control socket")
    parser.add_argument("--drain-timeout", type=float, default=10.0)
    args = parser.parse_args()
    anyio.run(main, args.control, args.drain_timeout)
    sys.exit(0)

"""A Router that talks to ``balancer_daemon.py`` over its control socket.

One connection per call, one JSON command per line, one JSON reply per line.
``detach`` returns once the daemon has drained the backend.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
from anyio.streams.buffered import BufferedByteReceiveStream

__all__ = ["RemoteBalancerError", "RemoteBalancerRouter", "call"]

_LINE = 1 << 20


class RemoteBalancerError(RuntimeError):
    """The daemon refused a command, or could not be reached."""


async def call(control: Path, command: dict[str, Any], *, within: float = 60.0) -> dict[str, Any]:
    """Send one command to the daemon at ``control`` and return its reply."""
    with anyio.fail_after(within):
        async with await anyio.connect_unix(control) as stream:
            await stream.send(json.dumps(command).encode() + b"\n")
            reader = BufferedByteReceiveStream(stream)
            line = await reader.receive_until(b"\n", _LINE)
    reply: dict[str, Any] = json.loads(line)
    if not reply.get("ok"):
        raise RemoteBalancerError(f"{command.get('op')}: {reply.get('error')}")
    return reply


class RemoteBalancerRouter:
    """Implements :class:`rolling.typing.Router` for a balancer in another process."""

    def __init__(self, control: Path, *, within: float = 60.0) -> None:
        self.control = control
        self.within = within

    async def attach(self, instance: Any) -> None:
        """Put ``instance`` (by id, host and port) in the daemon's rotation."""
        command = {"op": "attach", "id": instance.id, "host": instance.host, "port": instance.port}
        await call(self.control, command, within=self.within)

    async def detach(self, instance: Any) -> None:
        """Take ``instance`` out of the rotation; return once its connections are done."""
        await call(self.control, {"op": "detach", "id": instance.id}, within=self.within)

    async def attached(self) -> list[str]:
        """Ids in the rotation, in order."""
        reply = await call(self.control, {"op": "list"}, within=self.within)
        return [str(i) for i in reply["attached"]]

"""A canary at a quarter of the traffic, on the built-in balancer (docs/weights.md).

Two stable and two canary backends, each a tiny TCP server that answers its name. Weights 75
and 25 give the canary set a quarter of new connections; then the canaries go to weight 0 and
get no new connection at all.

    python docs/examples/weights.py
"""

from __future__ import annotations

import collections
import contextlib
from dataclasses import dataclass

import anyio
import anyio.abc

from rolling.routers.balancer import Balancer


@dataclass(frozen=True)
class Backend:
    id: str
    host: str
    port: int


async def fetch(port: int) -> str:
    """One connection through the balancer: the name of the backend that answered."""
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        return (await stream.receive()).decode()


async def canary_share(share: int, requests: int) -> tuple[dict[str, int], dict[str, int]]:
    """Connections per backend at ``share`` % to the canaries, then with the canaries at 0."""
    names = ["stable1", "stable2", "canary1", "canary2"]
    split: collections.Counter[str] = collections.Counter()
    stopped: collections.Counter[str] = collections.Counter()
    async with contextlib.AsyncExitStack() as stack:
        listeners = [
            await stack.enter_async_context(
                await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
            )
            for _ in names
        ]
        async with anyio.create_task_group() as servers, Balancer() as lb:
            for name, listener in zip(names, listeners, strict=True):

                async def answer(stream: anyio.abc.SocketStream, name: str = name) -> None:
                    async with stream:
                        await stream.send(name.encode())

                servers.start_soon(listener.serve, answer)
                port = listener.extra(anyio.abc.SocketAttribute.local_port)  # noqa: S610 - anyio's, not Django's
                backend = Backend(name, "127.0.0.1", port)
                # Weights may be set before attach: each joins at its own share.
                await lb.set_weight(backend, share if name.startswith("canary") else 100 - share)
                await lb.attach(backend)
            split.update([await fetch(lb.port) for _ in range(requests)])
            for name in names[2:]:
                await lb.set_weight(Backend(name, "127.0.0.1", 0), 0)  # keyed by id, like attach
            stopped.update([await fetch(lb.port) for _ in range(requests)])
            servers.cancel_scope.cancel()
    return dict(split), dict(stopped)


async def main() -> None:
    split, stopped = await canary_share(25, 400)
    canary = split.get("canary1", 0) + split.get("canary2", 0)
    print(f"canaries at weight 25 against 75: {canary} of 400 connections ({split})")
    print(f"canaries at weight 0: {stopped}")


if __name__ == "__main__":
    anyio.run(main)

# What one `async for` turn costs a stream consumer, by what `__anext__` hands back.
#
# rolling's EventStream.__anext__ is a coroutine that pops an event already waiting. Issue 9
# asked whether a ready awaitable would be cheaper than a coroutine per event; this times
# three ways over events that all wait already (no loop turn in between):
#
#   coroutine  `async def __anext__` popping from a list (what EventStream does)
#   future     a plain `__anext__` returning an asyncio Future whose result is set
#   awaitable  a plain `__anext__` returning an object whose `__await__` raises StopIteration
#
#     python benchmarks/stream_awaitables.py            # 1M events each, three rounds
#     python benchmarks/stream_awaitables.py --events 200000

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable, Generator
from typing import Any


class _Stream:
    """Events already waiting, taken newest first (as EventStream takes from its chunk)."""

    def __init__(self, items: list[int]) -> None:
        self._chunk = items

    def __aiter__(self) -> _Stream:
        return self


class Coroutines(_Stream):
    async def __anext__(self) -> int:
        chunk = self._chunk
        if chunk:
            return chunk.pop()
        raise StopAsyncIteration


class Futures(_Stream):
    def __init__(self, items: list[int], loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(items)
        self._loop = loop

    def __anext__(self) -> Any:
        chunk = self._chunk
        if chunk:
            future = self._loop.create_future()
            future.set_result(chunk.pop())
            return future
        return _end()


class _Ready:
    __slots__ = ("value",)

    def __init__(self, value: int) -> None:
        self.value = value

    def __await__(self) -> Generator[Any, None, int]:
        return self  # type: ignore[return-value] # its own iterator, done at once

    def __iter__(self) -> _Ready:
        return self

    def __next__(self) -> None:
        raise StopIteration(self.value)


class Awaitables(_Stream):
    def __anext__(self) -> Any:
        chunk = self._chunk
        if chunk:
            return _Ready(chunk.pop())
        return _end()


async def _end() -> None:
    raise StopAsyncIteration


async def consume(make: Callable[[list[int]], Any], events: int) -> float:
    """Nanoseconds per event for one stream made by ``make``."""
    stream = make(list(range(events)))
    began = time.perf_counter()
    async for _event in stream:
        pass
    return (time.perf_counter() - began) / events * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    async def run() -> dict[str, float]:
        loop = asyncio.get_running_loop()
        makers: dict[str, Callable[[list[int]], Any]] = {
            "coroutine": Coroutines,
            "future": lambda items: Futures(items, loop),
            "awaitable": Awaitables,
        }
        best: dict[str, float] = {}
        for _ in range(args.rounds):
            for name, make in makers.items():
                took = await consume(make, args.events)
                best[name] = min(best.get(name, took), took)
        return best

    best = asyncio.run(run())
    print(f"{args.events:,} events waiting, best of {args.rounds} rounds")
    for name, took in best.items():
        ratio = took / best["coroutine"]
        print(f"  {name:<10} {took:6.0f} ns/event  {ratio:4.2f}x the coroutine")


if __name__ == "__main__":
    main()

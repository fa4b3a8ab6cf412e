"""The event stream a subscriber reads, and the loop's clock, for the runner."""

from __future__ import annotations

import asyncio
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel

from .events import Event

__all__ = ["EventStream", "loop_checkpoint", "loop_clock"]

# A consumer that finds events waiting takes them without a loop turn each; it still yields
# to the loop this often, so a fast producer cannot starve everything else.
_CHECKPOINT_EVERY = 64


class EventStream(anyio.abc.ObjectReceiveStream[Event]):
    """The events of one subscriber, in order; ends after :class:`~rolling.RolloutFinished`.

    Closing it early (leaving ``async with`` or breaking out of ``async for``
    and closing) only stops delivery to it: the rollout goes on as if nobody
    had subscribed.
    """

    def __init__(self) -> None:
        self._buffer: deque[Event] = deque()
        self._ended = False
        self._closed = False
        self._waiter: anyio.Event | None = None
        self._streak = 0

    def push(self, events: list[Event]) -> None:
        """Hand events over, oldest first (the runner's side)."""
        if not self._closed:
            self._buffer.extend(events)
            if self._waiter is not None:
                self._waiter.set()

    def end(self) -> None:
        """No more events will come (the runner's side)."""
        self._ended = True
        if self._waiter is not None:
            self._waiter.set()

    @property
    def closed(self) -> bool:
        """Whether the subscriber closed the stream."""
        return self._closed

    async def __anext__(self) -> Event:
        # What anyio's __anext__ does, without a call to receive() per event when one waits.
        buffer = self._buffer
        if buffer and not self._closed and self._streak < _CHECKPOINT_EVERY - 1:
            self._streak += 1
            return buffer.popleft()
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def receive(self) -> Event:
        """The next event; ``anyio.EndOfStream`` after the last one."""
        while True:
            if self._closed:
                raise anyio.ClosedResourceError
            if self._buffer:
                self._streak += 1
                if self._streak >= _CHECKPOINT_EVERY:
                    self._streak = 0
                    await anyio.lowlevel.checkpoint()
                    if self._closed:  # pragma: no cover - closed by another task meanwhile
                        raise anyio.ClosedResourceError
                return self._buffer.popleft()
            if self._ended:
                raise anyio.EndOfStream
            self._streak = 0
            waiter = self._waiter = anyio.Event()
            try:
                await waiter.wait()
            finally:
                self._waiter = None

    async def aclose(self) -> None:
        """Stop receiving; events not received yet are dropped."""
        self._closed = True
        self._buffer.clear()
        if self._waiter is not None:
            self._waiter.set()
        await anyio.lowlevel.checkpoint()


def _running_trio() -> Any:
    """The trio module when trio runs this task, else None (a trio loop needs it imported)."""
    trio: Any = sys.modules.get("trio")
    if trio is None:
        return None
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return None  # trio is imported, but this is asyncio
    return trio


def loop_clock() -> Callable[[], float]:
    """The running event loop's clock, looked up once (``anyio.current_time`` asks every call)."""
    trio = _running_trio()
    if trio is not None:
        clock: Callable[[], float] = trio.current_time
        return clock
    loop = asyncio.get_running_loop()
    if type(loop).time is asyncio.BaseEventLoop.time:
        # What that method returns, without a Python frame in between.
        return time.monotonic
    return loop.time


def loop_deadline() -> Callable[[], float]:
    """The running loop's effective deadline of the current task; -inf once it is cancelled."""
    trio = _running_trio()
    if trio is not None:
        deadline: Callable[[], float] = trio.current_effective_deadline
        return deadline
    return anyio.current_effective_deadline


def loop_checkpoint() -> Callable[[], Awaitable[None]]:
    """The running event loop's checkpoint, looked up once (anyio's looks up the backend)."""
    trio = _running_trio()
    if trio is not None:
        checkpoint: Callable[[], Awaitable[None]] = trio.lowlevel.checkpoint
        return checkpoint
    return _asyncio_checkpoint


async def _asyncio_checkpoint() -> None:
    # What anyio's asyncio backend does for a checkpoint: one turn of the loop, where a
    # pending cancellation lands.
    await asyncio.sleep(0)

"""The event stream a subscriber reads, and the loop's clock, for the runner."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import anyio
import anyio.abc
import anyio.lowlevel

from .events import Event

__all__ = ["EventStream", "loop_checkpoint", "loop_clock", "running_trio"]

# A consumer that finds events waiting takes them without a loop turn each; it still yields
# to the loop after this many in a row, so a fast producer cannot starve everything else. A
# loop turn costs a lone consumer about 17k instructions on asyncio: every 64 events that was
# about 270 an event (a consumer's own `async for` costs about 2.2k), every 256 about 70. A
# runner's worker yields after 32 units of about 8 events each: as many as one chunk.
_CHECKPOINT_EVERY = 256


class EventStream(anyio.abc.ObjectReceiveStream[Event]):
    """The events of one subscriber, in order; ends after :class:`~rolling.RolloutFinished`.

    Closing it early (leaving ``async with`` or breaking out of ``async for``
    and closing) only stops delivery to it: the rollout goes on as if nobody
    had subscribed.
    """

    # Rules, for the hot path of __anext__ (one list pop per event, no count):
    #
    # * Events wait in three places, oldest first: the *chunk* the consumer takes from (kept
    #   reversed, so that taking is list.pop()), then *taken[at:]* (what the last refill took
    #   but left out of the chunk), then the *buffer* the runner pushes to.
    # * A chunk holds at most _CHECKPOINT_EVERY events, and before it is refilled the consumer
    #   yields to the loop unless it has waited since the last refill: so a consumer yields at
    #   least once per _CHECKPOINT_EVERY events, and never twice for a wait's worth.
    # * Closed means all three are empty (aclose() clears them, push() refuses), so a
    #   non-empty chunk alone says an event may be taken.
    # * The loop's checkpoint and Event class are looked up on the first slow path, once (a
    #   stream is made inside the loop that reads it, but maybe before its runner starts).

    def __init__(self) -> None:
        self._chunk: list[Event] = []
        self._taken: list[Event] = []
        self._at = 0
        self._buffer: list[Event] = []
        self._yielded = False
        self._ended = False
        self._closed = False
        self._waiter: _Waiter | None = None
        self._checkpoint: Callable[[], Awaitable[None]] | None = None
        self._new_waiter: Callable[[], _Waiter] = anyio.Event

    def push(self, events: list[Event]) -> None:
        """Hand events over, oldest first (the runner's side)."""
        if not self._closed:
            self._buffer += events
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
        chunk = self._chunk
        if chunk:
            return chunk.pop()
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def receive(self) -> Event:
        """The next event; ``anyio.EndOfStream`` after the last one."""
        while True:
            if self._closed:
                raise anyio.ClosedResourceError
            chunk = self._chunk
            if chunk:
                return chunk.pop()
            if self._at < len(self._taken) or self._buffer:
                if self._yielded:
                    self._refill()
                else:
                    self._yielded = True
                    checkpoint = self._checkpoint or self._look_up()
                    await checkpoint()
                continue  # closed meanwhile, or refilled: look again
            if self._ended:
                raise anyio.EndOfStream
            new_waiter = self._new_waiter if self._checkpoint else self._look_up_waiter()
            waiter = self._waiter = new_waiter()
            try:
                await waiter.wait()
            finally:
                self._waiter = None
            self._yielded = True

    def _refill(self) -> None:
        """Move the next chunk of waiting events to where __anext__ takes them."""
        taken, at = self._taken, self._at
        if at >= len(taken):
            taken, at = self._buffer, 0
            self._buffer = []
        end = at + _CHECKPOINT_EVERY
        if end >= len(taken):
            chunk = taken[at:] if at else taken
            self._taken, self._at = [], 0
        else:
            chunk = taken[at:end]
            self._taken, self._at = taken, end
        chunk.reverse()
        self._chunk = chunk
        self._yielded = False

    def _look_up(self) -> Callable[[], Awaitable[None]]:
        self._new_waiter = _loop_event()
        checkpoint = self._checkpoint = loop_checkpoint()
        return checkpoint

    def _look_up_waiter(self) -> Callable[[], _Waiter]:
        self._look_up()
        return self._new_waiter

    async def aclose(self) -> None:
        """Stop receiving; events not received yet are dropped."""
        self._closed = True
        self._chunk.clear()
        self._taken, self._at, self._buffer = [], 0, []
        if self._waiter is not None:
            self._waiter.set()
        await anyio.lowlevel.checkpoint()


class _Waiter(Protocol):
    """What the stream needs of an event: anyio's, asyncio's and trio's all have it."""

    def set(self) -> object: ...

    async def wait(self) -> object: ...


def _loop_event() -> Callable[[], _Waiter]:
    """The running loop's own Event class (anyio's looks up the backend at each one made)."""
    trio = running_trio()
    if trio is not None:
        event: Callable[[], _Waiter] = trio.Event
        return event
    return asyncio.Event


def running_trio() -> Any:
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
    trio = running_trio()
    if trio is not None:
        clock: Callable[[], float] = trio.current_time
        return clock
    loop = asyncio.get_running_loop()
    if type(loop).time is asyncio.BaseEventLoop.time:
        # What that method returns, without a Python frame in between.
        return time.monotonic
    return loop.time


def loop_checkpoint() -> Callable[[], Awaitable[None]]:
    """The running event loop's checkpoint, looked up once (anyio's looks up the backend)."""
    trio = running_trio()
    if trio is not None:
        checkpoint: Callable[[], Awaitable[None]] = trio.lowlevel.checkpoint
        return checkpoint
    return _asyncio_checkpoint


async def _asyncio_checkpoint() -> None:
    # What anyio's asyncio backend does for a checkpoint: one turn of the loop, where a
    # pending cancellation lands.
    await asyncio.sleep(0)

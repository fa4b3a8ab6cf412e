"""The event stream a subscriber reads (``RolloutHandle.events()``), on its own.

Its rules are at the top of :class:`rolling._stream.EventStream`; the rollouts of
test_engine and test_regressions read it end to end.
"""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

import rolling
from rolling import Event
from rolling._stream import _CHECKPOINT_EVERY, EventStream
from rolling.testing import SimulatedFleet

pytestmark = pytest.mark.anyio


def _events(first: int, count: int) -> list[Event]:
    return [Event(at=float(k), wall=0.0) for k in range(first, first + count)]


def _ats(events: list[Event]) -> list[int]:
    return [int(event.at) for event in events]


async def test_events_come_in_order_across_pushes_and_the_stream_ends() -> None:
    stream = EventStream()
    total = 3 * _CHECKPOINT_EVERY + 5
    for first in range(0, total, 7):
        stream.push(_events(first, min(7, total - first)))
    stream.end()
    seen = [event async for event in stream]
    assert _ats(seen) == list(range(total))
    with pytest.raises(anyio.EndOfStream):
        await stream.receive()


async def test_receive_and_async_for_share_one_order() -> None:
    stream = EventStream()
    stream.push(_events(0, 10))
    first = await stream.receive()
    second = await stream.__anext__()
    stream.end()
    rest = [event async for event in stream]
    assert _ats([first, second, *rest]) == list(range(10))


async def test_a_consumer_yields_to_the_loop_at_least_every_chunk() -> None:
    # A producer that pushed far more than a chunk must not starve other tasks while the
    # consumer takes it all: it yields at least once per _CHECKPOINT_EVERY events taken.
    stream = EventStream()
    total = 10 * _CHECKPOINT_EVERY + 3
    stream.push(_events(0, total))
    stream.end()
    seen: list[Event] = []
    taken_at_yields: list[int] = []
    turns = 0

    async def counted_checkpoint() -> None:
        taken_at_yields.append(len(seen))
        await anyio.lowlevel.checkpoint()

    async def other_task() -> None:
        nonlocal turns
        while True:
            turns += 1
            await anyio.lowlevel.checkpoint()

    stream._checkpoint = counted_checkpoint
    async with anyio.create_task_group() as tg:
        tg.start_soon(other_task)
        async for event in stream:
            seen.append(event)  # noqa: PERF401 - counted_checkpoint reads it as it grows
        tg.cancel_scope.cancel()
    assert _ats(seen) == list(range(total))
    gaps = [b - a for a, b in zip([0, *taken_at_yields], [*taken_at_yields, total], strict=True)]
    assert max(gaps) <= _CHECKPOINT_EVERY
    # ... but not a loop turn per event, which is what the chunks save.
    assert len(taken_at_yields) == -(-total // _CHECKPOINT_EVERY)
    assert turns >= len(taken_at_yields) - 1  # the other task did run meanwhile


async def test_a_waiting_consumer_is_woken_by_a_push_and_by_the_end() -> None:
    stream = EventStream()
    seen: list[Event] = []

    async def consume() -> None:
        async for event in stream:
            seen.append(event)  # noqa: PERF401 - seen while it grows, not at the end

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        for first in (0, 3, 6):
            await anyio.sleep(1)  # the consumer is waiting by now
            stream.push(_events(first, 3))
        await anyio.sleep(1)
        assert _ats(seen) == list(range(9))
        stream.end()
    assert _ats(seen) == list(range(9))


async def test_closing_mid_stream_drops_what_is_left_and_refuses_more() -> None:
    stream = EventStream()
    stream.push(_events(0, 2 * _CHECKPOINT_EVERY))
    seen = [await stream.receive() for _ in range(3)]
    await stream.aclose()
    assert stream.closed
    stream.push(_events(1000, 5))  # the runner may push once more before it notices
    with pytest.raises(anyio.ClosedResourceError):
        await stream.receive()
    with pytest.raises(anyio.ClosedResourceError):
        await stream.__anext__()
    assert _ats(seen) == [0, 1, 2]


async def test_closing_from_another_task_stops_a_waiting_consumer() -> None:
    stream = EventStream()
    outcome: list[str] = []

    async def consume() -> None:
        try:
            await stream.receive()
        except anyio.ClosedResourceError:
            outcome.append("closed")

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        await anyio.sleep(1)
        await stream.aclose()
    assert outcome == ["closed"]


async def test_closing_while_the_consumer_yields_stops_it_there() -> None:
    # The consumer is at its checkpoint between two chunks when another task closes it.
    stream = EventStream()
    stream.push(_events(0, 3 * _CHECKPOINT_EVERY))
    seen: list[Event] = []
    closed: list[bool] = []

    async def consume() -> None:
        try:
            while True:
                seen.append(await stream.receive())
        except anyio.ClosedResourceError:
            closed.append(True)

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        while not seen:  # the consumer yields before its first chunk too
            await anyio.lowlevel.checkpoint()
        await stream.aclose()
    assert closed == [True]
    assert _CHECKPOINT_EVERY <= len(seen) < 3 * _CHECKPOINT_EVERY
    assert _ats(seen) == list(range(len(seen)))


async def test_a_stream_waiting_is_cancelled_like_any_wait() -> None:
    stream = EventStream()
    with anyio.move_on_after(5) as scope:
        await stream.receive()
    assert scope.cancelled_caught
    stream.push(_events(0, 2))
    stream.end()
    assert _ats([event async for event in stream]) == [0, 1]


async def test_a_lone_observer_that_raises_hears_no_more_and_run_raises_it() -> None:
    # The runner's path for one observer: what the general one does for one.
    heard: list[Event] = []

    class ObserverError(Exception):
        pass

    def observer(event: Event) -> None:
        heard.append(event)
        if isinstance(event, rolling.InstancePhaseChanged):
            raise ObserverError(event.phase)

    with pytest.raises(ObserverError):
        await rolling.Rollout(SimulatedFleet(3), "v2", observers=[observer]).run()
    assert isinstance(heard[-1], rolling.InstancePhaseChanged)
    assert sum(isinstance(event, rolling.InstancePhaseChanged) for event in heard) == 1


async def test_an_observer_that_raises_does_not_cost_the_others_an_event() -> None:
    # Several observers: the one that raises hears no more; the one after it in the list
    # still hears every event, the one that raised included, and a stream gets them in
    # the order the observers did, the halt's own events after them.
    first: list[Event] = []
    second: list[Event] = []
    streamed: list[Event] = []

    class ObserverError(Exception):
        pass

    def failing(event: Event) -> None:
        first.append(event)
        if isinstance(event, rolling.InstancePhaseChanged):
            raise ObserverError(event.phase)

    rollout = rolling.Rollout(SimulatedFleet(3), "v2", observers=[failing, second.append])
    with pytest.raises(ObserverError):
        async with rollout.start() as handle, handle.events() as stream:
            streamed.extend([event async for event in stream])
    assert first == second[: len(first)]
    assert streamed == second
    assert isinstance(second[-1], rolling.RolloutFinished)
    assert second[-1].result.status is rolling.RolloutStatus.HALTED

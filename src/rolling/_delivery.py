"""Events to the observers and the streams: every flush's events, in one order for all.

Rules:

1. Observers are called synchronously, in the order given, with each event; one that
   raises is called no more, and its error goes back to the runner (which halts the run
   and raises it from ``run()``), after every stream has had the events it was called with.
2. Streams get each flush's events at once (:meth:`rolling._stream.EventStream.push`); a
   closed stream is dropped. Once the rollout has ended every stream is ended.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ._stream import EventStream
from .events import Event
from .typing import Observer

__all__ = ["Delivery"]


class Delivery:
    """One rollout's observers and event streams."""

    __slots__ = ("_observers", "streams")

    def __init__(self, observers: Iterable[Observer]) -> None:
        self._observers = list(observers)
        self.streams: list[EventStream] = []
        """Open streams; empty when nobody reads one."""

    def subscribe(self, *, ended: bool) -> EventStream:
        """A new stream of every event from now on; already ended when the rollout has."""
        stream = EventStream()
        if ended:
            stream.end()
        else:
            self.streams.append(stream)
        return stream

    def deliver(self, events: list[Event]) -> Sequence[Exception]:
        """Hand ``events`` to everyone (rules 1 and 2); the errors of observers that raised."""
        failed = self._notify(events) if self._observers else ()
        streams = self.streams
        closed = False
        for stream in streams:
            stream.push(events)
            closed = closed or stream.closed
        if closed:
            streams[:] = [s for s in streams if not s.closed]
        return failed

    def end(self) -> None:
        """The rollout has ended: so does every stream."""
        for stream in self.streams:
            stream.end()
        self.streams.clear()

    def _notify(self, events: list[Event]) -> Sequence[Exception]:
        observers = self._observers
        if len(observers) == 1:
            # The usual case, without a loop per event: what the general one does for one.
            observer = observers[0]
            try:
                for event in events:
                    observer(event)
            except Exception as exc:  # noqa: BLE001 - the rollout halts and run() raises it
                observers.clear()
                return (exc,)
            return ()  # no list per call: a flush's allocations add to the collector's work
        failed: list[Exception] = []
        for event in events:
            index = 0
            while index < len(observers):
                try:
                    observers[index](event)
                except Exception as exc:  # noqa: BLE001 - the rollout halts and run() raises it
                    del observers[index]
                    failed.append(exc)
                else:
                    index += 1
        return failed

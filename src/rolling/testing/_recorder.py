"""A synchronous observer that keeps every event, for assertions."""

from __future__ import annotations

from typing import TypeVar

from rolling.events import Event, InstancePhaseChanged, Phase

__all__ = ["EventRecorder"]

EventT = TypeVar("EventT", bound=Event)


class EventRecorder:
    """Keep every :class:`~rolling.Event` a rollout emits, in order.

    Pass it as an observer, then assert on what happened::

        recorder = EventRecorder()
        await Rollout(..., observers=[recorder]).run()
        assert recorder.phases("i-000")[-1] is Phase.UPDATED

    .. versionadded:: 0.1.0
    """

    def __init__(self) -> None:
        self._events: list[Event] = []

    def __call__(self, event: Event) -> None:
        """Record ``event``."""
        self._events.append(event)

    def __len__(self) -> int:
        """Return how many events were recorded."""
        return len(self._events)

    @property
    def events(self) -> list[Event]:
        """Every event recorded, oldest first (a copy)."""
        return list(self._events)

    def of_type(self, cls: type[EventT]) -> list[EventT]:
        """Return the recorded events that are instances of ``cls``, oldest first."""
        return [event for event in self._events if isinstance(event, cls)]

    def phases(self, instance_id: str) -> list[Phase]:
        """Return the phases the instance that had ``instance_id`` at the start went through."""
        return [
            event.phase
            for event in self.of_type(InstancePhaseChanged)
            if event.instance_id == instance_id
        ]

    def clear(self) -> None:
        """Forget every event recorded so far."""
        self._events.clear()

"""A running rollout's control handle and its status snapshots."""

from __future__ import annotations

import anyio
import anyio.abc
import attrs

from ._errors import ControlError
from ._result import InstanceOutcome, RolloutResult, RolloutStatus
from ._runner import Runner
from ._steps import Step
from .events import Event

__all__ = ["RolloutHandle", "RolloutSnapshot"]


@attrs.frozen(kw_only=True)
class RolloutSnapshot:
    """Where a rollout is, at one moment.

    Attributes:
        status: The rollout's status.
        target: The version being rolled out.
        reason: Why it is stopping or stopped, if it is.
        counts: Instances by outcome so far.
        in_flight: Ids of instances being worked on, in fleet order. For
            :class:`~rolling.Canary` and :class:`~rolling.BlueGreen` that
            includes an instance whose new one stands beside it (counted
            ``IN_PROGRESS``) while the rollout waits for a later step.
        paused: Whether :meth:`RolloutHandle.pause` is in force.
        step: The pause or gate being waited on, if any.
        elapsed: Seconds since the start, on the event loop's clock.
        traffic: For :class:`~rolling.Canary` and :class:`~rolling.BlueGreen`,
            the new set's share of new requests, in percent, as the weights
            of the last :class:`~rolling.TrafficShifted` give it (0.0 once a
            rollback has removed the new instances); None before any shift,
            and for the other strategies.

    .. versionadded:: 0.1.0

    .. versionchanged:: 0.4.0
       ``traffic``.
    """

    status: RolloutStatus
    target: str
    reason: str
    counts: dict[InstanceOutcome, int]
    in_flight: tuple[str, ...]
    paused: bool
    step: Step | None
    elapsed: float
    traffic: float | None = None


class RolloutHandle:
    """Controls a running rollout; every method may be called from any task.

    .. versionadded:: 0.1.0
    """

    def __init__(self, runner: Runner) -> None:
        self._runner = runner
        self._machine = runner.machine
        self._done = anyio.Event()
        self._error: Exception | None = None
        self._started_at = anyio.current_time()

    async def _run(self) -> None:
        try:
            await self._runner.run()
        except Exception as exc:  # noqa: BLE001 - raised from start()'s block, not as a group
            self._error = exc
        finally:
            self._done.set()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    @property
    def result(self) -> RolloutResult:
        """The result, once the rollout has ended.

        Raises:
            ControlError: The rollout has not ended yet.
        """
        result = self._machine.result
        if result is None:
            raise ControlError("the rollout has not finished; await handle.wait() first")
        return result

    async def wait(self) -> RolloutResult:
        """Wait for the rollout to end and return its result.

        Raises:
            Exception: The error that stopped the rollout before it had a result (a
                :class:`~rolling.LockedError`, a :class:`~rolling.ConfigError`, a driver's
                ``list_instances`` that failed before the start ...).
        """
        await self._done.wait()
        if self._machine.result is None:
            self._raise()  # the run's own error, not "the rollout has not finished"
        return self.result

    def pause(self) -> None:
        """Start no new instance until :meth:`resume`; work in flight finishes.

        The status is ``PAUSED``. A rollback is not held: it always runs to its
        end (the status stays ``ROLLING_BACK``); only ``abort(rollback=False)``
        stops it.
        """
        self._check_running("pause")
        self._runner.control(self._machine.pause)

    def resume(self) -> None:
        """Undo :meth:`pause`."""
        self._check_running("resume")
        self._runner.control(self._machine.resume)

    def abort(self, *, rollback: bool = True) -> None:
        """Stop the rollout; revert what it changed unless ``rollback=False``.

        Waits in flight (readiness, back-off, pauses, gates) are interrupted;
        driver calls in flight finish. The result's status is ``ABORTED``.
        """
        self._check_running("abort")
        self._runner.control(lambda: self._machine.abort(rollback=rollback))

    def promote(self, *, full: bool = False) -> None:
        """End the current :class:`~rolling.Pause` or :class:`~rolling.Gate` step.

        A promoted gate passes; a promoted :class:`~rolling.Analyze` step ends its
        analysis, or its wait for a person on an inconclusive verdict. With
        ``full=True``, skip every pause, gate and analysis step left as well: a
        rolling update still sets the flags of its :class:`~rolling.SetFlag`
        steps, a :class:`~rolling.Canary` skips every step left and goes to its
        promotion, and the old set of a blue-green or of an all-at-once canary
        promotion is still kept its ``scale_down_delay``.

        Raises:
            ControlError: ``full`` is false and no pause, gate or analysis step is
                running; or the rollout has ended.
        """
        self._check_running("promote")
        if not self._runner.control(lambda: self._machine.promote(full=full)):
            raise ControlError(
                "nothing to promote: no Pause, Gate or Analyze step is running;"
                " use full=True to skip all that remain"
            )

    def status(self) -> RolloutSnapshot:
        """A snapshot of where the rollout is."""
        machine = self._machine
        return RolloutSnapshot(
            status=machine.status,
            target=self._runner.target,
            reason=machine.stop_reason,
            counts=machine.counts(),
            in_flight=machine.in_flight(),
            paused=machine.paused,
            step=machine.current_step,
            elapsed=anyio.current_time() - self._started_at,
            traffic=machine.traffic,
        )

    def events(self) -> anyio.abc.ObjectReceiveStream[Event]:
        """A stream of every event from now on, ending after :class:`~rolling.RolloutFinished`.

        Call it before the block's first ``await`` to see the whole rollout.
        Use as ``async with handle.events() as stream: async for event in stream``.
        Closing the stream early (leaving the block) only stops delivery to it.
        """
        return self._runner.subscribe()

    def _check_running(self, action: str) -> None:
        if self._machine.result is not None:
            raise ControlError(f"cannot {action}: the rollout has already finished")

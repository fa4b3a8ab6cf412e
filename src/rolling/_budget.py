"""The failure budget and the circuit breaker: rule 5 of :mod:`rolling._machine`."""

from __future__ import annotations

from ._policies import FailurePolicy

__all__ = ["Budget"]


class Budget:
    """Failed instances counted against a :class:`~rolling.FailurePolicy`.

    Sans-io, like the machine that owns it: it only counts and says why a failure is one
    too many.
    """

    __slots__ = ("_allowed", "_consecutive", "_failed", "_policy")

    def __init__(self, policy: FailurePolicy) -> None:
        self._policy = policy
        self._allowed = 0
        self._failed = 0
        self._consecutive = 0

    def size_to(self, fleet: int) -> None:
        """The fleet that can stand is known: ``max_failed`` as a count of it."""
        self._allowed = self._policy.budget(fleet)

    def failed(self, batch: int | None, in_batch: int, size: int) -> str:
        """Count one failure (``in_batch`` of ``size`` in ``batch``); why it trips, or ``""``."""
        policy = self._policy
        self._failed += 1
        self._consecutive += 1
        if self._failed > self._allowed:
            noun = "instance" if self._failed == 1 else "instances"
            return f"{self._failed} {noun} failed, over the budget of {self._allowed} (max_failed)"
        if batch is not None and policy.batch_exceeded(in_batch, size):
            return (
                f"{in_batch} of {size} instances in batch {batch} failed,"
                f" over max_failed_per_batch={policy.max_failed_per_batch}"
            )
        if policy.circuit_breaker is not None and self._consecutive >= policy.circuit_breaker:
            return f"circuit breaker: {self._consecutive} failures in a row"
        return ""

    def succeeded(self) -> None:
        """An instance made it: the breaker's count starts again."""
        self._consecutive = 0

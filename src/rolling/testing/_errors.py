"""Errors raised by the simulated fleet."""

from __future__ import annotations

from rolling import RollingError

__all__ = ["SimulatedFault", "SimulationError"]


class SimulationError(RollingError, KeyError):
    """The simulated fleet was asked to work on an instance it does not have.

    Raised for ids that never existed or were terminated: a real driver would
    fail too, and a correct engine never asks.

    .. versionadded:: 0.1.0
    """

    def __str__(self) -> str:
        """Return the message as written (``KeyError`` would quote it)."""
        return str(self.args[0]) if self.args else ""


class SimulatedFault(RuntimeError):  # noqa: N818 - a fault that fired, not an error of ours
    """A fault scripted with :class:`~rolling.testing.Fault` fired.

    Deliberately not a :class:`~rolling.RollingError`: to the engine it must
    look like any exception a real driver, router or health check raises.

    .. versionadded:: 0.1.0
    """

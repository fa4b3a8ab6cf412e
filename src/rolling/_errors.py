"""The exception hierarchy: one root, and errors that also subclass the nearest builtin."""

from __future__ import annotations

__all__ = ["ConfigError", "ControlError", "RollingError", "RolloutAlreadyStartedError"]


class RollingError(Exception):
    """Root of every exception that :mod:`rolling` raises on purpose."""


class ConfigError(RollingError, ValueError):
    """A configuration is invalid.

    Raised when a value object is built or when a rollout is prepared, always
    before any driver call. The message names the field and says how to fix it.

    Attributes:
        field: Dotted name of the offending field, such as ``"RollingUpdate.max_surge"``.
        problem: What is wrong with its value.
        fix: What to do instead.
    """

    def __init__(self, field: str, problem: str, fix: str) -> None:
        self.field = field
        self.problem = problem
        self.fix = fix
        super().__init__(f"{field}: {problem}; {fix}")


class ControlError(RollingError, RuntimeError):
    """A control call (pause, resume, abort, promote) was made in a state where it cannot apply."""


class RolloutAlreadyStartedError(RollingError, RuntimeError):
    """A :class:`~rolling.Rollout` object runs once; build a new one to run again."""

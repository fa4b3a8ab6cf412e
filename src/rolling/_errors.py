"""The exception hierarchy: one root, and errors that also subclass the nearest builtin."""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ControlError",
    "RollingError",
    "RolloutAlreadyStartedError",
    "one_error",
]


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


def one_error(errors: list[Exception]) -> Exception:
    """The one error a rollout raises for ``errors``: the error itself when alone.

    Several come as a :class:`RollingError` naming the first, whose ``__cause__``
    is the group of them, so a caller never needs ``except*``.
    """
    if len(errors) == 1:
        return errors[0]
    error = RollingError(
        f"the rollout stopped on {len(errors)} errors; the first: "
        f"{type(errors[0]).__name__}: {errors[0]}"
    )
    error.__cause__ = ExceptionGroup("errors during the rollout", errors)
    return error

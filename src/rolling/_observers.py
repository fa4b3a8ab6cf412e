"""Ready-made sync observers."""

from __future__ import annotations

import logging

from ._errors import ConfigError
from .events import (
    Event,
    GateChecked,
    InstancePhaseChanged,
    Phase,
    ProgressDeadlineExceeded,
    RollbackStarted,
    RolloutFinished,
    RolloutStarted,
)
from .validate import check_int

__all__ = ["LoggingObserver"]

_WARNING_PHASES = frozenset({Phase.FAILED, Phase.REVERT_FAILED, Phase.INTERRUPTED})


class LoggingObserver:
    """Log every event through the standard :mod:`logging` module.

    Failures, rollbacks and missed deadlines log at WARNING, the rest at
    ``level`` (INFO by default). Pass it in ``Rollout(observers=[...])``.

    .. versionadded:: 0.1.0
    """

    def __init__(self, logger: logging.Logger | None = None, level: int = logging.INFO) -> None:
        # Checked here: a logger's name, or a level such as "INFO", would fail at the first
        # event, once the rollout runs, and end it as an observer's error.
        if logger is not None and not callable(getattr(logger, "log", None)):
            raise ConfigError(
                "LoggingObserver.logger",
                f"expected a logging.Logger or None, got {logger!r}",
                f"pass logging.getLogger({logger!r})" if isinstance(logger, str) else "pass None",
            )
        check_int("LoggingObserver.level", level, minimum=0)
        self.logger = logger or logging.getLogger("rolling")
        self.level = level

    def __call__(self, event: Event) -> None:
        """Log ``event``."""
        level = self.level
        if isinstance(event, InstancePhaseChanged):
            if event.phase in _WARNING_PHASES:
                level = logging.WARNING
            text = f"{event.instance_id}: {event.phase} (-> {event.version}"
            text += f", attempt {event.attempt})" if event.attempt > 1 else ")"
            if event.reason:
                text += f": {event.reason}"
        elif isinstance(event, RolloutStarted):
            text = (
                f"rollout to {event.target}: {len(event.to_update)} to update, "
                f"{len(event.skipped)} already there, {len(event.unhealthy)} unhealthy first; "
                f"max_unavailable={event.max_unavailable} max_surge={event.max_surge}"
            )
        elif isinstance(event, RolloutFinished):
            result = event.result
            level = logging.INFO if result.ok else logging.WARNING
            counts = ", ".join(f"{k}={v}" for k, v in sorted(result.counts.items()))
            text = (
                f"rollout to {result.target} {result.status} in {result.duration:.3f}s ({counts})"
            )
            if result.reason:
                text += f": {result.reason}"
        elif isinstance(event, RollbackStarted | ProgressDeadlineExceeded):
            level = logging.WARNING
            text = repr(event)
        elif isinstance(event, GateChecked) and not event.passed:
            level = logging.WARNING
            text = f"gate {event.name} failed: {event.reason}"
        else:
            text = repr(event)
        self.logger.log(level, "%s", text)

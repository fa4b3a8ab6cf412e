"""Health checks for adapter authors: accept what users pass as a check, and probe once.

A router that waits for an instance to be healthy before it sends it traffic
(as :class:`~rolling.routers.haproxy.HAProxyRouter` does) takes a check the way
:class:`~rolling.Readiness` does: a :class:`~rolling.typing.HealthCheck` object
or a plain ``async def``. :func:`as_check_function` turns either into one
callable, and :func:`probe_once` runs it with a time limit and turns whatever
it answers (or raises) into a :class:`~rolling.HealthResult`::

    from rolling.health import as_check_function, probe_once

    class WaitingRouter:
        def __init__(self, check: object) -> None:
            self._check = as_check_function(check)

        async def attach(self, instance: object) -> None:
            if self._check is not None:
                while not (await probe_once(self._check, instance, 5.0)).healthy:
                    await anyio.sleep(1.0)
            ...

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, cast

import anyio

from ._cancel_check import raised_by_itself
from .typing import HealthResult

__all__ = ["CheckFunction", "as_check_function", "probe_once"]

CheckFunction = Callable[[Any], Awaitable[object]]
"""One health check as a plain async callable; :func:`probe_once` makes sense of its answer."""


def as_check_function(check: object) -> CheckFunction | None:
    """Turn what a user passed as a health check into one callable.

    Args:
        check: A :class:`~rolling.typing.HealthCheck` (its ``check`` method is
            used), a plain async function of one instance, or None.

    Returns:
        The callable, or None when ``check`` is None.

    Raises:
        TypeError: ``check`` is neither. Validate what users pass when it is
            given, to raise a :class:`~rolling.ConfigError` naming the field
            before any rollout starts.
    """
    if check is None:
        return None
    # callable() cannot tell an async function from a sync one: Readiness documents the
    # signature, and probe_once copes with a check that returns a plain answer.
    method = getattr(check, "check", None)
    if method is not None and callable(method):
        return cast("CheckFunction", method)  # a HealthCheck's bound method
    if callable(check):
        return cast("CheckFunction", check)  # a plain async function
    msg = f"not a health check: {check!r}"
    raise TypeError(msg)


def _normalise(answer: object) -> HealthResult:
    """Turn what a check returned into a :class:`HealthResult`."""
    if isinstance(answer, HealthResult):
        return answer
    if isinstance(answer, bool):
        return HealthResult(healthy=answer, reason="" if answer else "check returned False")
    if isinstance(answer, tuple):
        items = cast("tuple[object, ...]", answer)  # isinstance cannot know the item types
        if len(items) == 2 and isinstance(healthy := items[0], bool):  # noqa: PLR2004 - (healthy, reason)
            return HealthResult(healthy=healthy, reason=str(items[1]))
    return HealthResult(
        healthy=False,
        reason=f"check returned {answer!r}, not a bool, a (bool, reason) tuple or a HealthResult",
    )


async def probe_once(check: CheckFunction, instance: object, limit: float) -> HealthResult:
    """Run one probe within ``limit`` seconds and say what it found.

    A time-out or an exception is an unhealthy answer with the cause as its
    reason, never an error (cancellation still goes through): ``"check timed
    out after 5.0s"`` only when ``limit`` ran out, ``"check raised
    TimeoutError: ..."`` when the check raised one of its own. The check may
    answer a :class:`~rolling.HealthResult`, a ``bool`` or a
    ``(bool, reason)`` tuple; anything else, a tuple whose first item is not a
    ``bool`` (``("no", "...")``) too, is unhealthy, with a reason saying what
    came back.

    Args:
        check: The check, as :func:`as_check_function` returns it.
        instance: The instance to probe.
        limit: Seconds the check may take.
    """
    answer: object = None
    # Our own deadline is a cancel scope, not fail_after: a TimeoutError the check raises
    # itself is its answer ("check raised TimeoutError"), not our time-out.
    with anyio.move_on_after(limit) as deadline:
        try:
            answer = check(instance)
            if inspect.isawaitable(answer):
                answer = await answer
        except Exception as exc:  # noqa: BLE001 - a crashing check means "not healthy", with the cause
            return HealthResult(healthy=False, reason=f"check raised {type(exc).__name__}: {exc}")
        except BaseException as exc:
            if not raised_by_itself(exc, deadline):
                raise
            # asyncio's CancelledError that the check raised itself: no cancellation.
            return HealthResult(healthy=False, reason=f"check raised {type(exc).__name__}: {exc}")
    if deadline.cancelled_caught:
        return HealthResult(healthy=False, reason=f"check timed out after {limit}s")
    return _normalise(answer)

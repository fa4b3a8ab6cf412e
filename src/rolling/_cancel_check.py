"""Whether the running task was cancelled, asked cheaply between a worker's units.

Rules:

* :func:`cancel_check` is called in the task that will ask. It returns a function of the
  loop's time ``now`` that is true when ``anyio.current_effective_deadline() <= now``: a
  deadline has passed, or a scope around the task (up to the first shield) was cancelled.
* Why: every driver call is shielded, so with a driver that never waits outside its calls a
  cancellation would otherwise land only at the worker's next checkpoint, up to 32 units
  later. The worker asks after every unit, so the question must cost little.
* On trio the answer is trio's own ``current_effective_deadline`` (cheap).
* On asyncio anyio's public function costs about 12k instructions a call (the backend's
  name from sniffio, the current task, a weak-key dictionary). The task's anyio state is
  looked up once here, and each call walks its scopes, reading the attributes anyio's
  ``current_effective_deadline`` reads. Those are anyio's private names: should a release
  rename them, the check falls back to the public function (slower, the same answer), and
  tests/test_cancel_check.py holds the two to the same answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import anyio

from ._stream import running_trio

__all__ = ["cancel_check", "raised_by_itself"]

_SCOPE_FIELDS = ("_cancel_called", "_deadline", "_shield", "_parent_scope")


def cancel_check() -> Callable[[float], bool]:
    """For the calling task: ``now -> whether it is cancelled or past its deadline``."""
    trio = running_trio()
    if trio is not None:
        trio_deadline: Callable[[], float] = trio.current_effective_deadline
        return lambda now: trio_deadline() <= now
    state = _asyncio_task_state()
    if state is None:
        return _public_check

    def walk(now: float) -> bool:
        # anyio's current_effective_deadline, with the task's state already in hand.
        scope = state.cancel_scope
        while scope is not None:
            if scope._cancel_called or scope._deadline <= now:  # noqa: SLF001 - see the rules
                return True
            if scope._shield:  # noqa: SLF001 - see the rules
                return False
            scope = scope._parent_scope  # noqa: SLF001 - see the rules
        return False

    return walk


def _public_check(now: float) -> bool:
    return anyio.current_effective_deadline() <= now


def _asyncio_task_state() -> Any:
    """The state anyio keeps for the current asyncio task, if it has what the walk reads."""
    try:
        from anyio._backends import _asyncio as backend  # noqa: PLC0415 - only on asyncio; see the rules

    except ImportError:  # pragma: no cover - another anyio
        return None
    states: Any = vars(backend).get("_task_states")
    state = None if states is None else states.get(asyncio.current_task())
    scope = getattr(state, "cancel_scope", None)
    if scope is None or not all(hasattr(scope, name) for name in _SCOPE_FIELDS):
        return None  # another anyio, or a task anyio did not start (its scopes are unknown)
    return state


def raised_by_itself(exc: BaseException, scope: anyio.CancelScope) -> bool:
    """Whether asyncio's ``CancelledError`` out of ``scope`` came from the code it ran.

    Only ``scope`` itself, a scope around it (anyio cancels through ``task.cancel()``) or a
    native ``task.cancel()`` cancel the task, and asyncio counts the last two in
    ``cancelling()``; a CancelledError with none of them is the code's own (a client
    library that turns its time-out into one): a failure of that code, not a cancellation.
    trio's ``Cancelled`` cannot be raised so.
    """
    if not isinstance(exc, asyncio.CancelledError) or scope.cancel_called:
        return False
    try:
        task = asyncio.current_task()
    except RuntimeError:  # not on asyncio
        return False
    return task is not None and task.cancelling() == 0

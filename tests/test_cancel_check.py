"""The worker's cheap cancellation question gives anyio's answer, scope by scope."""

# ruff: noqa: ASYNC100 - the scopes are the subject: the check is asked inside them, not awaited

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import pytest

from rolling import _cancel_check

pytestmark = pytest.mark.anyio


def _public(now: float) -> bool:
    return anyio.current_effective_deadline() <= now


async def _in_a_task(fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
    # A worker is a task anyio started: on asyncio only those carry anyio's task state.
    async with anyio.create_task_group() as tg:
        tg.start_soon(fn)


async def test_each_backend_takes_its_own_fast_path(
    anyio_backend: tuple[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    found: list[object] = []

    async def look() -> None:
        found.append(_cancel_check._asyncio_task_state())

    if anyio_backend[0] == "trio":
        # trio answers itself: anyio's asyncio state is never looked for.
        def refuse() -> None:
            raise AssertionError

        monkeypatch.setattr(_cancel_check, "_asyncio_task_state", refuse)
        assert _cancel_check.cancel_check() is not _cancel_check._public_check
        return
    await _in_a_task(look)
    assert found[0] is not None


async def test_same_answers_as_anyio_in_every_kind_of_scope() -> None:
    await _in_a_task(_every_kind_of_scope)


async def _every_kind_of_scope() -> None:
    check = _cancel_check.cancel_check()
    answers: list[tuple[str, bool]] = []

    def ask(where: str) -> None:
        now = anyio.current_time()
        for at in (now, now + 5, now + 50):
            fast = check(at)
            assert fast == _public(at), (where, at)
            answers.append((where, fast))

    ask("no scope of its own")
    with anyio.move_on_after(10):
        ask("a deadline in 10 s")
        with anyio.CancelScope(shield=True):
            ask("shielded inside it")
        with anyio.CancelScope() as inner:
            inner.cancel()
            ask("a cancelled scope inside it")
            with anyio.CancelScope(shield=True) as shielded:
                shielded.deadline = anyio.current_time() + 1
                ask("a shield with its own deadline inside the cancelled one")
    with anyio.CancelScope() as outer:
        outer.cancel()
        with anyio.CancelScope():
            ask("below a cancelled scope")
    # The answers cover both sides: not cancelled, past a deadline, cancelled, shielded.
    assert ("no scope of its own", False) in answers
    assert ("a deadline in 10 s", True) in answers  # asked at now + 50
    assert ("a cancelled scope inside it", True) in answers
    assert ("shielded inside it", False) in answers
    assert ("below a cancelled scope", True) in answers


async def test_asked_from_the_task_that_made_it() -> None:
    # A worker makes its check once and asks it after every unit: the scopes it enters
    # later count, and one cancelled by another task is seen once it is.
    seen: list[bool] = []

    async def worker(cancelled: anyio.Event) -> None:
        check = _cancel_check.cancel_check()
        with anyio.CancelScope(shield=True):
            seen.append(check(anyio.current_time()))
            await cancelled.wait()
            seen.append(check(anyio.current_time()))  # the shield hides the cancel
        seen.append(check(anyio.current_time()))  # out of the shield: cancelled

    cancelled = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker, cancelled)
        await anyio.sleep(1)
        tg.cancel_scope.cancel()
        cancelled.set()
    assert seen == [False, False, True]


async def test_a_task_anyio_did_not_start_gets_the_public_answer() -> None:
    # The test's own task on asyncio: anyio keeps no state for it, so nothing to walk.
    check = _cancel_check.cancel_check()
    now = anyio.current_time()
    with anyio.move_on_after(3):
        assert check(now) is False
        assert check(now + 4) is True

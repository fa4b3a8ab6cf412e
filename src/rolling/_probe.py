"""Readiness probing with Kubernetes thresholds, Nomad's min healthy time and a deadline."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, cast

import anyio
import attrs

from ._policies import Readiness
from .typing import HealthResult

__all__ = ["ProbeOutcome", "as_check_function", "probe_once", "wait_ready"]

CheckFunction = Callable[[Any], Awaitable[object]]


def as_check_function(check: object) -> CheckFunction | None:
    """Accept a HealthCheck object (with ``check``) or a plain async function."""
    if check is None:
        return None
    # callable() cannot tell an async function from a sync one: Readiness documents the
    # signature, and probe_once copes with a check that returns a plain answer.
    method = getattr(check, "check", None)
    if method is not None and callable(method):
        return cast("CheckFunction", method)  # a HealthCheck's bound method
    if callable(check):
        return cast("CheckFunction", check)  # a plain async function
    msg = f"not a health check: {check!r}"  # pragma: no cover - validated earlier
    raise TypeError(msg)


def normalise(answer: object) -> HealthResult:
    """Turn what a check returned into a :class:`HealthResult`."""
    if isinstance(answer, HealthResult):
        return answer
    if isinstance(answer, bool):
        return HealthResult(healthy=answer, reason="" if answer else "check returned False")
    if isinstance(answer, tuple):
        items = cast("tuple[object, ...]", answer)  # isinstance cannot know the item types
        if len(items) == 2:  # noqa: PLR2004 - (healthy, reason)
            healthy, reason = items
            return HealthResult(healthy=bool(healthy), reason=str(reason))
    return HealthResult(
        healthy=False, reason=f"check returned {answer!r}, not a bool or HealthResult"
    )


async def probe_once(check: CheckFunction, instance: object, limit: float) -> HealthResult:
    """Run one probe; a time-out or an exception is an unhealthy answer, not an error."""
    try:
        with anyio.fail_after(limit):
            answer: object = check(instance)
            if inspect.isawaitable(answer):
                answer = await answer
    except TimeoutError:
        return HealthResult(healthy=False, reason=f"check timed out after {limit}s")
    except Exception as exc:  # noqa: BLE001 - a crashing check means "not healthy", with the cause
        return HealthResult(healthy=False, reason=f"check raised {type(exc).__name__}: {exc}")
    return normalise(answer)


@attrs.frozen
class ProbeOutcome:
    """How a readiness wait ended.

    Attributes:
        ready: Whether the instance became ready.
        reason: Why not, when it did not.
        probes: How many probes ran.
    """

    ready: bool
    reason: str
    probes: int


async def wait_ready(
    check: CheckFunction | None, instance: object, policy: Readiness
) -> ProbeOutcome:
    """Probe ``instance`` until it is ready, fails its threshold, or the deadline passes."""
    start = anyio.current_time()
    probes = 0
    last_reason = "no probe ran"
    with anyio.move_on_after(policy.deadline):
        await anyio.sleep(policy.initial_delay)
        if check is None:
            await anyio.sleep(policy.min_ready)
            return ProbeOutcome(ready=True, reason="", probes=0)
        successes = 0
        failures = 0
        ready_at: float | None = None
        while True:
            probe_started = anyio.current_time()
            result = await probe_once(check, instance, policy.timeout)
            probes += 1
            now = anyio.current_time()
            if result.healthy:
                successes += 1
                failures = 0
                if successes >= policy.success_threshold:
                    if ready_at is None:
                        # One deadline, compared and slept towards alike: computing the wait
                        # and the test separately can disagree by a rounding error and spin.
                        ready_at = now + policy.min_ready
                    if now >= ready_at:
                        return ProbeOutcome(ready=True, reason="", probes=probes)
            else:
                last_reason = result.reason or "unhealthy"
                successes = 0
                failures += 1
                if ready_at is not None:
                    last_reason += " (during min_ready)"
                ready_at = None
                if policy.failure_threshold is not None and failures >= policy.failure_threshold:
                    return ProbeOutcome(
                        ready=False,
                        reason=f"{failures} failed probes in a row: {last_reason}",
                        probes=probes,
                    )
            # The period runs from one probe's start to the next (Kubernetes' periodSeconds):
            # a probe that took its whole period or more is followed at once.
            delay = max(0.0, probe_started + policy.period - now)
            if ready_at is not None:
                delay = min(delay, ready_at - now)
            await anyio.sleep(delay)
    elapsed = anyio.current_time() - start
    return ProbeOutcome(
        ready=False,
        reason=(
            f"not ready within the {policy.deadline}s deadline"
            f" ({elapsed:.1f}s, last: {last_reason})"
        ),
        probes=probes,
    )

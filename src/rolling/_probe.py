"""Readiness probing with Kubernetes thresholds, Nomad's min healthy time and a deadline."""

from __future__ import annotations

import anyio
import attrs

from ._policies import Readiness
from .health import CheckFunction, probe_once

__all__ = ["ProbeOutcome", "wait_ready"]


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
    return ProbeOutcome(
        ready=False,
        reason=f"not ready within the {policy.deadline}s deadline; last probe: {last_reason}",
        probes=probes,
    )

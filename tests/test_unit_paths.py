"""The flat in-place path and the general one make the same events and leave the same fleet.

Units in place with no hooks and no journal take ``UnitPrograms._replace_in_place``, one
flat generator; any hook sends every unit down the general path. A hook that does nothing
changes nothing else, so the two runs must agree on every instance's phases, in order.
"""

from __future__ import annotations

from typing import Any

import pytest

import rolling
from rolling import Readiness, RollingUpdate, Rollout
from rolling.testing import Latency, SimulatedFleet

pytestmark = pytest.mark.anyio


class _Idle:
    """A hooks object with one hook that does nothing: enough to leave the flat path."""

    async def before_rollout(self, version: str, instances: list[Any]) -> None:
        pass


def _fleet(faults: str) -> SimulatedFleet:
    fleet = SimulatedFleet(6, latency=Latency(replace=1, detach=0.5, attach=0.5, check=0.1))
    if faults == "replace":
        fleet.fault("i-002", replace_raises=1)
        fleet.fault("i-004", replace_raises=True)
    elif faults == "ready":
        fleet.fault("i-003", version="v2", never_ready=True)
    elif faults == "routing":
        fleet.fault("i-001", detach_raises=1)
        fleet.fault("i-005", attach_raises=True)
    return fleet


async def _phases(faults: str, *, routed: bool, checked: bool, hooks: object) -> Any:
    fleet = _fleet(faults)
    seen: list[tuple[str, str, str, int, str | None, str, bool]] = []

    def observe(event: rolling.Event) -> None:
        if isinstance(event, rolling.InstancePhaseChanged):
            seen.append(
                (
                    event.instance_id,
                    str(event.phase),
                    event.version,
                    event.attempt,
                    event.current_id,
                    event.reason,
                    event.rollback,
                )
            )

    rollout: Rollout[Any] = Rollout(
        fleet,
        "v2",
        strategy=RollingUpdate(max_unavailable=2),
        router=fleet if routed else None,
        readiness=Readiness(check=fleet, deadline=5) if checked else Readiness(),
        failure=rolling.FailurePolicy(retries=1, max_failed=1),
        observers=[observe],
        hooks=hooks,
        seed=7,
    )
    result = await rollout.run()
    by_instance: dict[str, list[tuple[Any, ...]]] = {}
    for row in seen:
        by_instance.setdefault(row[0], []).append(row[1:])
    versions = sorted((i.id, i.version) for i in fleet.instances)
    outcomes = [(i.id, i.outcome, i.version, i.serving, i.attempts) for i in result.instances]
    return result.status, outcomes, versions, by_instance


@pytest.mark.parametrize("faults", ["none", "replace", "ready", "routing"])
@pytest.mark.parametrize(("routed", "checked"), [(True, True), (False, False), (True, False)])
async def test_the_flat_path_and_the_general_path_agree(
    faults: str, routed: bool, checked: bool
) -> None:
    flat = await _phases(faults, routed=routed, checked=checked, hooks=None)
    general = await _phases(faults, routed=routed, checked=checked, hooks=_Idle())
    assert flat == general
    status, outcomes, _versions, by_instance = flat
    # Not vacuous: every instance went through phases, and faults showed up where injected.
    assert len(by_instance) == 6
    # A readiness fault needs a check to be seen, a routing fault a router.
    felt = {"none": False, "replace": True, "ready": checked, "routing": routed}[faults]
    if felt:
        assert status is not rolling.RolloutStatus.SUCCEEDED
    else:
        assert status is rolling.RolloutStatus.SUCCEEDED
        assert all(outcome is rolling.InstanceOutcome.UPDATED for _, outcome, *_ in outcomes)

"""Spike: blue-green as a new plan for the machine, carried out by the unchanged runner.

Not a feature (the blue-green strategy lands with its own issue): a check that
the design holds. The forward pass is replaced by a blue-green program built
from the machine's own effects: launch a full green set and wait until it is
ready, switch (attach every green, then detach every blue), hold for a bake
time during which a gate may send traffic back to blue, then terminate blue.
The runner, the ledger and the unit programs are used as they are.
"""

from __future__ import annotations

import anyio
import pytest

import rolling
from rolling import InstanceOutcome, RollingUpdate, Rollout, RolloutStatus
from rolling._effects import Failed, WaitReady, WaitStep
from rolling._machine import Machine, Program
from rolling._passes import Passes
from rolling._runner import Runner
from rolling._slot import Slot
from rolling.testing import InvariantMonitor, SimulatedFleet

pytestmark = pytest.mark.anyio

HOLD = 30.0


class BlueGreenPasses(Passes):
    """The machine's passes with the forward pass replaced by blue-green."""

    healthy_after_switch = True

    def forward(self, desired: int) -> Program:  # noqa: ARG002 - blue-green takes every instance
        machine = self._m
        target = self._s.target
        units = self._units
        blue = [s for s in machine.slots if s.live.version != target]
        for slot in blue:
            machine.unit_began(slot)
        failure = yield from self._launch_green(blue)
        if failure:
            # Before the switch only green exists to undo.
            yield from self._drop_green(blue)
            machine.policy_trigger(f"green failed before the switch: {failure}")
            return
        for slot in blue:
            yield from units.attach(slot, slot.extra, target, extra=True)
        for slot in blue:
            yield from units.detach(slot, slot.live, target)
        yield WaitStep(HOLD)  # the bake time; analysis would run here as a Gate
        if self.healthy_after_switch:
            yield from self._terminate_blue(blue)
        else:
            yield from self._switch_back(blue)

    def _launch_green(self, blue: list[Slot]) -> Program:
        target = self._s.target
        for slot in blue:
            try:
                slot.extra = yield from self._units.call(
                    slot, "launch", None, target, "driver.launch", target
                )
            except Failed as exc:
                return exc.reason
            ok, reason = yield WaitReady(slot.extra)
            if not ok:
                return reason
        return ""

    def _switch_back(self, blue: list[Slot]) -> Program:
        units = self._units
        for slot in blue:
            yield from units.attach(slot, slot.live, slot.old_version)
        for slot in blue:
            yield from units.detach(slot, slot.extra, self._s.target, extra=True)
        yield from self._drop_green(blue)
        for slot in blue:
            slot.outcome = InstanceOutcome.REVERTED
        self._m.trigger("switched back", rolling.RollbackMode.HALT, RolloutStatus.ROLLED_BACK)

    def _terminate_blue(self, blue: list[Slot]) -> Program:
        target = self._s.target
        for slot in blue:
            old, slot.live, slot.extra = slot.live, slot.extra, None
            slot.attached, slot.extra_attached = True, False
            yield from self._units.call(slot, "terminate", old, target, "driver.terminate", old)
            slot.outcome = InstanceOutcome.UPDATED

    def _drop_green(self, blue: list[Slot]) -> Program:
        units = self._units
        for slot in blue:
            green = slot.extra
            if green is not None:
                slot.extra = None
                yield from units.call(slot, "terminate", green, "", "driver.terminate", green)


async def run_blue_green(fleet: SimulatedFleet, *, healthy: bool) -> rolling.RolloutResult:
    # A ceiling of twice the fleet: green stands beside blue until blue goes.
    rollout = Rollout(
        fleet, "v2", strategy=RollingUpdate(max_unavailable=0, max_surge="100%"), router=fleet
    )
    rollout._claim()
    machine = Machine(rollout._settings, listening=False)
    # The one seam the spike needs: the machine's passes, swapped for blue-green's.
    passes = BlueGreenPasses(machine, rollout._settings, machine._units, machine._holds)
    passes.healthy_after_switch = healthy
    machine._passes = passes
    return await Runner(rollout, machine).run()


async def test_blue_green_switches_holds_and_terminates_blue() -> None:
    fleet = SimulatedFleet(6, version="v1")
    monitor = InvariantMonitor(fleet, max_unavailable=0, max_surge=6)
    started = anyio.current_time()
    result = await run_blue_green(fleet, healthy=True)
    assert result.status is RolloutStatus.SUCCEEDED
    assert {i.version for i in fleet.instances} == {"v2"}
    assert len(fleet.instances) == 6
    assert sorted(fleet.attached_ids) == sorted(i.id for i in fleet.instances)
    assert len(fleet.terminated_ids) == 6  # every blue, after the hold
    assert anyio.current_time() - started >= HOLD
    monitor.check_result(result, fleet)
    monitor.assert_ok()
    assert monitor.max_existing == 12  # the whole green set stood beside blue


async def test_blue_green_switches_back_during_the_hold() -> None:
    fleet = SimulatedFleet(4, version="v1")
    monitor = InvariantMonitor(fleet, max_unavailable=0, max_surge=4)
    result = await run_blue_green(fleet, healthy=False)
    assert result.status is RolloutStatus.ROLLED_BACK
    assert {i.version for i in fleet.instances} == {"v1"}
    assert sorted(fleet.attached_ids) == sorted(i.id for i in fleet.instances)
    assert sorted(fleet.terminated_ids) == sorted(fleet.launched_ids)  # every green went
    monitor.check_result(result, fleet)
    monitor.assert_ok()

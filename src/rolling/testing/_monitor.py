"""Check the rollout invariants on every change of a simulated fleet, and at the end.

The rules, as the monitor applies them:

* **Availability floor.** ``floor = desired - max_unavailable``, lowered to the
  number of instances serving when the monitor was created (a fleet that starts
  below the floor must not be made worse). Checked at every *voluntary*
  disruption: the ``begin`` of a ``detach``, ``terminate`` or ``replace`` of an
  instance that serves (see :meth:`SimulatedFleet.is_serving
  <rolling.testing.SimulatedFleet.is_serving>`). The instances still serving
  once it and every instance with a detach, terminate or replace in progress
  are set aside must number at least the floor. Faults that make instances
  unhealthy are not the engine's doing and are never violations by themselves.
* **Capacity ceiling.** At the ``begin`` of every ``launch``, instances that
  exist (live, being launched or being terminated) number at most
  ``desired + max_surge``.
* **No overlap.** No operation starts on an instance that another one is
  still working on (health checks excepted).
* **Terminal truth** and **no leaks**, checked by :meth:`InvariantMonitor.check_result
  <rolling.testing.InvariantMonitor.check_result>`.
"""

from __future__ import annotations

from rolling import InstanceOutcome, InstanceResult, RolloutResult, RolloutStatus

from ._fleet import SimulatedFleet
from ._fleet_records import DISRUPTIVE_OPERATIONS, FleetChange

__all__ = ["InvariantMonitor", "InvariantViolation"]

_FAILING_OUTCOMES = frozenset(
    {InstanceOutcome.INTERRUPTED, InstanceOutcome.REVERT_FAILED, InstanceOutcome.FAILED}
)


class InvariantViolation(AssertionError):  # noqa: N818 - it reads as what it is, like AssertionError
    """A rollout broke one of the invariants an :class:`InvariantMonitor` checks.

    .. versionadded:: 0.1.0
    """


class InvariantMonitor:
    """Watch a :class:`~rolling.testing.SimulatedFleet` and check the rollout invariants.

    Create it before the rollout starts (it registers itself as a listener of
    the fleet and remembers what serves and exists at that moment), run the
    rollout, then call :meth:`check_result` with what the rollout returned.

    A violation is recorded in :attr:`violations`; with ``raise_immediately``
    it is also raised at once, from inside the fleet operation that caused it.
    Code under test that catches exceptions from drivers could swallow it,
    so :meth:`check_result` and :meth:`assert_ok` raise again with everything
    recorded.

    Args:
        fleet: The fleet to watch.
        max_unavailable: Instances the rollout may take out of service at once.
        max_surge: Instances the rollout may add above ``fleet.desired`` at once.
        raise_immediately: Raise :class:`InvariantViolation` on the first violation.

    Attributes:
        fleet: The fleet watched.
        desired: ``fleet.desired``.
        max_unavailable: As given.
        max_surge: As given.
        violations: One message per violation, in order.
        min_serving: Fewest instances seen serving (those with a disruptive
            operation in progress set aside).
        max_existing: Most instances seen existing at once.
        start_ids: Ids of the live instances when the monitor was created.
        start_serving: Instances serving when the monitor was created.

    Example::

        fleet = SimulatedFleet(10)
        monitor = InvariantMonitor(fleet, max_unavailable=2, max_surge=1)
        rollout = Rollout(
            fleet,
            "v2",
            strategy=RollingUpdate(max_unavailable=2, max_surge=1),
            router=fleet,
            readiness=Readiness(check=fleet),
        )
        monitor.check_result(await rollout.run())

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        fleet: SimulatedFleet,
        *,
        max_unavailable: int,
        max_surge: int,
        raise_immediately: bool = True,
    ) -> None:
        self.fleet = fleet
        self.desired = fleet.desired
        self.max_unavailable = max_unavailable
        self.max_surge = max_surge
        self.raise_immediately = raise_immediately
        self.violations: list[str] = []
        self.start_ids: frozenset[str] = frozenset(i.id for i in fleet.instances)
        self.start_serving = fleet.serving_count()
        self._excused: set[str] = set()
        self.min_serving = self._effective_serving()
        self.max_existing = fleet.existing_count()
        fleet.add_listener(self)

    @property
    def floor(self) -> int:
        """Fewest instances that must serve: ``desired - max_unavailable``, capped by the start."""
        return min(max(0, self.desired - self.max_unavailable), self.start_serving)

    @property
    def ceiling(self) -> int:
        """Most instances that may exist: ``desired + max_surge``."""
        return self.desired + self.max_surge

    def excuse_unhealthy(self) -> None:
        """Count instances in traffic but unhealthy now as serving, while they stay in traffic.

        A fault injected during a rollout that makes a serving instance
        unhealthy is never a violation itself, but the floor would still count
        the instance as lost (as Kubernetes counts an unready pod against
        ``maxUnavailable``), so the rollout's next disruption could break it.
        Call this right after such an injection when the rollout should not be
        held to capacity it could not know it lost. The excuse ends once a
        detach, replace or terminate of the instance finishes.
        """
        self._excused.update(
            i.id
            for i in self.fleet.instances
            if self.fleet.is_attached(i.id)
            and self.fleet.is_running(i.id)
            and not self.fleet.is_serving(i.id)
        )

    def close(self) -> None:
        """Stop watching the fleet."""
        self.fleet.remove_listener(self)

    def __call__(self, change: FleetChange) -> None:
        """Check the invariants after ``change`` (called by the fleet)."""
        fleet = self.fleet
        # Statistics first: a violation raised below must not leave them stale.
        self.min_serving = min(self.min_serving, self._effective_serving())
        self.max_existing = max(self.max_existing, fleet.existing_count())
        if change.op == "overlap":
            ops = " and ".join(fleet.in_progress().get(change.instance_id, ()))
            self._violate(f"overlap at t={change.at:g}: {ops} run on {change.instance_id} at once")
        elif change.phase == "begin":
            if change.op in DISRUPTIVE_OPERATIONS and self._serves(change.instance_id):
                serving = self._effective_serving()
                if serving < self.floor:
                    self._violate(
                        f"availability floor broken at t={change.at:g}: {change.op} of "
                        f"{change.instance_id} leaves {serving} serving, below the floor of "
                        f"{self.floor} (desired {self.desired}, max_unavailable "
                        f"{self.max_unavailable}); out of service: {self._out_of_service()}"
                    )
            elif change.op == "launch":
                existing = fleet.existing_count()
                if existing > self.ceiling:
                    self._violate(
                        f"capacity ceiling broken at t={change.at:g}: launching "
                        f"{change.instance_id} makes {existing} instances, above the ceiling "
                        f"of {self.ceiling} (desired {self.desired}, max_surge {self.max_surge})"
                    )
        elif change.op in DISRUPTIVE_OPERATIONS:
            self._excused.discard(change.instance_id)

    def check_result(self, result: RolloutResult, fleet: SimulatedFleet | None = None) -> None:
        """Check that ``result`` tells the truth about the fleet, and that nothing leaked.

        Call it after the rollout returned. It checks:

        * nothing is still being worked on;
        * every instance result that names a ``current_id`` names a live
          instance running its ``version``, in traffic exactly when it says
          ``serving``;
        * every stray an instance result names (an instance its work could not
          terminate) is live and out of traffic, unless a halt or a cancellation
          left a canary's or blue-green's new instance serving beside an
          ``INTERRUPTED`` unit;
        * ``SUCCEEDED``: no instance failed, every live instance but the
          reported strays runs the target and is in traffic, and there are
          ``desired`` of them;
        * ``ROLLED_BACK``: no instance is left ``UPDATED``, every ``REVERTED``
          one is back on its old version and in traffic, and every
          ``REVERT_FAILED`` one says why;
        * no leaks: every live instance was there at the start or is named (as
          a ``current_id`` or a stray); every one out of traffic is reported
          (with ``serving=False``, or as a stray); there are ``desired`` live
          instances besides the strays, unless some instance failed, was
          interrupted or failed to revert, and then every live instance is named.

        Args:
            result: What the rollout returned.
            fleet: The fleet it ran on; the watched one by default.

        Raises:
            InvariantViolation: When ``raise_immediately`` and anything was
                violated, now or during the rollout.
        """
        fleet = fleet or self.fleet
        found: list[str] = []
        found.extend(
            f"{' and '.join(ops)} still in progress on {instance_id} after the rollout returned"
            for instance_id, ops in fleet.in_progress().items()
        )
        found.extend(self._truth(result, fleet))
        found.extend(self._leaks(result, fleet))
        self.violations.extend(found)
        if self.raise_immediately:
            self.assert_ok()

    def assert_ok(self) -> None:
        """Raise :class:`InvariantViolation` listing every violation recorded, if any."""
        if self.violations:
            lines = "\n".join(f"  - {v}" for v in self.violations)
            raise InvariantViolation(f"{len(self.violations)} invariant violation(s):\n{lines}")

    # ---------------------------------------------------------------- internals

    def _violate(self, message: str) -> None:
        self.violations.append(message)
        if self.raise_immediately:
            raise InvariantViolation(message)

    def _disrupted(self) -> set[str]:
        return {
            instance_id
            for instance_id, ops in self.fleet.in_progress().items()
            if DISRUPTIVE_OPERATIONS.intersection(ops)
        }

    def _serves(self, instance_id: str) -> bool:
        fleet = self.fleet
        if instance_id in self._excused:
            return fleet.is_attached(instance_id) and fleet.is_running(instance_id)
        return fleet.is_serving(instance_id)

    def _effective_serving(self) -> int:
        disrupted = self._disrupted()
        return sum(1 for i in self.fleet.instances if i.id not in disrupted and self._serves(i.id))

    def _out_of_service(self) -> str:
        disrupted = self._disrupted()
        out = [i.id for i in self.fleet.instances if i.id in disrupted or not self._serves(i.id)]
        return ", ".join(out) or "none"

    def _truth(self, result: RolloutResult, fleet: SimulatedFleet) -> list[str]:
        # A halt or a cancellation leaves a canary's or blue-green's sets as they are.
        halted = result.status in {
            RolloutStatus.HALTED,
            RolloutStatus.ABORTED,
            RolloutStatus.CANCELLED,
        }
        found = [m for item in result.instances for m in _item_truth(item, fleet, halted)]
        if result.status is RolloutStatus.SUCCEEDED:
            found.extend(self._succeeded_truth(result, fleet))
        elif result.status is RolloutStatus.ROLLED_BACK:
            found.extend(m for item in result.instances for m in _rolled_back_truth(item, fleet))
        return found

    def _succeeded_truth(self, result: RolloutResult, fleet: SimulatedFleet) -> list[str]:
        found = [
            f"SUCCEEDED, but {item.id} ended {item.outcome}"
            for item in result.instances
            if item.outcome not in {InstanceOutcome.UPDATED, InstanceOutcome.SKIPPED}
        ]
        strays = _strays(result)
        kept = [instance for instance in fleet.instances if instance.id not in strays]
        for instance in kept:
            if instance.version != result.target:
                found.append(
                    f"SUCCEEDED, but {instance.id} runs {instance.version}, not {result.target}"
                )
            if not fleet.is_attached(instance.id):
                found.append(f"SUCCEEDED, but {instance.id} is out of traffic")
        if len(kept) != self.desired:
            found.append(
                f"SUCCEEDED with {len(kept)} live instances besides strays, not {self.desired}"
            )
        return found

    def _leaks(self, result: RolloutResult, fleet: SimulatedFleet) -> list[str]:
        found: list[str] = []
        strays = _strays(result)
        named = strays | {i.current_id for i in result.instances if i.current_id is not None}
        reported_out = strays | {
            item.current_id
            for item in result.instances
            if item.current_id is not None and not item.serving
        }
        live = [instance.id for instance in fleet.instances]
        for instance_id in live:
            if instance_id not in named and instance_id not in self.start_ids:
                found.append(f"leak: {instance_id} is live but no instance result names it")
            if not fleet.is_attached(instance_id) and instance_id not in reported_out:
                found.append(
                    f"leak: {instance_id} is out of traffic but not reported with serving=False"
                )
        if len([i for i in live if i not in strays]) != self.desired:
            if any(item.outcome in _FAILING_OUTCOMES for item in result.instances):
                found.extend(
                    f"leak: {len(live)} live instances for {self.desired} desired, and "
                    f"{instance_id} is named by no instance result"
                    for instance_id in live
                    if instance_id not in named
                )
            else:
                found.append(
                    f"leak: {len(live)} live instances for {self.desired} desired, "
                    "and no instance result explains it"
                )
        return found


def _strays(result: RolloutResult) -> set[str]:
    return {stray for item in result.instances for stray in item.strays}


def _item_truth(item: InstanceResult, fleet: SimulatedFleet, halted: bool) -> list[str]:  # noqa: FBT001 - internal
    """Check what one instance result says about what runs in its place, and its strays."""
    where = f"{item.id} ({item.outcome})"
    found: list[str] = []
    # A halt (or a cancellation) leaves a canary's or blue-green's sets as they are: the new
    # instance of a unit it interrupted is a stray that may still take its share of traffic.
    left_serving = halted and item.outcome is InstanceOutcome.INTERRUPTED
    for stray in item.strays:
        if not fleet.is_live(stray):
            found.append(f"{where} names stray {stray}, which is not live")
        elif fleet.is_attached(stray) and fleet.weight_of(stray) > 0 and not left_serving:
            # At weight 0 it is in the router but sent nothing (a paired strategy's leftover).
            found.append(f"{where} names stray {stray}, which is in traffic")
    current = item.current_id
    if current is None:
        if item.serving:
            found.append(f"{where} says serving but names no current_id")
        return found
    if not fleet.is_live(current):
        found.append(f"{where} names {current}, which is not live")
        return found
    actual = fleet.get(current).version
    if actual != item.version:
        found.append(f"{where} says {current} runs {item.version}, but it runs {actual}")
    attached = fleet.is_attached(current)
    if attached != item.serving:
        state = "in" if attached else "out of"
        found.append(f"{where} says serving={item.serving}, but {current} is {state} traffic")
    return found


def _rolled_back_truth(item: InstanceResult, fleet: SimulatedFleet) -> list[str]:
    """Check one instance result of a rollout that rolled back."""
    if item.outcome is InstanceOutcome.UPDATED:
        return [f"ROLLED_BACK, but {item.id} is left updated"]
    if item.outcome is InstanceOutcome.REVERT_FAILED and not item.reason:
        return [f"ROLLED_BACK: {item.id} failed to revert and says no reason"]
    if item.outcome is not InstanceOutcome.REVERTED:
        return []
    current = item.current_id
    if current is None or not fleet.is_live(current):
        return [f"ROLLED_BACK: {item.id} is reverted, but nothing runs in its place"]
    found: list[str] = []
    version = fleet.get(current).version
    if version != item.old_version:
        found.append(
            f"ROLLED_BACK: {item.id} is reverted, but {current} runs {version},"
            f" not {item.old_version}"
        )
    if not fleet.is_attached(current):
        found.append(f"ROLLED_BACK: {item.id} is reverted, but {current} is out of traffic")
    return found

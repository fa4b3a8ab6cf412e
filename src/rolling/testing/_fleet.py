"""A scripted fleet that is a driver, an elastic driver, a router and a health check at once.

Every operation follows the same shape, which is what the invariant monitor
relies on:

1. the call is logged in ``calls``;
2. the instance is registered as busy with the operation (a second operation on
   a busy instance is reported as an ``"overlap"`` change first);
3. listeners hear ``begin`` before anything changes;
4. the operation's latency passes (and a scripted hang or failure happens);
5. the effect lands all at once, then listeners hear ``end``.

An operation that fails or is cancelled leaves the instance as it was and still
reports ``end``. Health checks are exempt from the busy bookkeeping: probing an
instance while it is being worked on is normal.
"""

from __future__ import annotations

import contextlib
import random
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Sequence
from typing import Literal, cast

import anyio
from anyio.lowlevel import checkpoint

from rolling import ConfigError
from rolling.typing import HealthResult, Instance
from rolling.validate import check_int, check_weight

from ._errors import SimulatedFault, SimulationError
from ._faults import Fault, Latency, LatencyValue, Operation, check_latency, sample
from ._fleet_records import (
    FleetCall,
    FleetChange,
    FleetListener,
    Injected,
    Record,
    SimInstance,
    width,
)

__all__ = ["FleetCall", "FleetChange", "FleetListener", "SimInstance", "SimulatedFleet"]


class SimulatedFleet:
    """A scripted, in-memory fleet for testing rollouts without infrastructure.

    One object is a :class:`~rolling.typing.Driver`, an
    :class:`~rolling.typing.ElasticDriver`, a :class:`~rolling.typing.Router`
    and a :class:`~rolling.typing.HealthCheck`, so pass it as all four.
    Instances start running, in traffic and healthy; scripted
    :class:`~rolling.testing.Latency` makes operations take (virtual) time
    and injected :class:`~rolling.testing.Fault` objects make them fail, hang
    or answer unhealthy. Everything random draws from one generator seeded with
    ``seed``, so a run is reproducible.

    Args:
        size: Instances in the starting fleet (ignored when ``ids`` is given).
        version: The version they all run.
        ids: Explicit ids for the starting fleet, instead of ``"i-000"``, ``"i-001"``...
        zones: Zones assigned round robin, in inventory order.
        latency: How long each operation takes; every operation is instant by default.
        seed: Seed of the random generator that latency functions draw from.

    Raises:
        ConfigError: ``size`` is negative, ``ids`` repeat or disagree with
            ``size``, or ``zones`` is empty.

    Example::

        fleet = SimulatedFleet(4, latency=Latency(replace=10, detach=2))
        fleet.inject(Fault(never_ready=True), version="v2")
        rollout = Rollout(fleet, "v2", router=fleet, readiness=Readiness(check=fleet))
        result = await rollout.run()

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        size: int = 0,
        *,
        version: str = "v1",
        ids: Sequence[str] | None = None,
        zones: Sequence[str] = ("a",),
        latency: Latency | None = None,
        seed: int = 0,
    ) -> None:
        check_int("SimulatedFleet.size", size, minimum=0)
        ids = _strings("SimulatedFleet.ids", ids, '["web-1", "web-2"]')
        zones = _strings("SimulatedFleet.zones", zones, '("a", "b")') or []
        if ids is not None:
            if size not in (0, len(ids)):
                raise ConfigError(
                    "SimulatedFleet.ids",
                    f"{len(ids)} ids given for a fleet of size {size}",
                    "pass size=0 (or leave it out) with ids, or as many ids as size",
                )
            if len(set(ids)) != len(ids):
                raise ConfigError(
                    "SimulatedFleet.ids", "ids repeat", "give every instance its own id"
                )
        else:
            ids = [f"i-{n:0{width(size)}d}" for n in range(size)]
        if not zones:
            raise ConfigError("SimulatedFleet.zones", "no zones given", 'pass at least one: ("a",)')
        self._zones = tuple(zones)
        self._latency = latency or Latency()
        self._rng = random.Random(seed)
        self._records: dict[str, Record] = {
            instance_id: Record(
                id=instance_id, version=version, zone=self._zones[n % len(self._zones)]
            )
            for n, instance_id in enumerate(ids)
        }
        self._desired = len(self._records)
        self._launches = 0
        self._launched: list[str] = []
        self._terminated: list[str] = []
        self._latency_overrides: dict[str, dict[str, LatencyValue]] = {}
        self._faults: list[Injected] = []
        self._busy: dict[str, list[str]] = {}
        self._calls: list[FleetCall] = []
        self._listeners: list[FleetListener] = []

    # ---------------------------------------------------------------- scripting

    def inject(
        self, fault: Fault, *, instance_id: str | None = None, version: str | None = None
    ) -> None:
        """Script ``fault`` for one instance, one version, both, or (neither) every instance.

        A fault on a version applies to every instance while it runs that
        version, launched ones included; for ``replace`` and ``launch`` it is
        the version being installed that matches (``Fault(replace_raises=True)``
        on ``"v2"`` makes every update to v2 fail). With both an id and a
        version, the fault applies to that instance while it runs that version.
        An id may name an instance not launched yet (``"n-000"``). Faults add
        up; counters of ``*_raises`` are kept per injection.

        Args:
            fault: What goes wrong.
            instance_id: The instance it applies to.
            version: The version it applies to.
        """
        entry = Injected(fault=fault, instance_id=instance_id, version=version)
        self._faults.append(entry)
        if fault.unhealthy_at_start:
            for record in self._records.values():
                if not record.launching and entry.matches(record.id, record.version):
                    record.sick_version = record.version

    def fault(
        self,
        instance_id: str | None = None,
        *,
        version: str | None = None,
        replace_raises: bool | int = False,
        launch_raises: bool | int = False,
        terminate_raises: bool | int = False,
        detach_raises: bool | int = False,
        attach_raises: bool | int = False,
        check_raises: bool | int = False,
        never_ready: bool = False,
        flapping: float | None = None,
        hang: Sequence[str] | str = (),
        unhealthy_at_start: bool = False,
    ) -> Fault:
        """Build a :class:`~rolling.testing.Fault` from keywords, inject it and return it.

        A shorthand: ``fleet.fault("i-001", replace_raises=2)`` is
        ``fleet.inject(Fault(replace_raises=2), instance_id="i-001")``. The
        keywords mean what the fields of :class:`~rolling.testing.Fault` do.

        Args:
            instance_id: The instance it applies to.
            version: The version it applies to.
            replace_raises: See :class:`~rolling.testing.Fault`.
            launch_raises: See :class:`~rolling.testing.Fault`.
            terminate_raises: See :class:`~rolling.testing.Fault`.
            detach_raises: See :class:`~rolling.testing.Fault`.
            attach_raises: See :class:`~rolling.testing.Fault`.
            check_raises: See :class:`~rolling.testing.Fault`.
            never_ready: See :class:`~rolling.testing.Fault`.
            flapping: See :class:`~rolling.testing.Fault`.
            hang: See :class:`~rolling.testing.Fault`.
            unhealthy_at_start: See :class:`~rolling.testing.Fault`.

        Returns:
            The injected fault.
        """
        fault = Fault(
            replace_raises=replace_raises,
            launch_raises=launch_raises,
            terminate_raises=terminate_raises,
            detach_raises=detach_raises,
            attach_raises=attach_raises,
            check_raises=check_raises,
            never_ready=never_ready,
            flapping=flapping,
            hang=hang,
            unhealthy_at_start=unhealthy_at_start,
        )
        self.inject(fault, instance_id=instance_id, version=version)
        return fault

    def clear_faults(self) -> None:
        """Remove every injected fault: the fleet heals at once."""
        self._faults.clear()
        for record in self._records.values():
            record.sick_version = None

    def set_latency(
        self,
        instance_id: str,
        *,
        replace: LatencyValue | None = None,
        launch: LatencyValue | None = None,
        terminate: LatencyValue | None = None,
        detach: LatencyValue | None = None,
        attach: LatencyValue | None = None,
        check: LatencyValue | None = None,
    ) -> None:
        """Override the latency of some operations for one instance.

        Values mean what they do in :class:`~rolling.testing.Latency`; None keeps
        what was set before. The id may name an instance not launched yet, so
        ``set_latency("n-000", launch=60)`` makes the first launch slow.
        """
        given = {
            "replace": replace,
            "launch": launch,
            "terminate": terminate,
            "detach": detach,
            "attach": attach,
            "check": check,
        }
        chosen = {op: value for op, value in given.items() if value is not None}
        for op, value in chosen.items():
            check_latency(f"SimulatedFleet.set_latency.{op}", value)
        self._latency_overrides.setdefault(instance_id, {}).update(chosen)

    def add_listener(self, listener: FleetListener) -> None:
        """Call ``listener`` synchronously with a :class:`FleetChange` on every change."""
        self._listeners.append(listener)

    def remove_listener(self, listener: FleetListener) -> None:
        """Stop calling ``listener``."""
        self._listeners.remove(listener)

    # ---------------------------------------------------------------- observation

    @property
    def desired(self) -> int:
        """Size of the starting fleet."""
        return self._desired

    @property
    def instances(self) -> tuple[SimInstance, ...]:
        """Snapshots of the live instances, in inventory order (launched ones last)."""
        return tuple(r.snapshot() for r in self._records.values() if not r.launching)

    @property
    def attached_ids(self) -> tuple[str, ...]:
        """Ids of the live instances in traffic, in inventory order."""
        return tuple(r.id for r in self._records.values() if not r.launching and r.attached)

    @property
    def launched_ids(self) -> tuple[str, ...]:
        """Ids of every instance launched successfully, terminated ones included."""
        return tuple(self._launched)

    @property
    def terminated_ids(self) -> tuple[str, ...]:
        """Ids of every instance terminated, in order."""
        return tuple(self._terminated)

    @property
    def calls(self) -> list[FleetCall]:
        """Every call made to the fleet, in the order they started (a copy)."""
        return list(self._calls)

    def get(self, instance_id: str) -> SimInstance:
        """Return a snapshot of the live instance ``instance_id``.

        Raises:
            SimulationError: No live instance has that id.
        """
        return self._live(instance_id, "get").snapshot()

    def is_live(self, instance_id: str) -> bool:
        """Whether ``instance_id`` exists and has finished launching (and is not terminated)."""
        record = self._records.get(instance_id)
        return record is not None and not record.launching

    def is_attached(self, instance_id: str) -> bool:
        """Whether the live instance ``instance_id`` is in traffic."""
        return self.is_live(instance_id) and self._records[instance_id].attached

    def is_running(self, instance_id: str) -> bool:
        """Whether the live instance ``instance_id`` runs (it does not while being replaced)."""
        return self.is_live(instance_id) and self._records[instance_id].running

    def is_serving(self, instance_id: str) -> bool:
        """Whether ``instance_id`` serves: live, attached, running and healthy by its faults.

        Flapping does not count against serving: it is noise in the checks,
        not lost capacity. ``check_raises`` does not either.
        """
        record = self._records.get(instance_id)
        if record is None or record.launching or not record.attached or not record.running:
            return False
        if record.weight == 0:
            return False  # in the router, but sent no request
        return self._fault_health(record, flapping=False).healthy

    def serving_count(self) -> int:
        """How many instances serve now (see :meth:`is_serving`)."""
        return sum(self.is_serving(instance_id) for instance_id in self._records)

    def existing_count(self) -> int:
        """How many instances exist: live ones plus those being launched."""
        return len(self._records)

    def version_counts(self) -> dict[str, int]:
        """How many live instances run each version."""
        return dict(Counter(r.version for r in self._records.values() if not r.launching))

    def in_progress(self) -> dict[str, tuple[str, ...]]:
        """Operations running now, by instance id, oldest first (health checks excluded)."""
        return {instance_id: tuple(ops) for instance_id, ops in self._busy.items()}

    # ---------------------------------------------------------------- the protocols

    async def list_instances(self) -> Sequence[SimInstance]:
        """Return snapshots of the live instances, in inventory order (launched ones last)."""
        self._calls.append(FleetCall("list_instances", None, None))
        await checkpoint()  # as any real call would have
        return list(self.instances)

    async def replace(self, instance: Instance, version: str) -> SimInstance:
        """Put ``version`` on ``instance`` in place and return the new snapshot.

        The instance does not run while this call lasts. Replacing an instance
        that is in traffic works, but takes it out of service: the monitor
        counts it as a voluntary disruption.

        Raises:
            SimulationError: The instance is unknown or terminated.
            SimulatedFault: A fault made the update fail; nothing changed.
        """
        self._calls.append(FleetCall("replace", instance.id, version))
        record = self._live(instance.id, "replace")
        with self._operation("replace", record.id):
            record.running = False
            try:
                await self._perform("replace", record.id, version)
            finally:
                record.running = True
            self._live(record.id, "replace")  # it may have been terminated meanwhile
            if version != record.version:
                record.sick_version = None
            record.version = version
            record.generation += 1
        return record.snapshot()

    async def launch(self, version: str) -> SimInstance:
        """Start a new instance running ``version``, out of traffic, and return it.

        It counts as existing (for the capacity ceiling) from the moment the
        call starts.

        Raises:
            SimulatedFault: A fault made the launch fail; no instance is left.
        """
        instance_id = f"n-{self._launches:03d}"
        zone = self._zones[(self._desired + self._launches) % len(self._zones)]
        self._launches += 1
        self._calls.append(FleetCall("launch", instance_id, version))
        record = Record(
            id=instance_id,
            version=version,
            zone=zone,
            attached=False,
            running=False,
            launching=True,
        )
        self._records[instance_id] = record

        def undo() -> None:  # a failed or cancelled launch leaves nothing behind
            del self._records[instance_id]

        with self._operation("launch", instance_id, undo=undo):
            await self._perform("launch", instance_id, version)
            record.launching = False
            record.running = True
            if any(
                e.fault.unhealthy_at_start and e.matches(instance_id, version) for e in self._faults
            ):
                record.sick_version = version
            self._launched.append(instance_id)
        return record.snapshot()

    async def terminate(self, instance: Instance) -> None:
        """Stop ``instance`` for good. Terminating one in traffic is a voluntary disruption.

        Raises:
            SimulationError: The instance is unknown or already terminated.
            SimulatedFault: A fault made it fail; the instance stays as it was.
        """
        record = self._live(instance.id, "terminate", log=True)
        with self._operation("terminate", record.id):
            record.running = False
            try:
                await self._perform("terminate", record.id, record.version)
            finally:
                record.running = True
            if self._records.pop(record.id, None) is not None:
                record.attached = False
                self._terminated.append(record.id)

    async def detach(self, instance: Instance) -> None:
        """Take ``instance`` out of traffic; returns after its drain time (detach latency).

        It stays in traffic until the call returns; the monitor counts it as
        out of service from the start.

        Raises:
            SimulationError: The instance is unknown or terminated.
            SimulatedFault: A fault made it fail; the instance stays in traffic.
        """
        record = self._live(instance.id, "detach", log=True)
        with self._operation("detach", record.id):
            await self._perform("detach", record.id, record.version)
            record.attached = False

    async def attach(self, instance: Instance) -> None:
        """Put ``instance`` in traffic once the attach latency has passed.

        Raises:
            SimulationError: The instance is unknown or terminated.
            SimulatedFault: A fault made it fail; the instance stays out of traffic.
        """
        record = self._live(instance.id, "attach", log=True)
        with self._operation("attach", record.id):
            await self._perform("attach", record.id, record.version)
            record.attached = True

    async def set_weight(self, instance: Instance, weight: int) -> None:
        """Give ``instance`` a share of traffic (a :class:`~rolling.typing.WeightedRouter`).

        A weight of 0 takes it out of service (the monitor counts it out from
        the start of the call) without detaching it.

        Raises:
            ConfigError: ``weight`` is not an int from 0 to ``MAX_WEIGHT``.
            SimulationError: The instance is unknown or terminated.
        """
        check_weight("SimulatedFleet.set_weight", weight)
        record = self._live(instance.id, "set_weight", log=True)
        op = "weigh_out" if weight == 0 else "weigh"
        with self._operation(cast("Operation", op), record.id):
            await checkpoint()
            record.weight = weight

    def weight_of(self, instance_id: str) -> int:
        """The weight ``instance_id`` was given (``FULL_WEIGHT`` unless set)."""
        return self._records[instance_id].weight

    def traffic_share(self, version: str) -> float:
        """The share of new requests, in percent, that ``version`` gets by weight now."""
        weights = {
            i: r.weight for i, r in self._records.items() if self.is_serving(i) or r.weight == 0
        }
        total = sum(weights.values())
        on = sum(w for i, w in weights.items() if self._records[i].version == version)
        return 100.0 * on / total if total else 0.0

    async def check(self, instance: Instance) -> HealthResult:
        """Probe ``instance`` once: healthy unless it is not running or a fault says otherwise.

        Raises:
            SimulationError: The instance is unknown or terminated.
            SimulatedFault: A ``check_raises`` fault fired.
        """
        record = self._live(instance.id, "check", log=True)
        await self._perform("check", record.id, record.version)
        if self._records.get(record.id) is not record:
            return HealthResult(healthy=False, reason="terminated")
        if not record.running:
            return HealthResult(healthy=False, reason="not running")
        return self._fault_health(record, flapping=True)

    # ---------------------------------------------------------------- machinery

    def _live(self, instance_id: str, op: str, *, log: bool = False) -> Record:
        record = self._records.get(instance_id)
        if log:
            version = record.version if record is not None else None
            self._calls.append(FleetCall(op, instance_id, version))
        if record is None or record.launching:
            gone = "was terminated" if instance_id in self._terminated else "is not in the fleet"
            raise SimulationError(f"{op}: instance {instance_id!r} {gone}")
        return record

    def _notify(self, op: str, instance_id: str, phase: Literal["begin", "end"]) -> None:
        change = FleetChange(op=op, instance_id=instance_id, phase=phase, at=anyio.current_time())
        for listener in tuple(self._listeners):
            listener(change)

    @contextlib.contextmanager
    def _operation(
        self, op: Operation, instance_id: str, undo: Callable[[], None] | None = None
    ) -> Generator[None]:
        """Register ``op`` as in progress and tell listeners; ``undo`` runs if it fails."""
        busy = self._busy.setdefault(instance_id, [])
        busy.append(op)
        try:
            if len(busy) > 1:
                self._notify("overlap", instance_id, "begin")
            self._notify(op, instance_id, "begin")
            yield
        except BaseException:
            if undo is not None:
                undo()
            raise
        finally:
            busy.remove(op)
            if not busy:
                del self._busy[instance_id]
            self._notify(op, instance_id, "end")

    def _delay(self, op: Operation, instance_id: str) -> float:
        overrides = self._latency_overrides.get(instance_id, {})
        value = overrides[op] if op in overrides else self._latency.of(op)
        return sample(value, self._rng)

    async def _perform(self, op: Operation, instance_id: str, version: str) -> None:
        """Spend the latency, then hang or fail as scripted."""
        await anyio.sleep(self._delay(op, instance_id))
        matching = [e for e in self._faults if e.matches(instance_id, version)]
        if any(op in e.fault.hang for e in matching):
            await anyio.sleep_forever()
        for entry in matching:
            limit = entry.fault.raise_limit(op)
            if limit is None or entry.raised[op] < limit:
                entry.raised[op] += 1
                raise SimulatedFault(f"simulated fault: {op} of {instance_id} ({version}) failed")

    def _fault_health(self, record: Record, *, flapping: bool) -> HealthResult:
        if record.sick_version == record.version:
            return HealthResult(healthy=False, reason="unhealthy since the start")
        matching = [e for e in self._faults if e.matches(record.id, record.version)]
        if any(e.fault.never_ready for e in matching):
            return HealthResult(healthy=False, reason="never ready")
        if flapping:
            now = anyio.current_time()
            for entry in matching:
                period = entry.fault.flapping
                if period is None:
                    continue
                anchor = entry.flap_anchor.setdefault(record.id, now)
                if int((now - anchor) // period) % 2:
                    return HealthResult(healthy=False, reason="flapping")
        return HealthResult(healthy=True)


def _strings(field: str, value: object, example: str) -> list[str] | None:
    """``value`` as a list of str, or None; a lone str would be split into its characters."""
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ConfigError(field, f"expected a sequence of str, got {value!r}", f"pass {example}")
    items = list(cast("Iterable[object]", value))
    if not all(isinstance(item, str) for item in items):
        raise ConfigError(field, f"expected a sequence of str, got {value!r}", f"pass {example}")
    return cast("list[str]", items)

"""The protocols third parties implement.

Nothing here needs subclassing: any object with the right attributes and
``async`` methods satisfies a protocol structurally. The engine reads only what
these protocols name.

.. versionadded:: 0.1.0

.. versionchanged:: 0.2.0
   Every protocol lives here: :class:`Journal` and :class:`Lock` too, and the
   :data:`Observer` and :data:`JournalRecord` types.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, runtime_checkable

import attrs

from .events import Event

if TYPE_CHECKING:
    from ._analysis import MeasureContext, Value
    from ._result import RolloutResult

__all__ = [
    "FULL_WEIGHT",
    "MAX_WEIGHT",
    "Driver",
    "ElasticDriver",
    "FlagSetter",
    "FlagSetterFunction",
    "FlagValue",
    "HealthCheck",
    "HealthCheckFunction",
    "HealthResult",
    "Hooks",
    "Instance",
    "InstanceT",
    "Journal",
    "JournalRecord",
    "Lock",
    "MetricProvider",
    "Observer",
    "Router",
    "WeightedRouter",
]

FULL_WEIGHT = 100
"""The weight every instance serves at outside a weighted step.

Weighted strategies set every instance they touch back to this weight when they
end, so after a canary or a blue-green rollout the fleet shares traffic evenly.
"""

MAX_WEIGHT = 256
"""The highest weight a :class:`WeightedRouter` accepts (HAProxy's own limit)."""


@runtime_checkable
class Instance(Protocol):
    """One member of the fleet: a host, VM, container, process or cluster.

    Drivers return their own richer objects; the engine reads only these two
    attributes (plus whatever user key functions for ordering and waves read).
    """

    @property
    def id(self) -> str:
        """Identifier, stable for the life of the instance and unique in the fleet."""
        ...

    @property
    def version(self) -> str:
        """The version the instance runs."""
        ...


InstanceT = TypeVar("InstanceT", bound=Instance)

# Routers and health checks only take instances in, never hand them back, so a router for any
# Instance serves a fleet of a richer instance type: the type checkers want this variance.
_InstanceT_contra = TypeVar("_InstanceT_contra", bound=Instance, contravariant=True)


@runtime_checkable
class Driver(Protocol[InstanceT]):
    """Updates instances in place: the host or container stays, the software changes."""

    async def list_instances(self) -> Sequence[InstanceT]:
        """Return the current fleet, in inventory order."""
        ...

    async def replace(self, instance: InstanceT, version: str) -> InstanceT:
        """Put ``version`` on ``instance`` and return the instance as it now is.

        The returned object must keep the same ``id``. Raise on failure; the
        engine counts the attempt as failed and follows the failure policy.
        """
        ...


@runtime_checkable
class ElasticDriver(Protocol[InstanceT]):
    """Immutable infrastructure: new instances replace old ones."""

    async def list_instances(self) -> Sequence[InstanceT]:
        """Return the current fleet, in inventory order."""
        ...

    async def launch(self, version: str) -> InstanceT:
        """Start a new instance running ``version`` and return it (not yet in traffic)."""
        ...

    async def terminate(self, instance: InstanceT) -> None:
        """Stop ``instance`` for good and release what it holds."""
        ...


@runtime_checkable
class Router(Protocol[_InstanceT_contra]):
    """Sends traffic to instances. Without a router, detach and attach are no-ops."""

    async def detach(self, instance: _InstanceT_contra) -> None:
        """Stop new traffic to ``instance``; return once its in-flight work has drained."""
        ...

    async def attach(self, instance: _InstanceT_contra) -> None:
        """Send traffic to ``instance`` again (or for the first time)."""
        ...


@runtime_checkable
class WeightedRouter(Router[_InstanceT_contra], Protocol[_InstanceT_contra]):
    """A router that can split new traffic between instances by weight.

    Needed by the weighted strategies (:class:`~rolling.Canary`, and
    :class:`~rolling.BlueGreen` for its instant switch); a strategy that needs
    weights refuses a router without ``set_weight`` when the rollout is built.

    The contract every implementation keeps:

    - ``weight`` is an int from 0 to :data:`MAX_WEIGHT`. An instance receives new
      requests (or connections) in proportion to its weight among the attached
      instances: two instances at 50 and 150 get a quarter and three quarters.
    - A weight of 0 sends an instance no new requests but does not drain it:
      requests in flight finish, and it stays attached, so raising the weight
      again takes effect at once.
    - ``set_weight`` may be called before ``attach``: the instance then joins at
      that weight instead of the router's default. An instance attached with no
      weight set serves at :data:`FULL_WEIGHT`.
    - It returns once the new weight applies to the next request.

    .. versionadded:: 0.4.0
    """

    async def set_weight(self, instance: _InstanceT_contra, weight: int) -> None:
        """Give ``instance`` this share of new traffic, relative to the others."""
        ...


@attrs.frozen
class HealthResult:
    """The answer of one health check.

    Attributes:
        healthy: Whether the instance is healthy now.
        reason: A short reason, mostly useful when ``healthy`` is false.
    """

    healthy: bool
    reason: str = ""


@runtime_checkable
class HealthCheck(Protocol[_InstanceT_contra]):
    """Says whether one instance is healthy.

    ``check`` may return a :class:`HealthResult`, a plain ``bool``, or a
    ``(bool, reason)`` tuple. A plain ``async def check(instance)`` function is
    accepted wherever a health check is, too.
    """

    async def check(self, instance: _InstanceT_contra) -> HealthResult | bool | tuple[bool, str]:
        """Probe ``instance`` once."""
        ...


@runtime_checkable
class MetricProvider(Protocol):
    """Measures one metric of a rollout: Prometheus, a scrape, Datadog, CloudWatch ...

    A plain ``async def measure(context)`` function is accepted wherever a
    provider is, too. A provider may also have an ``async def
    prepare(context)`` method: it runs once before the rollout changes
    anything (with no instances on the target yet), so a query the metric
    server rejects stops the rollout at its start. What it raises comes out
    of :meth:`Rollout.run() <rolling.Rollout.run>`.

    .. versionadded:: 0.3.0
    """

    async def measure(self, context: MeasureContext) -> Value | None:
        """Measure now: a number, a mapping of label set to number, or None for no data.

        Raise (or take too long) for an error measurement.
        """
        ...


FlagValue = bool | int | float | str
"""What a feature flag can be set to.

.. versionadded:: 0.4.0
"""


@runtime_checkable
class FlagSetter(Protocol):
    """Sets a feature flag in a flag service: a flagd file, LaunchDarkly, Unleash ...

    The rollout calls it to turn a flag on once every serving instance runs the
    target, and off before a rollback changes anything (:class:`rolling.FlagRules`),
    and for :class:`rolling.SetFlag` steps. A plain ``async def set_flag(flag,
    value)`` function is accepted wherever a setter is, too. ``set`` returns
    once the change is stored; raising (or taking longer than the rollout's
    ``effect_timeout``) means the flag did not change.

    .. versionadded:: 0.4.0
    """

    async def set(self, flag: str, value: FlagValue) -> None:
        """Set ``flag`` to ``value``."""
        ...


FlagSetterFunction = Callable[[str, FlagValue], Awaitable[object]]
"""A plain async function that sets one flag: ``await set_flag("new-format", True)``.

.. versionadded:: 0.4.0
"""


HealthCheckFunction = Callable[[InstanceT], Awaitable["HealthResult | bool | tuple[bool, str]"]]
"""A plain async function that checks one instance."""


Observer = Callable[[Event], object]
"""Called with every :class:`~rolling.events.Event`, as it happens; what it returns is ignored.

Pass observers to ``Rollout(observers=...)`` (and to adapters that report
events of their own, such as :class:`~rolling.drivers.ssh.SSHDriver`). An
observer runs inside the rollout: keep it quick, and do not let it raise.
Each observer gets every event in order, the same order as every
:meth:`~rolling.RolloutHandle.events` stream. It may call the handle's
controls (``handle.promote()`` when a pause starts, say): the
:class:`~rolling.events.ControlRequested` event and what follows come after
the event being delivered, to every observer and stream. One that raises is
called no more; the rollout halts (it ends ``HALTED``, its reason naming
the error, unless it had already ended), and :meth:`Rollout.run() <rolling.Rollout.run>` (or leaving
``async with rollout.start()``) raises that exception. Observers are called
synchronously: an async function is refused with a :class:`~rolling.ConfigError`.

.. versionadded:: 0.2.0
"""


JournalRecord = dict[str, Any]
"""One journal record: a JSON object (its ``"t"`` key names its kind).

.. versionadded:: 0.2.0
"""


@runtime_checkable
class Journal(Protocol):
    """Where a rollout records what it does, so that another process can pick up where it died.

    :class:`~rolling.FileJournal` keeps it in a local file; implement this to
    keep it elsewhere (a database, etcd, object storage).

    .. versionadded:: 0.1.0

    .. versionchanged:: 0.2.0
       Defined here; still importable as ``rolling.Journal``.
    """

    async def load(self) -> Sequence[JournalRecord]:
        """Return every record written so far, oldest first (empty for a new journal)."""
        ...

    async def append(self, record: JournalRecord, *, sync: bool = False) -> None:
        """Add ``record``; with ``sync``, return only once it (and all before it) is durable."""
        ...

    async def close(self) -> None:
        """Make everything durable and release resources."""
        ...


@runtime_checkable
class Lock(Protocol):
    """Excludes a second controller; any backend (a file, etcd, a database row) will do.

    :class:`~rolling.FileLock` is an advisory lock on a local file.

    .. versionadded:: 0.1.0

    A lock that can be *lost* while held (a lease) also has
    ``async def hold(self) -> None``, which keeps it (renewing the lease) and
    returns or raises only once it is lost. The runner awaits it beside the
    rollout, from the moment the lock is taken until it is released (through
    the clean-up of a cancelled run too); when it ends, the rollout halts at
    once (the machine's rule 8): nothing new starts and :meth:`~rolling.Rollout.run`
    raises :class:`~rolling.LockLostError` (or what ``hold`` raised). Such a
    lock should also *fence* its journal: refuse every write once the lock is
    lost, so that, write-ahead, no change to the fleet follows.

    .. versionchanged:: 0.2.0
       Defined here; still importable as ``rolling.Lock``. The optional ``hold``.
    """

    async def acquire(self) -> None:
        """Take the lock or raise :class:`~rolling.LockedError` naming the holder.

        A lock waits only when it was built to (a standby controller, such as
        :class:`~rolling.EtcdLock` with ``wait``); the rollout reads its journal
        only once this returns.
        """
        ...

    async def release(self) -> None:
        """Give the lock back."""
        ...


class Hooks(Generic[InstanceT]):
    """Lifecycle hooks: subclass and override what you need; every method defaults to a no-op.

    Hooks are for acting (drain a queue, warm a cache, post to chat); events are
    for observing. A hook that raises fails the instance it was called for
    (counted like any other failed attempt); ``before_rollout`` raising stops
    the rollout before it touches the fleet. Any object with some of these
    methods works too: the engine calls only the ones it finds.

    .. versionadded:: 0.1.0
    """

    async def before_rollout(self, target: str, instances: Sequence[InstanceT]) -> None:
        """Called once, after planning and before the first change."""

    async def after_rollout(self, result: RolloutResult) -> None:
        """Called once with the result; an exception here is logged, not raised."""

    async def before_batch(self, index: int, instances: Sequence[InstanceT]) -> None:
        """Called before each lockstep batch (``Batches`` only)."""

    async def after_batch(self, index: int, instances: Sequence[InstanceT]) -> None:
        """Called after each lockstep batch (``Batches`` only)."""

    async def before_detach(self, instance: InstanceT) -> None:
        """Called before traffic to ``instance`` stops (CodeDeploy's BeforeBlockTraffic)."""

    async def after_detach(self, instance: InstanceT) -> None:
        """Called once ``instance`` is out of traffic and drained."""

    async def before_replace(self, instance: InstanceT, version: str) -> None:
        """Called before ``instance`` is updated in place."""

    async def after_replace(self, instance: InstanceT) -> None:
        """Called with the instance the driver returned from ``replace``."""

    async def before_launch(self, version: str) -> None:
        """Called before a new instance is launched."""

    async def after_launch(self, instance: InstanceT) -> None:
        """Called with the instance the driver launched."""

    async def before_terminate(self, instance: InstanceT) -> None:
        """Called before ``instance`` is terminated."""

    async def after_terminate(self, instance: InstanceT) -> None:
        """Called after ``instance`` was terminated."""

    async def before_ready(self, instance: InstanceT) -> None:
        """Called before readiness probing of ``instance`` starts (warm caches here)."""

    async def after_ready(self, instance: InstanceT) -> None:
        """Called when ``instance`` passed readiness, before it gets traffic."""

    async def before_attach(self, instance: InstanceT) -> None:
        """Called before traffic to ``instance`` starts (CodeDeploy's BeforeAllowTraffic)."""

    async def after_attach(self, instance: InstanceT) -> None:
        """Called once ``instance`` is in traffic (CodeDeploy's AfterAllowTraffic)."""


HOOK_NAMES: tuple[str, ...] = tuple(
    name for name in vars(Hooks) if name.startswith(("before_", "after_"))
)
"""Names of every hook method, for engines and tests."""

"""A driver, a router and a health check for a made-up platform, written from scratch.

The "platform" is a tiny in-memory cluster of named services. Everything rolling needs
from it is written against the protocols of :mod:`rolling.typing`: no class here
inherits from anything in rolling, and nothing comes from ``rolling.testing``.

* ``InPlaceDriver`` updates a service where it is (``replace``), like a package upgrade
  on a host;
* ``LaunchingDriver`` starts new services and stops old ones (``launch`` / ``terminate``),
  like instances of an auto-scaling group;
* ``ClusterRouter`` takes services in and out of the load balancer;
* ``HealthEndpoint`` answers like a ``/healthz`` URL: any version whose name contains
  "broken" answers 500.

Run it with ``python docs/examples/custom_driver.py``; it takes well under a second.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import TYPE_CHECKING

import anyio

import rolling
import rolling.typing

if TYPE_CHECKING:
    from collections.abc import Sequence

# A real platform takes seconds or minutes for each of these; the example keeps them tiny.
CALL_LATENCY = 0.005
"""Seconds every call to the cluster takes."""
DRAIN_TIME = 0.005
"""Seconds a service takes to finish its in-flight requests once out of the balancer."""


# --------------------------------------------------------------------------- the platform


@dataclasses.dataclass(frozen=True)
class Service:
    """One running service: what the driver hands to rolling.

    rolling reads only ``id`` and ``version`` (the :class:`rolling.typing.Instance`
    protocol); ``zone`` is here for ``Waves`` or ``Order.by`` key functions.
    """

    id: str
    version: str
    zone: str = "zone-a"


class Cluster:
    """The platform's source of truth: which services exist, and which get traffic."""

    def __init__(
        self, names: Sequence[str] = ("web-1", "web-2", "web-3", "web-4"), version: str = "v1"
    ) -> None:
        zones = itertools.cycle(("zone-a", "zone-b"))
        # A dict keeps insertion order, which is the inventory order rolling follows.
        self.services: dict[str, Service] = {
            name: Service(id=name, version=version, zone=next(zones)) for name in names
        }
        self.in_traffic: set[str] = set(self.services)
        self.log: list[str] = []
        self._ids = itertools.count(len(self.services) + 1)

    def new_id(self) -> str:
        """A name no service has had before."""
        return f"web-{next(self._ids)}"

    def versions(self) -> dict[str, str]:
        """Every service's version, by id."""
        return {service.id: service.version for service in self.services.values()}


# --------------------------------------------------------------------------- the adapters


class InPlaceDriver:
    """Satisfies :class:`rolling.typing.Driver`: the service stays, its software changes."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    async def list_instances(self) -> Sequence[Service]:
        await anyio.sleep(CALL_LATENCY)
        return list(self.cluster.services.values())

    async def replace(self, instance: Service, version: str) -> Service:
        await anyio.sleep(CALL_LATENCY)
        current = self.cluster.services.get(instance.id)
        if current is None:
            # Raising is how a driver says "this attempt failed"; the failure policy decides.
            raise LookupError(f"{instance.id} no longer exists")
        # Idempotent: a retry may ask for the version the service already runs.
        updated = dataclasses.replace(current, version=version)
        self.cluster.services[instance.id] = updated
        self.cluster.log.append(f"replace {instance.id} {current.version} -> {version}")
        return updated  # the same id, the new version


class LaunchingDriver:
    """Satisfies :class:`rolling.typing.ElasticDriver`: new services replace old ones."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    async def list_instances(self) -> Sequence[Service]:
        await anyio.sleep(CALL_LATENCY)
        return list(self.cluster.services.values())

    async def launch(self, version: str) -> Service:
        await anyio.sleep(CALL_LATENCY)
        service = Service(id=self.cluster.new_id(), version=version)
        # Created out of traffic: rolling attaches it once it has passed readiness.
        self.cluster.services[service.id] = service
        self.cluster.log.append(f"launch {service.id} {version}")
        return service

    async def terminate(self, instance: Service) -> None:
        await anyio.sleep(CALL_LATENCY)
        # Idempotent: terminating what is already gone is not an error.
        self.cluster.in_traffic.discard(instance.id)
        if self.cluster.services.pop(instance.id, None) is not None:
            self.cluster.log.append(f"terminate {instance.id}")


class ClusterRouter:
    """Satisfies :class:`rolling.typing.Router`: the cluster's load balancer."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    async def detach(self, instance: Service) -> None:
        self.cluster.in_traffic.discard(instance.id)
        # Return only once in-flight requests have drained: rolling may stop it next.
        await anyio.sleep(DRAIN_TIME)
        self.cluster.log.append(f"detach {instance.id}")

    async def attach(self, instance: Service) -> None:
        await anyio.sleep(CALL_LATENCY)
        if instance.id not in self.cluster.services:
            raise LookupError(f"cannot route to {instance.id}: it does not exist")
        self.cluster.in_traffic.add(instance.id)
        self.cluster.log.append(f"attach {instance.id}")


class HealthEndpoint:
    """Satisfies :class:`rolling.typing.HealthCheck`: one probe of one service."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    async def check(self, instance: Service) -> rolling.HealthResult:
        await anyio.sleep(CALL_LATENCY)
        # Ask the platform, not the snapshot rolling holds: the truth is the cluster's.
        current = self.cluster.services.get(instance.id)
        if current is None:
            return rolling.HealthResult(healthy=False, reason="connection refused")
        if "broken" in current.version:
            return rolling.HealthResult(healthy=False, reason="GET /healthz returned 500")
        return rolling.HealthResult(healthy=True)


class AuditHooks:
    """Two lifecycle hooks, as a plain object: rolling calls only the hooks it finds."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    async def before_rollout(self, target: str, instances: Sequence[Service]) -> None:
        self.cluster.log.append(f"rollout of {target} over {len(instances)} services begins")

    async def after_rollout(self, result: rolling.RolloutResult) -> None:
        self.cluster.log.append(f"rollout of {result.target} ended {result.status}")


def readiness(cluster: Cluster) -> rolling.Readiness:
    """Probe every 10 ms; healthy twice in a row, then for 10 ms more; three failures fail."""
    check: rolling.typing.HealthCheck[Service] = HealthEndpoint(cluster)
    return rolling.Readiness(
        check=check,
        period=0.01,
        timeout=0.05,
        success_threshold=2,
        failure_threshold=3,
        min_ready=0.01,
        deadline=1.0,
    )


# --------------------------------------------------------------------------- the rollouts


async def in_place_rollout(cluster: Cluster | None = None) -> rolling.RolloutResult:
    """Update every service in place to v2, half of the cluster at a time."""
    cluster = Cluster() if cluster is None else cluster
    # The annotations let a type checker confirm the protocols are satisfied.
    driver: rolling.typing.Driver[Service] = InPlaceDriver(cluster)
    router: rolling.typing.Router[Service] = ClusterRouter(cluster)
    rollout: rolling.Rollout[Service] = rolling.Rollout(
        driver,
        "v2",
        strategy=rolling.RollingUpdate(max_unavailable="50%"),
        readiness=readiness(cluster),
        router=router,
        hooks=AuditHooks(cluster),
    )
    return await rollout.run()


async def elastic_rollout(cluster: Cluster | None = None) -> rolling.RolloutResult:
    """Replace every service with a new one on v2, never serving with fewer than all."""
    cluster = Cluster() if cluster is None else cluster
    driver: rolling.typing.ElasticDriver[Service] = LaunchingDriver(cluster)
    router: rolling.typing.Router[Service] = ClusterRouter(cluster)
    rollout: rolling.Rollout[Service] = rolling.Rollout(
        driver,
        "v2",
        # Launch one extra first; never take one out before its replacement serves.
        strategy=rolling.RollingUpdate(max_unavailable=0, max_surge=1),
        readiness=readiness(cluster),
        router=router,
    )
    return await rollout.run()


async def failing_rollout(cluster: Cluster | None = None) -> rolling.RolloutResult:
    """Try a version that never becomes healthy; rolling puts v1 back on its own."""
    cluster = Cluster() if cluster is None else cluster
    driver: rolling.typing.Driver[Service] = InPlaceDriver(cluster)
    router: rolling.typing.Router[Service] = ClusterRouter(cluster)
    rollout: rolling.Rollout[Service] = rolling.Rollout(
        driver,
        "v2-broken",
        strategy=rolling.RollingUpdate(max_unavailable=2),
        readiness=readiness(cluster),
        router=router,
        # One retry per service; the first service that still fails exceeds the
        # budget (max_failed=0, the default), and the rollout reverts what it changed.
        failure=rolling.FailurePolicy(retries=1, backoff=rolling.Backoff(initial=0.01)),
        rollback="revert",
    )
    return await rollout.run()


def summary(name: str, result: rolling.RolloutResult) -> str:
    """One line per rollout: its status and how many services ended how."""
    counts = ", ".join(f"{outcome}={n}" for outcome, n in sorted(result.counts.items()))
    line = f"{name}: {result.status} ({counts})"
    return f"{line}: {result.reason}" if result.reason else line


async def main() -> None:
    print(summary("in place", await in_place_rollout()))
    print(summary("elastic", await elastic_rollout()))
    print(summary("failing", await failing_rollout()))


if __name__ == "__main__":
    anyio.run(main)

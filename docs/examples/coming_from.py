"""Bring settings from Kubernetes, ECS and Ansible to a rollout, through rolling.recipes.

Each recipe takes the tool's own setting names and returns the keyword arguments for
``rolling.Rollout``; here each runs over a simulated fleet of ten instances.
"""

from __future__ import annotations

import anyio
import attrs

import rolling
import rolling.recipes
import rolling.testing


async def roll(name: str, options: rolling.recipes.RolloutOptions) -> rolling.RolloutResult:
    """Roll a fresh simulated fleet of ten from v1 to v2 with ``options``."""
    fleet = rolling.testing.SimulatedFleet(10, latency=rolling.testing.Latency(launch=0.5))
    # The recipe gives the readiness timing; the check is the fleet's own health.
    readiness = options.get("readiness", rolling.Readiness())
    options = {**options, "readiness": attrs.evolve(readiness, check=fleet)}
    result = await rolling.Rollout(fleet, "v2", router=fleet, **options).run()
    print(f"{name}: {result.status}, {fleet.version_counts()}")
    return result


def recipes() -> dict[str, rolling.recipes.RolloutOptions]:
    """The same intent, written in three tools' vocabularies."""
    return {
        # spec.strategy.rollingUpdate of a Kubernetes Deployment, with minReadySeconds.
        "kubernetes": rolling.recipes.kubernetes_deployment(
            max_surge="25%", max_unavailable=0, min_ready_seconds=2
        ),
        # An ECS service's deploymentConfiguration, with the deployment circuit breaker.
        "ecs": rolling.recipes.ecs_rolling_update(
            minimum_healthy_percent=50,
            maximum_percent=150,
            desired=10,
            deployment_circuit_breaker=True,
            rollback=True,
        ),
        # An Ansible play's serial and max_fail_percentage.
        "ansible": rolling.recipes.ansible([1, "30%"], max_fail_percentage=25),
    }


async def main() -> list[rolling.RolloutResult]:
    return [await roll(name, options) for name, options in recipes().items()]


if __name__ == "__main__":
    anyio.run(main)

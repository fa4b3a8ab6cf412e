"""A toy fleet kept in a JSON file: ``{"instances": {"t-0": "v1", ...}, "calls": [...]}``.

It is a rolling driver plugin written with public names only. The file is
rewritten on every change, so a test can see what a ``rolling run`` did.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import attrs

from rolling import HealthResult
from rolling.validate import check_int

__all__ = ["ToyDriver", "ToyInstance", "toy_driver", "version_check"]


@attrs.frozen
class ToyInstance:
    """One toy instance."""

    id: str
    version: str


class ToyDriver:
    """Replaces instances by rewriting their version in the file."""

    def __init__(self, path: Path, delay: float) -> None:
        self.path = path
        self.delay = delay

    def _read(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.path.read_text())
        return data

    async def list_instances(self) -> list[ToyInstance]:
        data = await anyio.to_thread.run_sync(self._read)
        return [ToyInstance(i, v) for i, v in data["instances"].items()]

    async def replace(self, instance: ToyInstance, version: str) -> ToyInstance:
        await anyio.sleep(self.delay)

        def write() -> None:
            data = self._read()
            data["instances"][instance.id] = version
            data["calls"].append(["replace", instance.id, version])
            self.path.write_text(json.dumps(data))

        await anyio.to_thread.run_sync(write)
        return ToyInstance(instance.id, version)


def toy_driver(
    *, state: str, instances: int = 3, version: str = "v1", delay: float = 0.0
) -> ToyDriver:
    """The ``toy`` driver: a fleet in the JSON file ``state``, made on first use."""
    check_int("ToyDriver.instances", instances, minimum=1)
    path = Path(state)
    if not path.exists():
        fleet = {f"t-{n}": version for n in range(instances)}
        path.write_text(json.dumps({"instances": fleet, "calls": []}))
    return ToyDriver(path, delay)


def version_check(*, bad: str = "") -> Any:
    """The ``toy-version`` check: an instance on version ``bad`` is unhealthy."""

    async def check(instance: ToyInstance) -> HealthResult:
        await anyio.lowlevel.checkpoint()
        if instance.version == bad:
            return HealthResult(healthy=False, reason=f"{bad} is bad")
        return HealthResult(healthy=True)

    return check

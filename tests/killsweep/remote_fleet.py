"""A Driver that talks to ``fleet_daemon.py`` over its control socket (one connection per call)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from killsweep.remote_router import call

__all__ = ["RemoteFleet", "RemoteInstance"]


@attrs.frozen
class RemoteInstance:
    """An instance of the daemon's fleet, as a rollout and a health check need it."""

    id: str
    version: str
    host: str
    port: int


def _instance(described: dict[str, Any]) -> RemoteInstance:
    return RemoteInstance(
        str(described["id"]), str(described["version"]), str(described["host"]), described["port"]
    )


class RemoteFleet:
    """Implements :class:`rolling.typing.Driver` for the fleet daemon at ``control``.

    ``never_ready`` says which target version never becomes ready (a broken release).
    """

    def __init__(self, control: Path, *, never_ready: str | None = None) -> None:
        self.control = control
        self.never_ready = never_ready

    async def list_instances(self) -> Sequence[RemoteInstance]:
        reply = await call(self.control, {"op": "list"})
        return [_instance(i) for i in reply["instances"]]

    async def replace(self, instance: RemoteInstance, version: str) -> RemoteInstance:
        command = {
            "op": "replace",
            "id": instance.id,
            "version": version,
            "never_ready": version == self.never_ready,
            "caller": os.getpid(),
        }
        return _instance((await call(self.control, command))["instance"])

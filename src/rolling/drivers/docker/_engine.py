"""A small typed face over aiodocker: every call bounded, every failure a DockerDriverError."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiodocker
import anyio

from ._errors import (
    ContainerNotFoundError,
    DockerDriverError,
    ImageNotFoundError,
    engine_error,
)

__all__ = ["Engine"]

_T = TypeVar("_T")


class Engine:
    """One connection to a container engine's API (Docker or Podman).

    Each call is bounded by ``timeout`` seconds (a stop by the grace period on
    top) and raises only :class:`DockerDriverError` subclasses, named after
    what failed (see :func:`engine_error`).
    """

    def __init__(self, url: str | None, timeout: float) -> None:
        """Check that the loop is asyncio's, then connect lazily (no request is made yet)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise DockerDriverError(
                "DockerDriver runs on asyncio only: its client, aiodocker, is built on asyncio"
                " and aiohttp. Run this program with asyncio (anyio.run(main,"
                ' backend="asyncio"), or asyncio.run(main()))'
            ) from None
        try:
            # Any: aiodocker's annotations leave many parameters untyped.
            self.client: Any = aiodocker.Docker(url=url)
        except ValueError as exc:
            raise DockerDriverError(f"cannot use the engine address {url!r}: {exc}") from None
        self.url = url or self.client.docker_host
        self.timeout = timeout
        self.podman = False

    async def call(self, action: str, call: Callable[[], Awaitable[_T]], extra: float = 0) -> _T:
        """Await ``call()`` within the time limit; turn any failure into a DockerDriverError."""
        try:
            with anyio.fail_after(self.timeout + extra):
                return await call()
        except Exception as exc:
            raise engine_error(exc, action, self.url) from exc

    async def connect(self) -> None:
        """Ask the engine its version: fails early when it cannot be reached; notes Podman."""
        version = await self.call("connect", self.client.version)
        components: list[dict[str, Any]] = version.get("Components") or []
        self.podman = any("podman" in str(c.get("Name", "")).lower() for c in components)

    async def close(self) -> None:
        """Close the connection pool."""
        await self.client.close()

    async def list(self, labels: list[str]) -> list[tuple[str, str]]:
        """``(id, name)`` of every container, running or not, with all of ``labels``."""

        async def query() -> list[tuple[str, str]]:
            found = await self.client.containers.list(all=True, filters={"label": labels})
            return [(c.id, str(c["Names"][0]).lstrip("/")) for c in found]

        return await self.call("list containers", query)

    async def inspect(self, name: str) -> dict[str, Any]:
        """``GET /containers/{name}/json``."""
        return await self.call(f"inspect {name}", self.client.containers.container(name).show)

    async def find(self, name: str) -> dict[str, Any] | None:
        """Like :meth:`inspect`, but None when there is no such container."""
        try:
            return await self.inspect(name)
        except ContainerNotFoundError:
            return None

    async def image(self, name: str) -> dict[str, Any] | None:
        """``GET /images/{name}/json``, or None when the engine does not have the image."""
        try:
            return await self.call(
                f"inspect image {name}", lambda: self.client.images.inspect(name)
            )
        except ImageNotFoundError:
            return None

    async def pull(self, name: str) -> None:
        """Pull ``name``; any failure other than an unreachable engine is ImageNotFoundError."""
        try:
            # Pulling can take long: its bound is the time limit ten times over.
            await self.call(
                f"pull {name}", lambda: self.client.images.pull(name), extra=9 * self.timeout
            )
        except ImageNotFoundError:
            raise
        except DockerDriverError as exc:
            if isinstance(exc, ConnectionError | PermissionError):
                raise
            raise ImageNotFoundError(f"cannot pull image {name}: {exc}") from exc

    async def create(self, name: str, body: dict[str, Any]) -> str:
        """Create a container; returns its id."""

        async def query() -> str:
            return str((await self.client.containers.create(config=body, name=name)).id)

        return await self.call(f"create {name}", query)

    async def start(self, name: str) -> None:
        """Start a created (or stopped) container."""
        await self.call(f"start {name}", self.client.containers.container(name).start)

    async def stop(self, name: str, grace: float) -> None:
        """Stop a container: SIGTERM (or its stop signal), ``grace`` seconds, SIGKILL."""
        seconds = math.ceil(grace)
        await self.call(
            f"stop {name}",
            lambda: self.client.containers.container(name).stop(t=seconds),
            extra=seconds,
        )

    async def remove(self, name: str) -> None:
        """Remove a container (stopping it at once if it runs); a missing one is fine."""
        with contextlib.suppress(ContainerNotFoundError):
            await self.call(
                f"remove {name}",
                lambda: self.client.containers.container(name).delete(force=True, v=False),
            )

    async def rename(self, name: str, new_name: str) -> None:
        """Give a container another name."""
        await self.call(
            f"rename {name} to {new_name}",
            lambda: self.client.containers.container(name).rename(new_name),
        )

    async def logs(self, name: str, lines: int) -> str:
        """The last ``lines`` lines a container wrote (output and errors); empty on failure.

        Only used to explain a failure, so a failure to read them is not one more.
        """
        try:
            chunks = await self.call(
                f"logs of {name}",
                lambda: self.client.containers.container(name).log(
                    stdout=True, stderr=True, tail=lines
                ),
            )
        except DockerDriverError:
            return ""
        return "".join(chunks)

    async def libpod_image(self, name: str) -> dict[str, Any] | None:
        """Podman's own ``GET /libpod/images/{name}/json``, or None when it has no such image.

        Unlike the Docker-compatible answer, it reports the image's HEALTHCHECK
        (a top-level ``Healthcheck``, left out when there is none).
        """
        try:
            return await self.call(
                f"inspect image {name}", lambda: self._libpod_get(f"images/{name}/json")
            )
        except ImageNotFoundError:
            return None

    async def run_healthcheck(self, container_id: str) -> dict[str, Any]:
        """Run a container's HEALTHCHECK once (Podman only) and return its health state.

        Podman schedules health checks with systemd timers; where there is no
        systemd, nothing runs them, and this endpoint is how one is run.
        """
        return await self.call(
            f"run the health check of {container_id[:12]}",
            lambda: self._libpod_get(f"containers/{container_id}/healthcheck"),
        )

    async def _libpod_get(self, path: str) -> dict[str, Any]:
        """``GET`` one of Podman's own (libpod) endpoints; an HTTP error is a DockerError."""
        # The libpod endpoints answer only under a version prefix; any libpod 4.x one will do.
        url = f"{self.client.docker_host}/v4.0.0/libpod/{path}"
        async with self.client.session.get(url) as response:
            text = await response.text()
            if response.status >= 400:  # noqa: PLR2004 - the HTTP error range
                message = text
                with contextlib.suppress(ValueError, AttributeError):
                    message = str(json.loads(text).get("message", text))
                raise aiodocker.DockerError(response.status, message)
            answer = json.loads(text)
            return answer if isinstance(answer, dict) else {}  # pyright: ignore[reportUnknownVariableType] - JSON

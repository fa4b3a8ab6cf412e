"""A driver for containers on a Docker Engine API: Docker, Podman and most container hosts.

:class:`DockerDriver` rolls the containers that match a label selector. It is a
:class:`~rolling.typing.Driver` (``replace`` recreates a container with the
new image, same name, ports, volumes, environment and labels), an
:class:`~rolling.typing.ElasticDriver` (``launch`` creates one more on a new
published port, ``terminate`` stops and removes one), a health check (the
container's own HEALTHCHECK) and a hooks object (every image is checked
before anything stops)::

    async with DockerDriver("app=web", port=8080, pull="if-missing") as driver:
        result = await rolling.Rollout(
            driver,
            "registry.example/web:2.1",
            readiness=rolling.Readiness(check=driver.check),
            hooks=driver,
        ).run()

Rules the driver keeps:

* the fleet is what the engine says, every time: no state of its own beyond
  the containers and their labels, so a new controller finds everything a
  killed one left, and a journal resume works on it;
* every container it creates carries ``io.rolling.version`` and
  ``io.rolling.rollout`` labels, and the selector's labels;
* an image is checked (pulled, by the pull policy) before the container it
  replaces is touched;
* a container being replaced is stopped and set aside (renamed
  ``<name>--rolling-old``), never removed, until its successor runs; a
  failed successor is removed and the old one gets its name back;
  :meth:`~DockerDriver.list_instances` repairs what a killed controller left
  half done;
* creating, replacing and removing are shielded from cancellation, and every
  API call is bounded (``api_timeout``);
* every engine failure is a :class:`DockerDriverError` subclass that says
  which kind (:class:`EngineUnreachableError`, :class:`EnginePermissionError`,
  :class:`NameConflictError`, :class:`PortInUseError`,
  :class:`ImageNotFoundError`, ...).

It needs the extra ``rolling[docker]`` (aiodocker) and **asyncio**: aiodocker
is built on asyncio and aiohttp, so entering the driver under trio raises
:class:`DockerDriverError`.

.. versionadded:: 0.2.0
"""

from __future__ import annotations

from ._driver import DockerDriver
from ._errors import (
    ContainerExitedError,
    ContainerNotFoundError,
    DockerAPIError,
    DockerDriverError,
    EnginePermissionError,
    EngineUnreachableError,
    ImageNotFoundError,
    NameConflictError,
    PortInUseError,
)
from ._types import DockerInstance, PullPolicy

__all__ = [
    "ContainerExitedError",
    "ContainerNotFoundError",
    "DockerAPIError",
    "DockerDriver",
    "DockerDriverError",
    "DockerInstance",
    "EnginePermissionError",
    "EngineUnreachableError",
    "ImageNotFoundError",
    "NameConflictError",
    "PortInUseError",
    "PullPolicy",
]

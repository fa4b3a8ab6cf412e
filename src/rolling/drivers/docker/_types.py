"""The Docker driver's instance type and pull policy."""

from __future__ import annotations

import enum
from collections.abc import Mapping

import attrs

__all__ = ["DockerInstance", "PullPolicy"]


class PullPolicy(enum.Enum):
    """When the driver pulls an image; every image is checked before any container stops.

    .. versionadded:: 0.2.0
    """

    NEVER = "never"
    """Use only images already on the engine; a missing one is an error."""
    IF_MISSING = "if-missing"
    """Pull an image only when the engine does not have it."""
    ALWAYS = "always"
    """Pull every image once per driver, even when the engine has it (a moving tag)."""


@attrs.frozen(kw_only=True)
class DockerInstance:
    """One container of a :class:`DockerDriver` fleet, as it was when handed out.

    Attributes:
        id: The container's name, unique on the engine; kept when the container
            is replaced in place (the new container takes the old one's name).
        version: The image reference it runs, or the value of the driver's
            ``version_label``.
        container_id: The engine's id of the container; a replaced instance
            gets a new one.
        image: The image reference the container was created from.
        host: Where its address port is published (``None`` when it publishes none).
        port: The host port its address port is published on (or ``None``).
        running: Whether the container was running when it was looked at.
        labels: The container's labels (waves and orders may read them).

    .. versionadded:: 0.2.0
    """

    id: str
    version: str
    container_id: str
    image: str
    host: str | None
    port: int | None
    running: bool
    labels: Mapping[str, str] = attrs.field(factory=dict[str, str], eq=False, repr=False)

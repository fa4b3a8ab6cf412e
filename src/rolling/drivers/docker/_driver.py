"""The Docker driver: a label-selected fleet of containers on a Docker Engine API."""

from __future__ import annotations

import secrets
import socket
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Literal, Self

import anyio

from rolling import ConfigError, HealthResult
from rolling.net import is_text
from rolling.validate import check_int, check_seconds

from . import _spec as spec
from ._config import container_port, selector_pairs, str_mapping, text_or_none
from ._engine import Engine
from ._errors import (
    ContainerExitedError,
    ContainerNotFoundError,
    DockerDriverError,
    ImageNotFoundError,
    PortInUseError,
    describe_exit,
)
from ._spec import section
from ._types import DockerInstance, PullPolicy

__all__ = ["LEFTOVER_SUFFIX", "DockerDriver"]

LEFTOVER_SUFFIX: Final = "--rolling-old"
"""The suffix a container being replaced in place is renamed with, until its successor runs."""

_PORT_ATTEMPTS: Final = 3
"""How many ports a launch tries when another program takes the one picked first."""
_FREE_PORT_TRIES: Final = 32


class DockerDriver:
    """Rolls a fleet of containers, selected by label, on a Docker Engine API (Docker or Podman).

    Use it as ``async with DockerDriver(...) as driver:``. It is a
    :class:`~rolling.typing.Driver` (``replace`` recreates a container in
    place, same name and ports, new image), an
    :class:`~rolling.typing.ElasticDriver` (``launch`` creates one more
    container on a new port, ``terminate`` stops and removes one), a
    :class:`~rolling.typing.HealthCheck` (:meth:`check`) and a hooks object
    (:meth:`before_rollout` checks every image before anything changes). It
    needs asyncio: aiodocker, its client, does not run on trio.

    Args:
        selector: The fleet's label selector: ``"app=web"``, ``"app"`` (has
            the label), or a mapping ``{"app": "web", "tier": "front"}``
            (every pair must match).
        url: The engine's API, such as ``"unix:///run/podman/podman.sock"`` or
            ``"tcp://10.0.0.5:2375"``; None uses ``DOCKER_HOST``, then the
            usual socket paths.
        version_label: Read an instance's version from this label instead of
            its image reference; ``image`` then says which image a version is.
        image: ``image.format(version=...)`` (or ``image(version)``) is the
            image for a version; None means the version *is* the image
            reference (``"registry.example/web:2.1"``).
        port: The container port whose published address is an instance's
            ``host`` and ``port`` (``8080`` or ``"8080/tcp"``); None means the
            only published one.
        grace: Seconds a stopped container has between its stop signal and SIGKILL.
        pull: When to pull images: ``"never"``, ``"if-missing"`` or ``"always"``
            (a :class:`PullPolicy` or its value).
        env: Environment variables set on every container the driver creates,
            on top of those copied from the container replaced.
        overrides: Create-body keys set last on every container the driver
            creates (``{"HostConfig": {"Memory": 268435456}}``); ``HostConfig``
            and ``Labels`` are merged key by key.
        template: The name of the container that launched containers copy
            their settings from; None picks the first running container of
            the fleet (by name) at each launch.
        name_prefix: Launched containers are named ``<name_prefix>-<6 hex digits>``;
            None uses the selector's first value (``web`` for ``app=web``).
        rollout_id: Value of the ``io.rolling.rollout`` label on every
            container the driver creates (None: a random one per driver), to
            tell which controller made what.
        log_lines: Lines of a failed container's log quoted in the reason.
        api_timeout: Seconds any one API call may take (a stop: ``grace`` more;
            a pull: ten times as long).

    Raises:
        ConfigError: An argument is invalid.

    .. versionadded:: 0.2.0
    """

    def __init__(
        self,
        selector: str | Mapping[str, str],
        *,
        url: str | None = None,
        version_label: str | None = None,
        image: str | Callable[[str], str] | None = None,
        port: int | str | None = None,
        grace: float = 10.0,
        pull: PullPolicy | Literal["never", "if-missing", "always"] = PullPolicy.IF_MISSING,
        env: Mapping[str, str] | None = None,
        overrides: Mapping[str, Any] | None = None,
        template: str | None = None,
        name_prefix: str | None = None,
        rollout_id: str | None = None,
        log_lines: int = 20,
        api_timeout: float = 60.0,
    ) -> None:
        """Check the settings; nothing is asked of the engine before the driver is entered."""
        self._labels = selector_pairs(selector)
        self._url = text_or_none(
            "DockerDriver.url", url, 'pass "unix:///var/run/docker.sock", or None'
        )
        self._version_label = text_or_none(
            "DockerDriver.version_label", version_label, 'pass "app.version", or None'
        )
        if isinstance(image, str) and "{version}" not in image:
            raise ConfigError(
                "DockerDriver.image",
                f"{image!r} does not contain {{version}}",
                'pass a template such as "registry.example/web:{version}"',
            )
        if image is not None and not isinstance(image, str) and not callable(image):
            raise ConfigError(
                "DockerDriver.image", f"expected a str or a callable, got {image!r}", "pass one"
            )
        if self._version_label is not None and image is None:
            raise ConfigError(
                "DockerDriver.image",
                "with a version_label the driver cannot tell the image from the version",
                'pass image="registry.example/web:{version}" too',
            )
        self._image = image
        self._port = container_port(port)
        check_seconds("DockerDriver.grace", grace)
        check_int("DockerDriver.log_lines", log_lines, minimum=0)
        check_seconds("DockerDriver.api_timeout", api_timeout, allow_zero=False)
        try:
            self._pull = PullPolicy(pull)
        except ValueError:
            raise ConfigError(
                "DockerDriver.pull",
                f"expected one of never, if-missing, always; got {pull!r}",
                'pass pull="if-missing", say',
            ) from None
        self._env = dict(str_mapping("DockerDriver.env", env))
        self._overrides = dict(str_mapping("DockerDriver.overrides", overrides, values=object))
        self._template = text_or_none("DockerDriver.template", template, 'pass "web-1", or None')
        first = next(iter(self._labels)).partition("=")
        self._prefix = text_or_none("DockerDriver.name_prefix", name_prefix, 'pass "web", say') or (
            first[2] or first[0]
        )
        self._rollout_id = text_or_none(
            "DockerDriver.rollout_id", rollout_id, 'pass "deploy-42", say'
        ) or secrets.token_hex(6)
        self._grace = float(grace)
        self._log_lines = log_lines
        self._api_timeout = float(api_timeout)
        self._engine: Engine | None = None
        self._closed = False
        self._busy: set[str] = set()
        self._pending_ports: set[int] = set()
        self._images: dict[str, anyio.Lock] = {}
        self._checked: set[str] = set()

    # ---------------------------------------------------------------- context

    async def __aenter__(self) -> Self:
        """Connect to the engine (an error now if it cannot be reached); asyncio only."""
        if self._engine is not None or self._closed:
            raise DockerDriverError("a DockerDriver can be entered only once; build a new one")
        engine = Engine(self._url, self._api_timeout)
        try:
            await engine.connect()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await engine.close()
            raise
        self._engine = engine
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the connection; the containers go on running (they are the fleet)."""
        self._closed = True
        engine, self._engine = self._engine, None
        if engine is not None:
            with anyio.CancelScope(shield=True):
                await engine.close()

    @property
    def podman(self) -> bool:
        """Whether the engine is Podman (its health checks are then run on demand)."""
        return self._open("podman").podman

    @property
    def rollout_id(self) -> str:
        """The ``io.rolling.rollout`` label this driver puts on what it creates."""
        return self._rollout_id

    # ------------------------------------------------------------ the protocol

    async def list_instances(self) -> Sequence[DockerInstance]:
        """Return every container the selector matches, running or not, by name.

        A container a killed controller left renamed in the middle of a
        replace (``<name>--rolling-old``) is repaired first: removed when its
        successor exists, else given its name back (stopped: its health check
        fails, so a rollout replaces it first).
        """
        engine = self._open("list_instances")
        found = await engine.list(self._labels)
        names = {name for _, name in found}
        listed: list[str] = []
        for _, name in found:
            if not name.endswith(LEFTOVER_SUFFIX):
                listed.append(name)
                continue
            original = name.removesuffix(LEFTOVER_SUFFIX)
            if original in self._busy:
                continue  # being replaced by this driver right now
            if original in names:
                await engine.remove(name)
            else:
                await engine.rename(name, original)
                listed.append(original)
        infos = await self._inspect_all(sorted(listed))
        return [self._instance(info) for info in infos if info is not None]

    async def replace(self, instance: DockerInstance, version: str) -> DockerInstance:
        """Recreate ``instance``'s container with ``version``: same name, ports and settings.

        The image is checked (and pulled, by the pull policy) before anything
        stops. Then the old container is stopped with ``grace`` and renamed
        ``<name>--rolling-old``; the new one is created under the old name
        with the old one's settings (see the module's rules) and started; the
        old one is removed. If the new one cannot be created or started, it is
        removed and the old one gets its name back, stopped. The whole change
        is shielded from cancellation.

        Raises:
            ImageNotFoundError: The image is missing and may not or cannot be pulled.
            ContainerNotFoundError: The container no longer exists.
            ContainerExitedError: The new container stopped as it started.
            DockerDriverError: Another engine error (its subclass says which).
        """
        engine = self._open("replace")
        image = self._image_for(version)
        await self.ensure_images([version])
        name = instance.id
        self._claim(name, "replace")
        try:
            old = await engine.find(name)
            if old is None:
                leftover = await engine.find(name + LEFTOVER_SUFFIX)
                if leftover is None:
                    raise ContainerNotFoundError(f"container {name} no longer exists")
                await engine.rename(name + LEFTOVER_SUFFIX, name)
                old = leftover
            body = await self._body_like(old, image, version)
            with anyio.CancelScope(shield=True):
                await self._swap(engine, name, old, body)
            return await self._started(name)
        finally:
            self._busy.discard(name)

    async def launch(self, version: str) -> DockerInstance:
        """Create and start one more container running ``version``, copying the template's settings.

        Its name is ``<name_prefix>-<6 hex digits>``; every port the template
        publishes is published on a free host port (on the template's host
        IP), never one a container of the fleet has; if another program takes
        it first, the launch tries another. A container that could not start
        is removed before this raises.

        Raises:
            ImageNotFoundError: The image is missing and may not or cannot be pulled.
            ContainerExitedError: The new container stopped as it started.
            DockerDriverError: No template container, or another engine error.
        """
        engine = self._open("launch")
        image = self._image_for(version)
        await self.ensure_images([version])
        template, taken = await self._pick_template()
        body = await self._body_like(template, image, version)
        wanted = spec.published(template)
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            name = f"{self._prefix}-{secrets.token_hex(3)}"
            ports = {
                key: [(ip, self._free_port(ip, taken)) for ip, _ in pairs]
                for key, pairs in wanted.items()
            }
            claimed = {number for pairs in ports.values() for _, number in pairs}
            self._pending_ports |= claimed
            self._busy.add(name)
            try:
                with anyio.CancelScope(shield=True):
                    await self._create_started(engine, name, spec.with_ports(body, ports))
                try:
                    return await self._started(name)
                except ContainerExitedError:
                    # Never handed out, so nobody else would ever remove it.
                    with anyio.CancelScope(shield=True):
                        await engine.remove(name)
                    raise
            except PortInUseError:
                if attempt == _PORT_ATTEMPTS:
                    raise
                taken |= claimed
            finally:
                self._pending_ports -= claimed
                self._busy.discard(name)
        raise AssertionError("unreachable")  # pragma: no cover

    async def terminate(self, instance: DockerInstance) -> None:
        """Stop ``instance``'s container with ``grace``, then remove it; a missing one is fine."""
        engine = self._open("terminate")
        name = instance.id
        self._claim(name, "terminate")
        try:
            with anyio.CancelScope(shield=True):
                if await engine.find(name) is not None:
                    await engine.stop(name, self._grace)
                await engine.remove(name)
                await engine.remove(name + LEFTOVER_SUFFIX)
        finally:
            self._busy.discard(name)

    async def check(self, instance: DockerInstance) -> HealthResult:
        """Whether ``instance``'s container runs and, if it has a HEALTHCHECK, passes it.

        A container that is not running is unhealthy, with its exit code and
        the last ``log_lines`` lines of its log as the reason. On Podman the
        HEALTHCHECK is run once per call (Podman schedules them with systemd,
        which may be absent); on Docker the daemon runs it on its interval,
        and this reads the status it last recorded (``starting`` counts as not
        healthy yet). Without a HEALTHCHECK, running is healthy: add a check
        on the published port (``rolling.checks``) for more.
        """
        engine = self._open("check")
        info = await engine.find(instance.id)
        if info is None:
            return HealthResult(healthy=False, reason=f"container {instance.id} does not exist")
        state = section(info, "State")
        if not state.get("Running"):
            logs = await engine.logs(instance.id, self._log_lines)
            reason = describe_exit(instance.id, int(state.get("ExitCode") or 0), logs)
            return HealthResult(healthy=False, reason=reason)
        test: object = section(info, "Config", "Healthcheck").get("Test")
        if not isinstance(test, list) or not test or test[0] == "NONE":
            return HealthResult(healthy=True, reason="running (no HEALTHCHECK)")
        if engine.podman:
            # Runs the check now; its answer has the status, the inspect has the output.
            await engine.run_healthcheck(str(info["Id"]))
            info = await engine.inspect(instance.id)
        health = section(info, "State", "Health")
        status = str(health.get("Status") or "unknown")
        if status == "healthy":
            return HealthResult(healthy=True)
        log: object = health.get("Log")
        output = ""
        if isinstance(log, list) and log and isinstance(log[-1], dict):
            output = str(log[-1].get("Output", "")).strip()  # pyright: ignore[reportUnknownMemberType, reportUnknownArgumentType] - JSON
        return HealthResult(
            healthy=False,
            reason=f"HEALTHCHECK is {status}" + (f": {output}" if output else ""),
        )

    async def before_rollout(self, target: str, instances: Sequence[DockerInstance]) -> None:
        """A hook: check every image the rollout may need (target and rollback) before it starts.

        Pass the driver as ``Rollout(hooks=driver)``, or call
        :meth:`ensure_images` from your own ``before_rollout``: a missing image
        then stops the rollout (status ``HALTED``) before any container is
        detached or stopped. The target's image follows the pull policy; the
        images the fleet runs now (what a rollback needs) must be on the
        engine or be pulled if missing, even under ``"always"``.
        """
        await self.ensure_images([target])
        current = [i.version for i in instances if i.version and i.version != target]
        await self.ensure_images(
            current,
            pull=PullPolicy.NEVER if self._pull is PullPolicy.NEVER else PullPolicy.IF_MISSING,
        )

    async def ensure_images(
        self, versions: Sequence[str], *, pull: PullPolicy | None = None
    ) -> None:
        """Make sure the image of every version is on the engine, by the pull policy.

        ``never``: it must be there already. ``if-missing``: pulled if it is
        not. ``always``: pulled once per driver, even if it is there. Each
        image is checked once per driver; concurrent callers wait for one
        another.

        Args:
            versions: The versions whose images to check.
            pull: The policy for these images; None: the driver's.

        Raises:
            ImageNotFoundError: An image is missing and may not or cannot be
                pulled; the message names it.
        """
        engine = self._open("ensure_images")
        policy = self._pull if pull is None else pull
        for image in dict.fromkeys(self._image_for(v) for v in versions):
            lock = self._images.setdefault(image, anyio.Lock())
            async with lock:
                if image in self._checked:
                    continue
                present = policy is not PullPolicy.ALWAYS and await engine.image(image)
                if not present:
                    if policy is PullPolicy.NEVER:
                        raise ImageNotFoundError(
                            f"image {image} is not on the engine and the pull policy is"
                            ' "never"; build or pull it first, or pass pull="if-missing"'
                        )
                    await engine.pull(image)
                self._checked.add(image)

    # ----------------------------------------------------------------- helpers

    def _open(self, action: str) -> Engine:
        if self._engine is None:
            raise DockerDriverError(
                f"{action}() needs an open driver: use `async with DockerDriver(...) as driver:`"
                if not self._closed
                else f"cannot {action}(): the driver is closed"
            )
        return self._engine

    def _claim(self, name: str, action: str) -> None:
        if name in self._busy:
            raise DockerDriverError(
                f"cannot {action} {name}: another task is replacing or terminating it"
            )
        self._busy.add(name)

    def _image_for(self, version: str) -> str:
        if not is_text(version):
            raise DockerDriverError(f"a version must be a non-empty str, got {version!r}")
        if self._image is None:
            return version
        image: object = (
            self._image.format(version=version)
            if isinstance(self._image, str)
            else self._image(version)
        )
        if not isinstance(image, str) or not image:
            raise DockerDriverError(
                f"image({version!r}) returned {image!r}, not an image reference"
            )
        return image

    def _version_of(self, info: Mapping[str, Any]) -> str:
        config = section(info, "Config")
        if self._version_label is not None:
            return str(section(config, "Labels").get(self._version_label, ""))
        return str(config.get("Image") or info.get("Image") or "")

    def _instance(self, info: Mapping[str, Any]) -> DockerInstance:
        config = section(info, "Config")
        where = spec.address(spec.published(info), self._port, "127.0.0.1")
        return DockerInstance(
            id=str(info.get("Name", "")).lstrip("/"),
            version=self._version_of(info),
            container_id=str(info.get("Id", "")),
            image=str(config.get("Image") or ""),
            host=None if where is None else where[0],
            port=None if where is None else where[1],
            running=bool(section(info, "State").get("Running")),
            labels={str(k): str(v) for k, v in section(config, "Labels").items()},
        )

    async def _inspect_all(self, names: Sequence[str]) -> list[dict[str, Any] | None]:
        engine = self._open("inspect")
        infos: list[dict[str, Any] | None] = [None] * len(names)

        async def one(index: int, name: str) -> None:
            infos[index] = await engine.find(name)  # gone since it was listed: left out

        async with anyio.create_task_group() as tg:
            for index, name in enumerate(names):
                tg.start_soon(one, index, name)
        return infos

    async def _body_like(self, old: Mapping[str, Any], image: str, version: str) -> spec.Body:
        engine = self._open("create")
        image_id = str(old.get("Image", ""))
        old_image = await engine.image(image_id) or {}
        if engine.podman and old_image and "Healthcheck" not in section(old_image, "Config"):
            # Podman's Docker-compatible image inspect leaves out the HEALTHCHECK; its own has it.
            libpod = await engine.libpod_image(image_id)
            if libpod is not None:
                old_image = {**old_image, "Healthcheck": libpod.get("Healthcheck")}
        labels = {"io.rolling.rollout": self._rollout_id, "io.rolling.version": version}
        if self._version_label is not None:
            labels[self._version_label] = version
        for pair in self._labels:
            key, _, value = pair.partition("=")
            labels[key] = value  # keep it in the fleet even if the old one's labels change
        return spec.new_body(
            old,
            old_image,
            image=image,
            labels=labels,
            env=self._env,
            overrides=self._overrides,
            podman=engine.podman,
        )

    async def _swap(
        self, engine: Engine, name: str, old: Mapping[str, Any], body: spec.Body
    ) -> None:
        """Stop and set aside ``old``, create and start ``body`` as ``name``, remove ``old``."""
        aside = name + LEFTOVER_SUFFIX
        if section(old, "State").get("Running"):
            await engine.stop(name, self._grace)
        await engine.remove(aside)  # a leftover of an earlier, interrupted replace
        await engine.rename(name, aside)
        try:
            await self._create_started(engine, name, body)
        except BaseException:
            await engine.rename(aside, name)
            raise
        await engine.remove(aside)

    async def _create_started(self, engine: Engine, name: str, body: spec.Body) -> None:
        """Create and start ``name``; if either fails, remove what was created and raise."""
        try:
            await engine.create(name, body)
            await engine.start(name)
        except BaseException:
            await engine.remove(name)
            raise

    async def _started(self, name: str) -> DockerInstance:
        """The instance for a just-started container; ContainerExitedError if it stopped already."""
        engine = self._open("start")
        info = await engine.inspect(name)
        state = section(info, "State")
        if not state.get("Running"):
            logs = await engine.logs(name, self._log_lines)
            raise ContainerExitedError(
                name=name, exit_code=int(state.get("ExitCode") or 0), logs=logs
            )
        return self._instance(info)

    async def _pick_template(self) -> tuple[dict[str, Any], set[int]]:
        """The container to copy, and every host port the fleet's containers publish."""
        engine = self._open("launch")
        found = await engine.list(self._labels)
        infos = [i for i in await self._inspect_all(sorted(n for _, n in found)) if i is not None]
        taken = {p for info in infos for pairs in spec.published(info).values() for _, p in pairs}
        taken |= self._pending_ports
        if self._template is not None:
            template = await engine.find(self._template)
            if template is None:
                raise ContainerNotFoundError(
                    f"the template container {self._template} does not exist"
                )
            return template, taken
        fleet = [i for i in infos if not str(i.get("Name", "")).endswith(LEFTOVER_SUFFIX)]
        running = [i for i in fleet if section(i, "State").get("Running")]
        if not fleet:
            raise DockerDriverError(
                f"no container matches {', '.join(self._labels)} to copy settings from: create"
                " one first, or pass template= naming a container to copy"
            )
        return (running or fleet)[0], taken

    def _free_port(self, ip: str, taken: set[int]) -> int:
        """A port free on ``ip`` now, not published by the fleet nor handed out already."""
        bind_ip = ip or "0.0.0.0"  # noqa: S104 - probing the interface the binding will use
        family = socket.AF_INET6 if ":" in bind_ip else socket.AF_INET
        for _ in range(_FREE_PORT_TRIES):
            # Binding and closing at once never blocks; the kernel picks an unused port.
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.bind((bind_ip, 0))
                port: int = sock.getsockname()[1]
            if port not in taken and port not in self._pending_ports:
                taken.add(port)
                return port
        raise DockerDriverError(f"no free port on {bind_ip} after {_FREE_PORT_TRIES} tries")

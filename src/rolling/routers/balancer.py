"""A built-in TCP load balancer: weighted round robin over attached instances, with draining.

:class:`Balancer` listens on one loopback port and forwards every client
connection to one attached backend, byte for byte, in both directions. It
implements :class:`rolling.typing.Router`, so a rollout can take instances out
of traffic and put them back::

    async with Balancer() as lb:
        for instance in fleet:
            await lb.attach(instance)
        result = await Rollout(driver, "v2", router=lb).run()

Rules, in the order a connection meets them:

1. Each accepted client connection goes to the *next* attached backend by
   smooth weighted round robin (as nginx does it): every backend of non-zero
   weight adds its weight to its running score, the highest score wins (the
   earliest attached on a tie) and loses the sum of the weights. Every
   backend serves at :data:`~rolling.typing.FULL_WEIGHT` unless
   :meth:`Balancer.set_weight` said otherwise, so equal weights are plain
   round robin in attach order. With no backend attached at a weight above 0,
   the client is closed (``refused``).
2. Connecting to the backend is bounded by ``connect_timeout``. A failed
   connection closes the client (``refused``), unless ``retries`` allows
   another try (default: never, so failures stay visible). A retry goes to a
   backend not tried yet for this connection, picked by the same weighted
   round robin among the rest (never one at weight 0); with none left, the
   client is closed.
3. Bytes flow both ways until both directions have ended. An end of stream
   from one side is passed on as a half-close (``send_eof``) to the other,
   whose direction keeps flowing; a reset on either side tears down both.
4. :meth:`Balancer.detach` takes a backend out of the rotation at once, then
   waits until its open connections (counted from the moment a backend is
   picked until both directions end) reach zero, for at most
   ``drain_timeout``; past it, it returns anyway and counts a drain time-out.
5. :meth:`Balancer.set_weight` applies to the next connection accepted. A
   weight of 0 keeps the backend attached but picks it for no new connection;
   its open connections keep flowing (no drain). Any change of weights or of
   the attached set restarts the scores from zero, so the order after it is
   the same whatever came before.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Container
from types import TracebackType
from typing import Any, Self

import anyio
import anyio.abc
import anyio.lowlevel
import attrs

from rolling import ConfigError, RollingError
from rolling.net import Address, address_of, default_address, describe_connect_error, is_text
from rolling.typing import FULL_WEIGHT
from rolling.validate import check_callable, check_int, check_seconds, check_weight

from ._accept import accept, socket_listeners

__all__ = ["BackendStats", "Balancer", "BalancerError", "BalancerStats"]

logger = logging.getLogger("rolling.balancer")

# accept() fails with these when the process or the system runs out of
# resources; the listener itself is fine, so wait a little and accept again
# (what trio's serve_listeners does) instead of stopping the balancer.
_ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
_ACCEPT_BACKOFF = 0.1
_MAX_PORT = 65535


class BalancerError(RollingError, RuntimeError):
    """A :class:`Balancer` was used in a way it does not support.

    For example: attaching before ``async with`` entered it, or an instance
    whose address cannot be found.

    .. versionadded:: 0.1.0
    """


@attrs.frozen(kw_only=True)
class BackendStats:
    """Counters of one backend, at one moment.

    Attributes:
        id: The instance id the backend is keyed by.
        address: The ``(host, port)`` new connections go to.
        attached: Whether the backend is in the rotation.
        active: Connections open now, including ones still connecting.
        total: Connections made to the backend since it was first attached.
        failed: Connection attempts to the backend that failed or timed out.
        weight: Its share of new connections, relative to the other attached
            backends (0: none).

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.4.0 ``weight``.
    """

    id: str
    address: tuple[str, int]
    attached: bool
    active: int
    total: int
    failed: int
    weight: int = FULL_WEIGHT


@attrs.frozen(kw_only=True)
class BalancerStats:
    """Counters of a :class:`Balancer`, at one moment.

    Attributes:
        accepted: Client connections accepted.
        refused: Client connections closed without reaching a backend: none
            was attached, or connecting failed.
        drain_timeouts: Detaches that returned because ``drain_timeout``
            passed with connections still open.
        active: Client connections open now.
        backends: Every backend ever attached, by instance id, detached ones
            included.

    .. versionadded:: 0.1.0
    """

    accepted: int
    refused: int
    drain_timeouts: int
    active: int
    backends: dict[str, BackendStats]


@attrs.define
class _Backend:
    """Mutable book-keeping for one backend; :class:`BackendStats` is its snapshot."""

    id: str
    address: tuple[str, int]
    attached: bool = True
    active: int = 0
    total: int = 0
    failed: int = 0
    weight: int = FULL_WEIGHT
    score: int = 0
    """The running score of smooth weighted round robin."""
    retry_score: int = 0
    """The running score of the rounds that pick a backend to retry on."""
    changed: anyio.Event | None = None
    """Set (and dropped) when ``active`` reaches zero or the backend is re-attached."""

    def wake(self) -> None:
        if self.changed is not None:
            self.changed.set()
            self.changed = None

    def snapshot(self) -> BackendStats:
        return BackendStats(
            id=self.id,
            address=self.address,
            attached=self.attached,
            active=self.active,
            total=self.total,
            failed=self.failed,
            weight=self.weight,
        )


class Balancer:
    """A TCP load balancer on loopback that implements :class:`~rolling.typing.Router`.

    Use it as ``async with Balancer() as lb:``; entering it starts listening
    (read the bound port from :attr:`port`), leaving it stops listening and
    closes every connection, also when the block is cancelled. Instances are
    keyed by their ``id``; their address comes from ``address`` (default:
    their ``host`` and ``port`` attributes).

    Args:
        host: Interface to listen on.
        port: Port to listen on; 0 picks a free one.
        address: Maps an instance to the ``(host, port)`` it serves on.
        drain_timeout: Longest :meth:`detach` waits for open connections.
        connect_timeout: Longest connecting to a backend may take.
        retries: How many other backends to try when connecting fails, each
            one not tried yet for that connection, picked by weight among the
            rest (weight 0 never); fewer when fewer are left. The default, 0,
            closes the client instead, so a broken backend shows.

    Raises:
        ConfigError: An argument is invalid.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        address: Address | None = None,
        drain_timeout: float = 30.0,
        connect_timeout: float = 5.0,
        retries: int = 0,
    ) -> None:
        """Check the settings; nothing is opened until ``async with``."""
        if not is_text(host):
            raise ConfigError(
                "Balancer.host", f"expected a non-empty str, got {host!r}", 'pass "127.0.0.1"'
            )
        check_int("Balancer.port", port, minimum=0)
        if port > _MAX_PORT:
            raise ConfigError(
                "Balancer.port", f"must be <= {_MAX_PORT}, got {port}", "pass 0 for any free port"
            )
        check_callable("Balancer.address", address, allow_none=True)
        check_seconds("Balancer.drain_timeout", drain_timeout)
        check_seconds("Balancer.connect_timeout", connect_timeout, allow_zero=False)
        check_int("Balancer.retries", retries, minimum=0)
        self._host = host
        self._requested_port = port
        self._address: Address = default_address if address is None else address
        self._drain_timeout = float(drain_timeout)
        self._connect_timeout = float(connect_timeout)
        self._retries = retries

        self._state = "new"  # "new" -> "running" -> "closed"
        self._port: int | None = None
        self._listener: anyio.abc.Listener[anyio.abc.SocketStream] | None = None
        self._task_group: anyio.abc.TaskGroup | None = None

        self._backends: dict[str, _Backend] = {}
        self._rotation: list[_Backend] = []
        self._pending: dict[str, int] = {}
        """Weights set before their instance was first attached, by instance id."""
        self._accepted = 0
        self._refused = 0
        self._drain_timeouts = 0
        self._active = 0

    # -- lifecycle -------------------------------------------------------------

    async def __aenter__(self) -> Self:
        """Start listening and accepting connections."""
        if self._state != "new":
            raise BalancerError("a Balancer can be entered once; build a new one")
        listener = await anyio.create_tcp_listener(
            local_host=self._host, local_port=self._requested_port
        )
        try:
            sockets = socket_listeners(listener)
        except TypeError as exc:  # pragma: no cover - anyio's own
            await listener.aclose()
            raise BalancerError(f"unexpected listener from anyio: {exc}") from None
        task_group = anyio.create_task_group()
        try:
            await task_group.__aenter__()
        except BaseException:  # pragma: no cover - entering a task group does not fail
            with anyio.CancelScope(shield=True):
                await listener.aclose()
            raise
        self._listener = listener
        self._task_group = task_group
        self._port = int(sockets[0].extra(anyio.abc.SocketAttribute.local_port))  # noqa: S610 - anyio's typed attributes, not Django's QuerySet.extra
        self._state = "running"
        for each in sockets:
            task_group.start_soon(self._accept_loop, each, task_group)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        """Stop listening and close every connection (in-flight ones are cut)."""
        task_group, listener = self._task_group, self._listener
        if task_group is None or listener is None:
            raise BalancerError("__aexit__ without __aenter__")
        self._state = "closed"
        self._rotation.clear()
        for backend in self._backends.values():
            backend.attached = False
        task_group.cancel_scope.cancel()
        try:
            return await task_group.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            # The task group wraps whatever the ``async with`` block raised.
            # When that is all there is, let it propagate as it was raised:
            # the block's exception is the caller's, not the balancer's.
            if exc is not None and _only(group, exc):
                return False
            raise
        finally:
            # Shielded: the listening socket must close even when the exit is
            # itself being cancelled.
            with anyio.CancelScope(shield=True):
                await listener.aclose()

    # -- the Router protocol ---------------------------------------------------

    async def attach(self, instance: Any) -> None:
        """Put ``instance`` in the rotation (idempotent).

        Attaching an instance that is attached already only updates its
        address, for new connections.

        Raises:
            BalancerError: The balancer is not running, or the instance's
                address cannot be found.
        """
        self._require_running("attach")
        try:
            address = address_of(self._address, instance)
        except ValueError as exc:
            raise BalancerError(str(exc)) from None
        key = str(instance.id)
        backend = self._backends.get(key)
        if backend is None:
            weight = self._pending.pop(key, FULL_WEIGHT)
            backend = self._backends[key] = _Backend(id=key, address=address, weight=weight)
            self._rotation.append(backend)
            self._restart_scores()
        else:
            backend.address = address
            if not backend.attached:
                backend.attached = True
                self._rotation.append(backend)
                self._restart_scores()
                backend.wake()  # a detach still draining it has nothing left to wait for
        await anyio.lowlevel.checkpoint()

    async def detach(self, instance: Any) -> None:
        """Take ``instance`` out of the rotation and wait for its connections to end.

        No new connection goes to it once this is called. The wait ends when
        its open connections reach zero, when it is attached again, or after
        ``drain_timeout`` (counted in :attr:`BalancerStats.drain_timeouts`;
        it does not raise). Unknown instances are ignored, and so is every
        detach once the balancer has closed (no traffic flows any more).

        Raises:
            BalancerError: The balancer was never entered.
        """
        if self._state == "closed":
            return
        self._require_running("detach")
        backend = self._backends.get(str(instance.id))
        if backend is None:
            return
        if backend.attached:
            backend.attached = False
            self._rotation.remove(backend)
            self._restart_scores()
        with anyio.move_on_after(self._drain_timeout):
            while backend.active and not backend.attached:
                if backend.changed is None:
                    backend.changed = anyio.Event()
                await backend.changed.wait()
        if backend.active and not backend.attached:
            self._drain_timeouts += 1
            logger.warning(
                "detach(%s): %d connection(s) still open after the %ss drain timeout",
                backend.id,
                backend.active,
                self._drain_timeout,
            )

    async def set_weight(self, instance: Any, weight: int) -> None:
        """Give ``instance`` this share of new connections, relative to the other backends.

        It applies to the next connection accepted. A weight of 0 keeps the
        backend attached but sends it no new connection; the ones it has keep
        flowing. Before ``instance`` is first attached (even before ``async
        with``), the weight is kept for when it is; a detached backend keeps
        its weight for when it is attached again. Once the balancer has
        closed, this does nothing.

        Args:
            instance: Keyed by its ``id``, as :meth:`attach` keys it.
            weight: An int from 0 to :data:`~rolling.typing.MAX_WEIGHT`.

        Raises:
            ConfigError: ``weight`` is not an int in that range (nothing changes).
        """
        check_weight("Balancer.set_weight.weight", weight)
        if self._state == "closed":
            return
        key = str(instance.id)
        backend = self._backends.get(key)
        if backend is None:
            self._pending[key] = weight
        elif backend.weight != weight:
            backend.weight = weight
            if backend.attached:
                self._restart_scores()
        await anyio.lowlevel.checkpoint()

    # -- inspection --------------------------------------------------------------

    @property
    def host(self) -> str:
        """The interface the balancer listens on."""
        return self._host

    @property
    def port(self) -> int:
        """The port the balancer listens on.

        Raises:
            BalancerError: The balancer was never entered.
        """
        if self._port is None:
            raise BalancerError("the port is known once the Balancer is entered (async with)")
        return self._port

    @property
    def backends(self) -> tuple[str, ...]:
        """Ids of the attached backends (weight 0 included), in attach order."""
        return tuple(backend.id for backend in self._rotation)

    def stats(self) -> BalancerStats:
        """A snapshot of the counters."""
        return BalancerStats(
            accepted=self._accepted,
            refused=self._refused,
            drain_timeouts=self._drain_timeouts,
            active=self._active,
            backends={key: backend.snapshot() for key, backend in self._backends.items()},
        )

    # -- internals ---------------------------------------------------------------

    def _require_running(self, action: str) -> None:
        if self._state == "new":
            raise BalancerError(f"cannot {action} before the Balancer is entered (async with)")
        if self._state == "closed":
            raise BalancerError(f"cannot {action}: the Balancer has closed")

    def _restart_scores(self) -> None:
        for backend in self._rotation:
            backend.score = backend.retry_score = 0

    def _pick(self, tried: Container[str] = ()) -> _Backend | None:
        """Smooth weighted round robin: O(backends), and allocates nothing.

        A retry (``tried`` not empty) runs its own round, over the backends not
        tried yet for its connection, on scores of its own: the retries are
        shared among those by weight, and the first picks keep their order.
        """
        retry = bool(tried)
        best: _Backend | None = None
        best_score = 0
        total = 0
        for backend in self._rotation:
            weight = backend.weight
            if weight and backend.id not in tried:
                total += weight
                if retry:
                    backend.retry_score += weight
                    score = backend.retry_score
                else:
                    backend.score += weight
                    score = backend.score
                # Strictly greater: a tie goes to the one attached first.
                if best is None or score > best_score:
                    best, best_score = backend, score
        if best is not None:
            if retry:
                best.retry_score -= total
            else:
                best.score -= total
        return best

    async def _accept_loop(
        self, listener: anyio.abc.SocketListener, task_group: anyio.abc.TaskGroup
    ) -> None:
        while True:
            try:
                client = await accept(listener)
            except OSError as exc:
                if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                    raise
                logger.warning("accept() failed (%s); retrying in %ss", exc, _ACCEPT_BACKOFF)
                await anyio.sleep(_ACCEPT_BACKOFF)
                continue
            self._accepted += 1
            task_group.start_soon(self._serve, client)

    async def _serve(self, client: anyio.abc.SocketStream) -> None:
        self._active += 1
        try:
            async with client:
                if not await self._forward(client):
                    self._refused += 1
        finally:
            self._active -= 1

    async def _forward(self, client: anyio.abc.SocketStream) -> bool:
        """Send ``client`` to a backend; False when none could be reached."""
        tried: set[str] = set()
        for _attempt in range(self._retries + 1):
            backend = self._pick(tried)
            if backend is None:  # none attached at a weight above 0 and not tried yet
                return False
            tried.add(backend.id)
            # Counted from the pick, so a detach that starts while this
            # connection is still being made waits for it as well.
            backend.active += 1
            try:
                try:
                    with anyio.fail_after(self._connect_timeout):
                        upstream = await anyio.connect_tcp(*backend.address)
                except OSError as exc:  # TimeoutError is an OSError too
                    backend.failed += 1
                    reason = (
                        f"timed out after {self._connect_timeout}s"
                        if isinstance(exc, TimeoutError)
                        else describe_connect_error(exc)
                    )
                    logger.debug("backend %s at %s: %s", backend.id, backend.address, reason)
                    continue
                backend.total += 1
                async with upstream:
                    await _splice(client, upstream)
                return True
            finally:
                backend.active -= 1
                if not backend.active:
                    backend.wake()
        return False


def _only(group: BaseExceptionGroup[BaseException], exc: BaseException) -> bool:
    """Whether ``exc`` is the one exception in ``group`` (at any depth)."""
    members = group.exceptions
    if len(members) != 1:
        return False
    (member,) = members
    if isinstance(member, BaseExceptionGroup):
        return _only(member, exc)  # pyright: ignore[reportUnknownArgumentType] - a group of BaseException
    return member is exc


async def _splice(left: anyio.abc.SocketStream, right: anyio.abc.SocketStream) -> None:
    """Copy bytes both ways until both directions have ended."""
    async with anyio.create_task_group() as task_group:
        task_group.start_soon(_pump, left, right, task_group.cancel_scope)
        task_group.start_soon(_pump, right, left, task_group.cancel_scope)


async def _pump(
    source: anyio.abc.SocketStream, sink: anyio.abc.SocketStream, both: anyio.CancelScope
) -> None:
    """Copy one direction; pass its end on as a half-close."""
    try:
        async for chunk in source:
            await sink.send(chunk)
        await sink.send_eof()
    except (anyio.BrokenResourceError, OSError):
        # A reset on either side: nothing more can flow in this connection, so
        # stop the other direction too rather than leave it hanging.
        both.cancel()

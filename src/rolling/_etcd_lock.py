"""A lock on etcd: a key bound to a lease, kept alive while the rollout runs.

Rules:

1. The lock is the key ``<prefix>/<fleet>/lock``, created in a transaction only
   if it does not exist (its create revision is 0), bound to a lease of
   ``ttl`` seconds. The revision that created it (:attr:`EtcdLock.revision`)
   names this holding: the journal's writes are conditioned on it (fencing).
2. ``hold()`` renews the lease every ``ttl / 3`` seconds. The lock is *valid*
   until the time a renewal was sent plus ``ttl`` (etcd cannot expire it
   sooner). Past that, it is *in doubt* until a renewal answers: a renewal
   that finds the lease gone, or a fenced write that finds the key changed,
   means it is *lost*, for good; etcd unreachable for ``doubt`` seconds past
   validity means it is lost too (nobody can tell, so this controller gives
   up). A lost lock raises :class:`~rolling.LockLostError` from ``hold()``
   and from every later :meth:`EtcdLock.confirm`.
3. Taking the lock again while it is held only confirms it. A standby
   (``wait > 0``) polls the key every :data:`POLL` seconds, keeping
   its own lease alive meanwhile, until it can create it or ``wait`` passes
   (:class:`~rolling.LockedError` naming the holder). It gets the lock at
   most ``ttl`` seconds plus one poll after the holder stopped renewing.
4. aetcd runs on asyncio (grpc.aio): on any other event loop the first call
   raises :class:`~rolling.ConfigError`, before anything touches the fleet.
"""

from __future__ import annotations

import asyncio
import importlib
import ipaddress
import json
import math
import os
import socket
import time
from collections.abc import Iterable, Sequence
from typing import Any, cast

import anyio

from ._errors import ConfigError
from ._lock import LockedError, LockLostError
from .net import is_text
from .validate import check_int, check_seconds

__all__ = ["POLL", "DroppedCallError", "EtcdLock", "unreachable"]

POLL = 0.1
"""Seconds between a standby's tries for the lock."""
_MIN_TTL = 2
"""etcd's shortest lease."""


class DroppedCallError(Exception):
    """etcd cancelled a call from its side (the member serving it went away)."""


def unreachable() -> tuple[type[Exception], ...]:
    """The errors that mean "etcd did not answer" (retry), not "etcd said no"."""
    errors = _aetcd()
    return (
        errors.ConnectionFailedError,
        errors.ConnectionTimeoutError,
        TimeoutError,
        DroppedCallError,
    )


def _client_error() -> type[Exception]:
    error: type[Exception] = _aetcd().ClientError
    return error


def _aetcd() -> Any:
    """The aetcd module (an optional dependency; it ships no types, so it is used as Any)."""
    return importlib.import_module("aetcd")


def _listed(value: object) -> list[object]:
    """``value``'s items, or a lone ``value`` (then refused as not a str) when not iterable."""
    return list(cast("Iterable[object]", value)) if isinstance(value, Iterable) else [value]


def _target(field: str, endpoints: str | Sequence[str]) -> tuple[str, int]:
    """Aetcd's ``host`` and ``port`` for ``endpoints``: gRPC's ``ipv4:`` list when several."""
    fix = 'pass "host:port", or several "ip:port" (IPv4 literals) in a list'
    items: list[object] = [endpoints] if isinstance(endpoints, str) else _listed(endpoints)
    if not all(isinstance(item, str) for item in items):
        raise ConfigError(field, f"expected a str or a list of str, got {endpoints!r}", fix)
    listed = [e.strip() for item in map(str, items) for e in item.split(",") if e.strip()]
    if not listed:
        raise ConfigError(field, "no endpoint given", fix)
    parsed: list[tuple[str, int]] = []
    for endpoint in listed:
        host, _, port = endpoint.removeprefix("http://").rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(field, f"{endpoint!r} is not host:port", fix)
        parsed.append((host, int(port)))
    if len(parsed) == 1:
        return parsed[0]
    for host, _ in parsed:
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ConfigError(field, f"{host!r} is not an IPv4 address", fix) from None
    # gRPC balances over every address of an ``ipv4:`` target (round_robin): a dead member
    # then costs no failed call. aetcd joins host and port, so the last port goes apart.
    head = ",".join(f"{h}:{p}" for h, p in parsed[:-1])
    return f"ipv4:{head},{parsed[-1][0]}", parsed[-1][1]


def _require_asyncio(what: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise ConfigError(
            what,
            "runs on asyncio only (its client, aetcd, is built on grpc.aio)",
            "run the rollout on asyncio (anyio.run(main, backend='asyncio')), "
            "or use FileJournal on trio",
        ) from None


class EtcdLock:
    """A lease lock on etcd with background keep-alive and fencing; see the module rules.

    Args:
        endpoints: The cluster's client addresses: ``"host:port"``, or several
            ``"ip:port"`` (a list or one comma-separated string) to survive the
            loss of a member.
        fleet: Names the fleet; the lock is ``<prefix>/<fleet>/lock``.
        prefix: Where rolling's keys live in etcd.
        ttl: Seconds of the lease (whole, at least 2, etcd's minimum): how long
            a dead or paused holder keeps others out.
        wait: Seconds :meth:`acquire` waits for a held lock (a standby
            controller); 0 fails at once with :class:`~rolling.LockedError`.
        doubt: Seconds past validity a holder that cannot reach etcd keeps
            trying before it gives up the lock (default ``3 * ttl``).

    Needs ``pip install 'rolling[etcd]'`` and asyncio.

    .. versionadded:: 0.2.0
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        fleet: str,
        prefix: str = "/rolling",
        ttl: int = 10,
        wait: float = 0.0,
        doubt: float | None = None,
    ) -> None:
        self.host, self.port = _target("EtcdLock.endpoints", endpoints)
        if not is_text(fleet) or "/" in fleet:
            raise ConfigError(
                "EtcdLock.fleet", f"{fleet!r} is empty or has a '/'", "name the fleet: 'web'"
            )
        if not is_text(prefix) and prefix != "":
            raise ConfigError(
                "EtcdLock.prefix", f"expected a str, got {prefix!r}", 'pass "/rolling"'
            )
        # The toolkit's checks: a str, NaN or inf failed raw in int() or was taken (wait=nan).
        check_int("EtcdLock.ttl", ttl, minimum=_MIN_TTL)
        check_seconds("EtcdLock.wait", wait)
        check_seconds("EtcdLock.doubt", doubt, allow_none=True)
        try:
            _aetcd()  # an optional dependency: say so now, not mid-run
        except ImportError:
            raise ConfigError(
                "EtcdLock", "needs the aetcd package", "pip install 'rolling[etcd]'"
            ) from None
        self.fleet = fleet
        self.prefix = prefix.rstrip("/")
        self.key = f"{self.prefix}/{fleet}/lock".encode()
        self.ttl = int(ttl)
        self.wait = float(wait)
        self.doubt = 3.0 * ttl if doubt is None else float(doubt)
        self.revision = 0
        """The create revision of the lock key while this lock holds it (0: not held)."""
        self._client: Any = None
        self._lease: int | None = None
        self._valid_until = -math.inf
        self._lost: LockLostError | None = None
        self._renewing: anyio.Lock | None = None
        self.holder = json.dumps({"pid": os.getpid(), "host": socket.gethostname()})
        """What this controller writes about itself into the lock key."""

    # ------------------------------------------------------------ client

    async def client(self) -> Any:
        """The connected aetcd client (shared with the journal)."""
        _require_asyncio("EtcdLock")
        if self._client is None:
            self._client = _aetcd().Client(
                host=self.host, port=self.port, options={"grpc.lb_policy_name": "round_robin"}
            )
        return self._client

    @property
    def rpc_timeout(self) -> float:
        """Seconds one call to etcd may take before it is retried."""
        return max(1.0, self.ttl / 3)

    async def call_etcd(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """One aetcd call, bounded by :attr:`rpc_timeout`."""
        client = await self.client()
        try:
            with anyio.fail_after(self.rpc_timeout):
                return await getattr(client, method)(*args, **kwargs)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # a real cancellation of ours
            # grpc.aio raises CancelledError for a call the server cancelled (its member
            # died mid-call): a failed call, to retry, not a cancellation.
            raise DroppedCallError(method) from None

    # ------------------------------------------------------------ the lock

    async def acquire(self) -> None:
        """Take the lock, waiting up to ``wait`` seconds; else raise :class:`LockedError`.

        Taking it again while it is held only confirms it, so a controller can
        take it before it builds its driver (a driver that reads the fleet's
        state when it starts must do so only once no other controller acts)
        and then run the rollout, which takes the lock it already holds.
        """
        if self.revision and self._lost is None:
            await self.confirm()
            return
        try:
            await self._take()
        except BaseException:
            # Not taken (held by another, etcd unreachable, cancelled): leave no channel open.
            await self.release()
            raise

    async def _take(self) -> None:
        client = await self.client()
        tx = client.transactions
        give_up = time.monotonic() + self.wait
        self._lost = None
        self._renewing = anyio.Lock()
        lease = await self.call_etcd("lease", self.ttl)
        self._lease = lease.id
        self._valid_until = time.monotonic() + self.ttl
        key = self.key
        while True:
            sent = time.monotonic()
            responses: Any = None
            try:
                ok, responses = await self.call_etcd(
                    "transaction",
                    compare=[tx.create(key) == 0],
                    success=[tx.put(key, self.holder.encode(), lease=self._lease), tx.get(key)],
                    failure=[tx.get(key)],
                )
            except unreachable():
                ok = False
            if ok:
                self.revision = int(responses[-1][0][1].create_revision)
                self._valid_until = sent + self.ttl
                return
            if time.monotonic() >= give_up:
                holder = "unknown holder"
                if responses and responses[-1]:
                    holder = responses[-1][0][0].decode(errors="replace")
                raise LockedError(key.decode(), holder)
            if self._valid_until - time.monotonic() < 2 * self.ttl / 3:
                await self._renew()  # the standby's own lease must outlive its wait
            await anyio.sleep(POLL)

    async def hold(self) -> None:
        """Renew the lease every ``ttl / 3`` seconds; raise :class:`LockLostError` once lost."""
        while True:
            await anyio.sleep(self.ttl / 3)
            await self.confirm(renew=True)

    async def confirm(self, *, renew: bool = False) -> None:
        """Return while the lock is valid (renewing it when due or asked); raise once lost."""
        while True:
            if self._lost is not None:
                raise self._lost
            if not renew and time.monotonic() < self._valid_until:
                return
            try:
                await self._renew()
            except unreachable():
                if time.monotonic() > self._valid_until + self.doubt:
                    self.lose(f"etcd did not answer for {self.doubt:g}s past the lease's end")
                    continue
                await anyio.sleep(POLL)
                continue
            renew = False

    async def _renew(self) -> None:
        renewing = self._renewing
        if renewing is None or self._lease is None:
            self.lose("the lock was not taken")
            return
        async with renewing:
            sent = time.monotonic()
            if self._lost is not None:
                return
            reply = await self.call_etcd("refresh_lease", self._lease)
            if reply is None or int(reply.TTL) <= 0:
                self.lose(f"its lease ran out (ttl {self.ttl}s), so another controller may hold it")
                return
            self._valid_until = max(self._valid_until, sent + int(reply.TTL))

    def lose(self, why: str) -> None:
        """Mark the lock lost for good (a fenced write was refused, the lease is gone)."""
        if self._lost is None:
            self._lost = LockLostError(
                f"lost the lock {self.key.decode()}: {why}; this controller stopped and made no "
                "further change; the controller holding the lock now resumes the rollout"
            )
        self.revision = 0

    @property
    def lost(self) -> bool:
        """Whether the lock was lost while held."""
        return self._lost is not None

    async def release(self) -> None:
        """Give the lock back (revoke the lease, which deletes the key) and close the client."""
        try:
            if self._lease is not None and self._lost is None:
                await self._revoke()
        finally:
            self.revision = 0
            client, self._client = self._client, None
            if client is not None:
                with anyio.CancelScope(shield=True):
                    await client.close()

    async def _revoke(self) -> None:
        lease, self._lease = self._lease, None
        if lease is not None:
            try:
                await self.call_etcd("revoke_lease", lease)
            except _client_error():
                pass  # unreachable, or the lease already ran out: either way it ends within ttl

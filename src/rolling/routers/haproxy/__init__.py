"""A router over HAProxy's Runtime API: drain, maintenance and ready, per server.

:class:`HAProxyRouter` takes instances out of an HAProxy backend and puts them
back, by sending commands to HAProxy's Runtime API (the ``stats socket``, at
``level admin``) over a unix socket or TCP::

    router = HAProxyRouter("/run/haproxy/admin.sock", check=HTTPCheck("/healthz"))
    result = await Rollout(driver, "v2", router=router).run()

Each instance is one ``server`` line of a backend: by default server
``instance.id`` of backend ``app``; pass ``server=`` to map it otherwise.

Rules, as HAProxy 2.6 sees them:

1. :meth:`HAProxyRouter.detach` sends ``set server <b>/<s> state drain`` (no
   new sessions go to it), waits until its current and queued sessions
   (``scur`` and ``qcur`` of ``show stat``) reach zero, for at most
   ``drain_timeout`` (past it, it logs a warning and goes on), then sends
   ``set server <b>/<s> state maint``. A server already in maintenance only
   gets ``maint`` again: ``drain`` would take it *out* of maintenance.
2. :meth:`HAProxyRouter.attach` first probes the instance with ``check`` until
   it is healthy (for at most ``up_timeout``), because HAProxy counts a
   server it is told is ready as UP at once, before any check of its own. It
   then updates the server's address and port with ``set server <b>/<s> addr
   <ip> port <port>`` when they changed, sends ``set server <b>/<s> state
   ready``, and waits (for at most ``up_timeout``) until ``show stat`` says
   plain ``UP`` (or ``no check`` for a server without checks). ``UP 1/2``
   and the like do not count: that is HAProxy's "up, but not yet confirmed"
   which a server enters the moment it leaves maintenance. With ``fall N``,
   plain ``UP`` takes ``N - 1`` passing checks of HAProxy's own after
   ``ready``.
3. Every command opens its own connection, sends one line and reads the reply
   to the end (what ``echo "show stat" | socat stdio <socket>`` does), all
   within ``command_timeout``. Nothing is kept open between commands.
4. :meth:`HAProxyRouter.set_weight` sends ``set weight <b>/<s> <N>`` and reads
   it back with ``get weight <b>/<s>`` (``N (initial M)``), raising when the
   two differ. It remembers ``N``, and :meth:`HAProxyRouter.attach` sets the
   remembered weight (or :data:`~rolling.typing.FULL_WEIGHT`) just before
   ``state ready``. Weight 0 is no drain: the server stays ``UP`` and keeps
   its sessions.

.. versionadded:: 0.1.0
"""

from ._router import HAProxyRouter
from ._runtime import (
    HAProxyConnectionError,
    HAProxyError,
    HAProxyLookupError,
    HAProxyPermissionError,
    ServerAddress,
    ServerName,
    ServerStatus,
    Socket,
)

__all__ = [
    "HAProxyConnectionError",
    "HAProxyError",
    "HAProxyLookupError",
    "HAProxyPermissionError",
    "HAProxyRouter",
    "ServerAddress",
    "ServerName",
    "ServerStatus",
    "Socket",
]

"""Health checks that implement :class:`rolling.typing.HealthCheck`.

* :class:`TCPCheck`: healthy when a TCP connection opens.
* :class:`HTTPCheck`: healthy when ``GET path`` answers with an expected status
  and, optionally, a body that matches.

Both find an instance's address through its ``host`` and ``port`` attributes,
or through an ``address`` callable you pass. Use one as a rollout's readiness
check: ``Readiness(check=HTTPCheck("/healthz"))``.

Why :class:`HTTPCheck` is a small client on anyio streams rather than an
optional extra such as httpx:

* A readiness probe needs one thing from HTTP: a ``GET`` with a status code
  and a small body. That is a few dozen lines on anyio's byte streams, all of
  it bounded (line, head and body sizes, and the whole exchange in time).
* No new dependency: the core stays attrs, anyio and typing-extensions, and
  HTTP probes work in every installation.
* The same code runs on asyncio and trio, so probes behave identically on
  both, with anyio's cancellation semantics throughout.
* Fewer moving parts per probe. Each probe opens a fresh connection and closes
  it (``Connection: close``), which is what a readiness probe should do: a
  pooled keep-alive connection could keep answering from a process that no
  longer accepts new connections. There is no pool, no redirect following, no
  cookie jar, no proxy discovery from the environment, nothing that could make
  a probe answer for something other than the instance it names.

Anything richer (authentication flows, HTTP/2, redirects) is better written as
a plain ``async def check(instance)`` with the client of your choice.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from ._http import HTTPCheck
from ._tcp import TCPCheck

__all__ = ["HTTPCheck", "TCPCheck"]

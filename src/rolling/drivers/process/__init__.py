"""A driver for local OS processes, each serving on its own loopback port.

:class:`ProcessDriver` is both a :class:`~rolling.typing.Driver` (``replace``
restarts a process on the same port, under the same id) and an
:class:`~rolling.typing.ElasticDriver` (``launch`` starts one more process on a
fresh port, ``terminate`` stops one for good)::

    def command(version: str, port: int) -> list[str]:
        return ["/opt/app/" + version + "/bin/serve", "--port", str(port)]

    async with ProcessDriver(command, grace=10) as driver:
        await driver.spawn(3, "v1")
        result = await rolling.Rollout(driver, "v2", readiness=...).run()

Rules the driver keeps:

* no shell, ever: ``command`` returns the argument vector;
* every child runs in its own session and process group, and signals go to the
  whole group, so whatever a child starts goes down with it;
* stopping is SIGTERM, up to ``grace`` seconds for the group to exit, then
  SIGKILL, and the child is always reaped: no zombie is left behind (what the
  child started itself is orphaned when the child exits, and reaped by init);
* leaving the ``async with`` block (normally, on an error or on cancellation)
  stops every process the driver started, shielded from cancellation;
* starting and stopping are shielded too, so a cancelled caller never leaves a
  process the driver does not know about.

With ``state_file``, the fleet outlives the controller: the driver keeps a
small JSON file listing every process (id, version, address, pid and start
time), rewritten atomically on every change, and a new driver given the same
file *adopts* the processes still running when it is entered. A controller
that is killed (even with SIGKILL) leaves its fleet serving, and the next one
picks it up::

    async with ProcessDriver(command, state_file=Path("fleet.json")) as driver:
        result = await rolling.Rollout(driver, "v2", journal=...).run()
    # leaving the block leaves the fleet running (keep_on_exit)

It needs POSIX process groups (Linux, macOS, the BSDs), not Windows;
``state_file`` needs Linux (it reads ``/proc``).

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from ._driver import ProcessDriver
from ._types import Command, ProcessDriverError, ProcessInstance

__all__ = ["Command", "ProcessDriver", "ProcessDriverError", "ProcessInstance"]

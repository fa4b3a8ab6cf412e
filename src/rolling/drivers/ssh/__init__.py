"""A driver for hosts reached over SSH, with one shell command per phase.

:class:`SSHDriver` is a :class:`~rolling.typing.Driver`: ``replace`` updates a
host in place by running the ``stop``, ``deploy`` and ``start`` commands on it,
then the ``probe`` command to confirm the version it now runs::

    hosts = [
        SSHHost(name="web-1", address="10.0.0.11", app_port=8000, labels={"zone": "a"}),
        SSHHost(name="web-2", address="10.0.0.12", app_port=8000, labels={"zone": "b"}),
    ]
    commands = SSHCommands(
        probe="cat /srv/app/VERSION",
        stop="systemctl stop app",
        deploy="/srv/app/fetch {version} && printf %s {version} > /srv/app/VERSION",
        start="systemctl start app",
    )
    events = rolling.LoggingObserver()
    async with SSHDriver(hosts, commands, observers=[events]) as driver:
        result = await rolling.Rollout(driver, "v2", readiness=..., observers=[events]).run()

Rules the driver keeps:

* every value substituted into a command (``{version}``, ``{id}``, ``{host}``,
  ``{port}`` and label keys) is quoted with ``shlex.quote`` and may hold no
  control character; templates that put a field anywhere but in a plain word
  of a command (inside quotes, ``$(...)`` or a comment, after what the check
  does not follow, as an argument of ``eval``, ``let``, ``[[ ... ]]`` and the
  like), or ask for a field that does not exist, are refused when they are
  built: no version string or host field can inject shell;
* host keys are verified, against ``~/.ssh/known_hosts`` by default or keys
  pinned per host; turning verification off takes an argument named
  ``insecure_no_host_key_check``;
* one connection per host, opened on first use and reused by every command
  after; at most ``concurrency`` commands run at once; every connection
  attempt and every command has a time limit, and a command that times out or
  loses its connection drops that connection, so the next command reconnects;
* every command that ran reports a :class:`CommandFinished` event, with its
  exit status and output, secrets redacted.

asyncssh runs on asyncio only, so this driver does too: entering it from trio
raises :class:`~rolling.ConfigError`. It needs the ``ssh`` extra:
``pip install 'rolling[ssh]'``.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

from ._config import SSHCommands, SSHHost, SSHInstance
from ._driver import SSHDriver
from ._errors import SSHCommandError, SSHConnectError, SSHError, SSHHostKeyError
from ._reports import CommandFinished, SSHStatistics

__all__ = [
    "CommandFinished",
    "SSHCommandError",
    "SSHCommands",
    "SSHConnectError",
    "SSHDriver",
    "SSHError",
    "SSHHost",
    "SSHHostKeyError",
    "SSHInstance",
    "SSHStatistics",
]

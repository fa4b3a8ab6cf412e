"""Real drivers that :class:`~rolling.Rollout` can update.

Each driver lives in its own module and is imported from there, so that
importing :mod:`rolling` never pulls in what a driver needs:

* :mod:`rolling.drivers.process`: local OS processes, each serving on its own
  loopback port.
* :mod:`rolling.drivers.docker`: containers on a Docker Engine API (Docker,
  Podman), selected by label (extra ``rolling[docker]``, asyncio only).
* :mod:`rolling.drivers.ssh`: hosts reached over SSH, with quoted command
  templates and host-key verification on (extra ``rolling[ssh]``).

.. versionadded:: 0.1.0
"""

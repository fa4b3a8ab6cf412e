"""Real drivers that :class:`~rolling.Rollout` can update.

Each driver lives in its own module and is imported from there, so that
importing :mod:`rolling` never pulls in what a driver needs:

* :mod:`rolling.drivers.process`: local OS processes, each serving on its own
  loopback port.

.. versionadded:: 0.1.0
"""

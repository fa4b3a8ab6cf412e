"""Traffic routers that implement :class:`rolling.typing.Router`.

* :mod:`rolling.routers.balancer`: a built-in TCP load balancer on loopback, for
  demos, tests and single-host deployments.

.. versionadded:: 0.1.0
"""

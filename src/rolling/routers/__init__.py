"""Traffic routers that implement :class:`rolling.typing.Router`.

* :mod:`rolling.routers.balancer`: a built-in TCP load balancer on loopback, for
  demos, tests and single-host deployments.
* :mod:`rolling.routers.haproxy`: HAProxy through its Runtime API (drain, wait,
  maintenance; ready only once HAProxy's own checks say UP).

Both are :class:`rolling.typing.WeightedRouter` implementations: ``set_weight``
splits new traffic between instances (docs/weights.md).

.. versionadded:: 0.1.0
"""

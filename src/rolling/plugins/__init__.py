"""Plugins found by name, through entry points.

Drivers, routers, health checks and metric providers are *plugins*: each is an
entry point in one of four groups, and a rollout file names it by its entry
point's name. Rolling's own adapters are registered the same way, in its
``pyproject.toml``; a third-party package registers its own::

    [project.entry-points."rolling.drivers"]
    nomad = "rolling_nomad:driver"

An entry point's object is a *factory*: a callable that takes the settings of
its table in the rollout file as keyword arguments (TOML values: str, int,
float, bool, lists and tables) and returns the plugin. The factory only checks
and stores its settings; nothing may touch the fleet yet, because
``rolling validate`` calls it too. When what it returns is an async context
manager, ``rolling run`` enters it for the length of the run and uses what
``__aenter__`` returns (so a driver can open connections, or start a fleet,
there). ``rolling plan`` enters it too, only to call ``list_instances()``:
while :func:`planning` is true, entering must change nothing.

Groups:

* ``rolling.drivers``: returns a :class:`~rolling.typing.Driver` and/or an
  :class:`~rolling.typing.ElasticDriver`.
* ``rolling.routers``: returns a :class:`~rolling.typing.Router`.
* ``rolling.checks``: returns a :class:`~rolling.typing.HealthCheck` (or an
  async function of one instance).
* ``rolling.metrics``: returns a metric provider. No built-in is registered
  yet; the group is read and listed so that providers can ship before the
  rollout file's ``[analysis]`` table takes them.

.. versionadded:: 0.2.0
"""

from __future__ import annotations

from ._registry import GROUPS, Plugin, build, installed, load, planning

__all__ = ["GROUPS", "Plugin", "build", "installed", "load", "planning"]

"""Recipes for users coming from other tools: their settings, by their names, as a rollout's.

Each function takes one tool's settings (snake_case, with the tool's
defaults) and returns the keyword arguments for :class:`~rolling.Rollout`::

    options = rolling.recipes.kubernetes_deployment(max_surge="25%", max_unavailable="25%")
    await rolling.Rollout(driver, "v2", router=router, **options).run()

Bad input raises :class:`~rolling.ConfigError` naming the recipe and the
setting (``"ecs_rolling_update.maximum_percent"``). Where a tool's setting has
no exact equivalent the recipe refuses it, or maps it with a difference its
docstring states; docs/coming-from.md has the tables.

.. versionadded:: 0.4.0
"""

from __future__ import annotations

from ._ansible import WHOLE_BATCH_FAILED, ansible
from ._argo import argo_blue_green, argo_canary, argo_duration
from ._beanstalk import elastic_beanstalk
from ._kubernetes import ecs_circuit_breaker_threshold, ecs_rolling_update, kubernetes_deployment
from ._options import RolloutOptions
from ._spinnaker import spinnaker_highlander, spinnaker_red_black, spinnaker_rolling_red_black

__all__ = [
    "WHOLE_BATCH_FAILED",
    "RolloutOptions",
    "ansible",
    "argo_blue_green",
    "argo_canary",
    "argo_duration",
    "ecs_circuit_breaker_threshold",
    "ecs_rolling_update",
    "elastic_beanstalk",
    "kubernetes_deployment",
    "spinnaker_highlander",
    "spinnaker_red_black",
    "spinnaker_rolling_red_black",
]

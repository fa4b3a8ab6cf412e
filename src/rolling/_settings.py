"""One frozen, validated configuration per rollout, built once at ``Rollout(...)``.

Every check that needs only the configuration runs here, before any driver
call; :func:`check_fleet` holds the few that need the fleet's size, and the
machine calls it right after ``list_instances()``, before any probe or change.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any

import attrs

from ._analysis import Analysis
from ._errors import ConfigError, RollingError
from ._flagging import FlagRules
from ._policies import FailurePolicy, Order, ProgressDeadline, Readiness, RollbackMode, Waves
from ._steps import Advance, Step
from ._strategy import Batches, BlueGreen, Canary, ResolvedWindow, RollingUpdate, Strategy
from ._validate import percent_of

__all__ = ["Settings", "check_fleet", "check_steps", "check_unique"]


@attrs.frozen(kw_only=True)
class Settings:
    """Everything the machine needs to decide, resolved and validated.

    Attributes:
        target: The version to roll out.
        strategy: The strategy.
        readiness: The readiness policy.
        failure: Retries and budgets.
        rollback: What a trigger does.
        progress_deadline: The progress deadline, if any.
        steps: The steps, in order.
        order: The order instances go in.
        waves: Failure domains, if any.
        hooks: Names of the hook methods present.
        has_router: Whether detach and attach reach a router.
        has_check: Whether readiness has a check.
        can_replace: Whether the driver replaces in place.
        can_launch: Whether the driver launches and terminates.
        journaled: Whether changes are journaled.
        seed: Seed for back-off jitter.
        analysis: The background analysis, if any.
        flags: The feature-flag rules, if any.
        weighted: Whether the router sets weights (a paired strategy then moves
            traffic by weight).
    """

    target: str
    strategy: Strategy
    readiness: Readiness
    failure: FailurePolicy
    rollback: RollbackMode
    progress_deadline: ProgressDeadline | None
    steps: tuple[Step, ...]
    order: Order
    waves: Waves | None
    hooks: frozenset[str]
    has_router: bool
    has_check: bool
    can_replace: bool
    can_launch: bool
    journaled: bool
    seed: int | None
    analysis: Analysis | None = None
    flags: FlagRules | None = None
    weighted: bool = False

    @property
    def surge_enabled(self) -> bool:
        """Whether new instances may be launched before old ones go."""
        return self.strategy.wants_surge and self.can_launch

    @property
    def paired(self) -> bool:
        """Whether the new set stands beside the old one (Canary, BlueGreen)."""
        return isinstance(self.strategy, Canary | BlueGreen)

    @property
    def lockstep(self) -> bool:
        """Whether units go in lockstep batches (else a sliding window)."""
        return isinstance(self.strategy, Batches)

    @property
    def instant_ready(self) -> bool:
        """Readiness with no check and no delays is a formality the machine skips."""
        readiness = self.readiness
        return not self.has_check and readiness.initial_delay == 0 and readiness.min_ready == 0

    def bounds(self, desired: int) -> ResolvedWindow:
        """What the whole rollout keeps to: its window, but a paired strategy may add a set."""
        window = self.window(desired)
        if self.paired:
            return attrs.evolve(window, max_surge=desired)
        return window

    def window(self, desired: int) -> ResolvedWindow:
        """The availability budget for a fleet of ``desired`` instances.

        For :class:`~rolling.Batches`, ``max_unavailable`` is the largest batch
        (or, with ``surge=True``, ``max_surge`` is). A :class:`~rolling.Canary`
        promoted through a window has that window's; otherwise the weighted
        strategies stand a whole new set beside the old one.
        """
        strategy = self.strategy
        if isinstance(strategy, Canary) and strategy.promotion is not None:
            return strategy.promotion.resolve(desired)
        if isinstance(strategy, Canary | BlueGreen):
            return ResolvedWindow(desired=desired, max_unavailable=0, max_surge=desired)
        if isinstance(strategy, RollingUpdate):
            return strategy.resolve(desired)
        largest = max(strategy.resolve(desired), default=0)
        if strategy.surge:
            return ResolvedWindow(desired=desired, max_unavailable=0, max_surge=largest)
        return ResolvedWindow(desired=desired, max_unavailable=largest, max_surge=0)


def check_steps(steps: tuple[Step, ...]) -> None:
    """At construction: Advance targets of one kind (counts, or percentages) never go back.

    Counts against percentages need the fleet's size: :func:`check_fleet` does those.
    """
    last: dict[type, float] = {}
    for index, step in enumerate(steps):
        if not isinstance(step, Advance):
            continue
        value = step.to if isinstance(step.to, int) else float(percent_of(step.to))
        kind = type(step.to)
        if kind in last and value < last[kind]:
            raise ConfigError(
                f"Rollout.steps[{index}]",
                f"Advance({step.to!r}) goes back from an earlier Advance",
                "list Advance targets in increasing order",
            )
        last[kind] = value


def check_fleet(steps: tuple[Step, ...], desired: int) -> None:
    """Checks that need the fleet's size: Advance targets never go back once resolved."""
    previous = -1
    for index, step in enumerate(steps):
        if not isinstance(step, Advance):
            continue
        wanted = step.resolve(desired)
        if wanted < previous:
            raise ConfigError(
                f"Rollout.steps[{index}]",
                f"Advance({step.to!r}) is {wanted} of {desired} instances, fewer than the"
                f" {previous} an earlier Advance already reached",
                "list Advance targets in increasing order for this fleet size",
            )
        previous = wanted


def check_unique(instances: Sequence[Any]) -> None:
    """The fleet's ids must be unique: the journal, the router and the result go by them."""
    if len({i.id for i in instances}) != len(instances):
        ids = collections.Counter(i.id for i in instances)
        duplicates = sorted(i for i, count in ids.items() if count > 1)
        msg = f"the driver listed duplicate instance ids {duplicates}; ids must be unique"
        raise RollingError(msg)

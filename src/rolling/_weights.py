"""Weights that give a canary set the share of requests a step asks for.

A weighted router splits new requests by weight among the attached instances, so
``c`` canaries at weight ``wc`` beside ``s`` stable instances at weight ``ws``
get ``c*wc / (c*wc + s*ws)`` of them. Weights are whole numbers from 0 to
:data:`~rolling.typing.MAX_WEIGHT`, so the share asked for is met as closely as
those allow: every stable weight is tried, the canary weight that comes closest
is kept, and ties go to the pair nearest :data:`~rolling.typing.FULL_WEIGHT`.
At 0 % and 100 % one side is at 0 and the other at ``FULL_WEIGHT``.
"""

from __future__ import annotations

import math

from .typing import FULL_WEIGHT, MAX_WEIGHT

__all__ = ["canary_weights", "share"]


def share(canaries: int, canary_weight: int, stables: int, stable_weight: int) -> float:
    """The canary set's share of new requests, in percent, for these weights."""
    canary = canaries * canary_weight
    total = canary + stables * stable_weight
    return 100.0 * canary / total if total else 0.0


def canary_weights(
    percent: float, canaries: int, stables: int, *, keep_stable: bool = False
) -> tuple[int, int]:
    """The (canary, stable) weights closest to giving ``canaries`` ``percent`` % of requests.

    With ``keep_stable``, the stable side never goes to 0: at 100 % it keeps
    weight 1 (the canaries are too few to serve alone under the floor).
    """
    if canaries == 0 or percent <= 0:
        return 0, FULL_WEIGHT
    if stables == 0:
        return FULL_WEIGHT, 0
    if percent >= 100:  # noqa: PLR2004 - a percentage
        return (MAX_WEIGHT, 1) if keep_stable else (FULL_WEIGHT, 0)
    best = (FULL_WEIGHT, FULL_WEIGHT)
    best_key = (float("inf"), 0)
    ratio = percent * stables / ((100 - percent) * canaries)
    for stable_weight in range(1, MAX_WEIGHT + 1):
        exact = ratio * stable_weight
        low = math.floor(exact)
        # The share is not linear in the canary weight: the nearer of the two whole
        # weights around the exact one is not always the nearer share.
        for wanted in (low, low + 1):
            canary_weight = min(max(wanted, 1), MAX_WEIGHT)
            error = abs(share(canaries, canary_weight, stables, stable_weight) - percent)
            key = (round(error, 9), abs(stable_weight - FULL_WEIGHT))
            if key < best_key:
                best, best_key = (canary_weight, stable_weight), key
        if low >= MAX_WEIGHT:
            break  # a heavier stable side only moves further from the share
    return best

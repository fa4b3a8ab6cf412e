"""A rollout file's policies: ``[failure]``, ``[order]``, ``[waves]`` and ``progress_deadline``.

Rules:

1. ``[failure]`` is :class:`rolling.FailurePolicy`'s arguments, with ``[failure.backoff]``
   a table of :class:`rolling.Backoff`'s.
2. ``[order] type`` is ``"inventory"`` (the default, no settings), ``"sorted"``
   (``reverse``), ``"shuffled"`` (``seed``) or ``"longest-first"``, which learns durations
   from the events log beside the ``[journal]`` and takes no setting.
3. ``[waves] attribute`` names the instance attribute that gives an instance's wave;
   ``order`` lists the waves in the order they go.
4. ``progress_deadline`` is seconds, or a table of :class:`rolling.ProgressDeadline`'s
   arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from rolling import Backoff, FailurePolicy, Order, ProgressDeadline, Waves

from ._analysis_file import Loader
from ._output import events_log
from ._plan import learned_durations, longest_first

__all__ = ["PolicyReader"]

_ORDER_FIX = {
    "reverse": 'add type = "sorted" (reverse sorts by id, descending)',
    "seed": 'add type = "shuffled" (seed picks the shuffle)',
}
"""The fix for a key of ``[order]`` written without the type that takes it."""


class PolicyReader:
    """Builds the policies of one rollout file, with its loader's file:line errors."""

    def __init__(self, loader: Loader) -> None:
        self.loader = loader

    def failure(self, table: dict[str, Any] | None) -> FailurePolicy | None:
        """``[failure]``, with ``[failure.backoff]`` (None: absent)."""
        if table is None:
            return None
        if "backoff" in table:
            backoff = table["backoff"]
            if not isinstance(backoff, dict):
                raise self.loader.error(
                    ("failure",), "backoff", "expected a table", "write [failure.backoff]"
                )
            table["backoff"] = self.loader.construct(
                ("failure", "backoff"), Backoff, cast("dict[str, Any]", backoff)
            )
        return cast("FailurePolicy", self.loader.construct(("failure",), FailurePolicy, table))

    def order(
        self, table: dict[str, Any] | None, journal: Callable[[], Path | None]
    ) -> Order | None:
        """``[order]`` (None: absent); longest-first reads ``journal()``'s events log."""
        if table is None:
            return None
        kind = table.pop("type", "inventory")
        if kind == "longest-first":
            journal_path = journal()
            if journal_path is None or table:
                raise self.loader.error(
                    ("order",),
                    "type" if journal_path is None else next(iter(table)),
                    "longest-first learns durations from the events log next to the journal"
                    if journal_path is None
                    else "is not a setting of longest-first",
                    'add [journal] path = "..." (its first run goes in inventory order)',
                )
            return longest_first(learned_durations(events_log(journal_path)))
        makers: dict[str, Callable[..., Order]] = {
            "inventory": Order.inventory,
            "sorted": Order.sorted,
            "shuffled": Order.shuffled,
        }
        if kind not in makers:
            raise self.loader.error(
                ("order",),
                "type",
                f"unknown order {kind!r}",
                "use one of: " + ", ".join([*makers, "longest-first"]),
            )
        if kind == "inventory" and table:
            key = next(iter(table))
            raise self.loader.error(
                ("order",),
                key,
                "is not a setting of the inventory order (the default type)",
                _ORDER_FIX.get(key, 'remove it, or set type = "sorted" or "shuffled"'),
            )
        return cast("Order", self.loader.construct(("order",), makers[kind], table))

    def waves(self, table: dict[str, Any] | None) -> Waves | None:
        """``[waves]`` (None: absent): ``attribute`` names what an instance's wave is."""
        if table is None:
            return None
        attribute = table.pop("attribute", None)
        if not isinstance(attribute, str) or not attribute:
            raise self.loader.error(
                ("waves",),
                "attribute",
                "is missing" if attribute is None else f"expected a name, got {attribute!r}",
                'name the instance attribute: "zone"',
            )

        def waves(*, order: list[Any] | None = None) -> Waves:
            return Waves(key=lambda instance: getattr(instance, attribute), order=order)

        return cast("Waves", self.loader.construct(("waves",), waves, table))

    def deadline(self, value: object) -> ProgressDeadline | float | None:
        """``progress_deadline``: seconds, or a table of :class:`rolling.ProgressDeadline`."""
        if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
            return value
        if isinstance(value, dict):
            return cast(
                "ProgressDeadline",
                self.loader.construct(
                    ("progress_deadline",), ProgressDeadline, cast("dict[str, Any]", value)
                ),
            )
        raise self.loader.error(
            (),
            "progress_deadline",
            f"expected seconds or a table, got {value!r}",
            'write progress_deadline = 600, or {seconds = 600, action = "report"}',
        )

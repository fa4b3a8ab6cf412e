"""Feature flags tied to the rollout's progress: the rules, and their part of the machine.

Part of the machine (:mod:`rolling._machine`), sans-io like it; the runner
carries out :class:`~rolling._effects.SetFlagValue`. Rules:

1. **Enable** (``FlagRules.on``) once the forward pass has ended with no
   trigger (after the background analysis's bake, if any), and only when
   every instance in traffic runs the target: no old-version instance can
   read the flag on. When one still does (a failed instance restored to its
   old version), the flag is left off and a ``FlagChanged(ok=False)`` says why.
2. **Disable** (``FlagRules.off``) when a trigger asks for a revert, before
   the rollback touches any instance (and before a resumed rollback). It is
   set even if this run never turned the flag on: a previous run or a step
   may have.
3. A failed **enable** leaves the flag off (safe for every version): the
   instances stay updated and the result is ``DEGRADED``, its reason naming
   the flag.
4. A failed **disable** stops the rollback before it starts: reverting would
   bring old instances back while the flag may still be on. The rollout ends
   ``HALTED``, the reason says so; turn the flag off by hand and run the old
   version as a new rollout to finish the rollback. What the trigger left out
   of traffic for the revert is settled as a halt settles it (:mod:`rolling._unit`).
5. A :class:`~rolling.SetFlag` step sets its flag when the pass reaches it; a
   failed set is a trigger (like a failed gate). A step is the user's own
   decision: it is not checked against the versions serving.
6. Every change, and every change that failed or was withheld, is a
   :class:`~rolling.events.FlagChanged` event and is listed in
   ``RolloutResult.flags``, whether or not anyone listens to events.
7. **A failed instance's restore** (``restore_failed``) puts its old version
   back: once a revert is asked for, that is a revert of the instance, so the
   flag goes off (rule 2) before the restore begins, and again before the old
   version goes back into traffic if the revert was asked for while the
   restore ran. A failed turn-off halts (rule 4) and the instance is not
   restored: it stays out of traffic where it failed. A restore with no
   revert asked for (a failure within the budget, or under ``halt``) leaves
   the flag as it is: it puts back what served before its unit began, while
   old instances serve anyway (only a ``SetFlag`` step or someone else can
   have turned the flag on during the forward pass), and rule 1 keeps the
   flag from going on at the end. A flag turned off by a restore is not
   turned off a second time before the rollback (unless something set it
   since).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any, cast

import attrs

from ._effects import SetFlagValue
from ._errors import ConfigError
from ._steps import SetFlag, check_setter
from .events import FlagChanged
from .validate import validator

if TYPE_CHECKING:
    from ._machine import Machine

__all__ = ["FlagRules", "Flags", "call_setter", "check_steps_have_setters"]

Program = Generator[Any, Any, Any]


def _check_flag(field: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError(field, f"expected a non-empty str, got {value!r}", 'pass "new-format"')


def _check_value(field: str, value: object) -> None:
    if not isinstance(value, bool | int | float | str):
        raise ConfigError(field, f"expected a bool, int, float or str, got {value!r}", "pass True")


@attrs.frozen
class FlagRules:
    """Drive one feature flag from the rollout: on when safe, off before a rollback.

    ``Rollout(..., flags=FlagRules(setter, "new-format"))`` turns
    ``new-format`` on once every instance in traffic runs the target, and off
    before a rollback reverts any instance. A failed turn-on leaves the flag
    off and the result ``DEGRADED``; a failed turn-off halts the rollback
    before it changes anything (status ``HALTED``), since reverting would let
    old instances read the flag on.

    Attributes:
        setter: A :class:`~rolling.typing.FlagSetter` or an async function
            ``(flag, value)``.
        flag: The flag's key.
        on: The value that turns the feature on.
        off: The value that turns it off.

    .. versionadded:: 0.4.0
    """

    setter: Any = attrs.field(validator=validator(check_setter))
    flag: str = attrs.field(validator=validator(_check_flag))
    on: bool | int | float | str = attrs.field(
        default=True, kw_only=True, validator=validator(_check_value)
    )
    off: bool | int | float | str = attrs.field(
        default=False, kw_only=True, validator=validator(_check_value)
    )


def check_steps_have_setters(steps: tuple[Any, ...], rules: FlagRules | None) -> None:
    """At construction: a ``SetFlag`` step without a setter needs the rollout's ``FlagRules``."""
    for index, step in enumerate(steps):
        if isinstance(step, SetFlag) and step.setter is None and rules is None:
            raise ConfigError(
                f"Rollout.steps[{index}]",
                f"SetFlag({step.flag!r}) has no setter, and the rollout has no flags=",
                "pass SetFlag(..., setter=...) or Rollout(flags=FlagRules(setter, flag))",
            )


async def call_setter(setter: Any, flag: str, value: object) -> None:
    """Set ``flag`` with a setter object (``set`` method) or a plain async function."""
    method = getattr(setter, "set", None)
    fn = cast("Callable[[str, object], Awaitable[object]]", method if callable(method) else setter)
    await fn(flag, value)


class Flags:
    """The flag changes of one machine (rules at the top of the module)."""

    def __init__(self, machine: Machine, rules: FlagRules | None) -> None:
        self._m = machine
        self._rules = rules
        self.changes: list[FlagChanged] = []
        self.failure = ""
        """Why a turn-on failed or was withheld (rule 3), else empty."""
        self._off = False  # a turn-off (rule 2) succeeded and nothing set the flag since
        self.stays_on = ""
        """Why the flag may still be on after a failed turn-off (rule 4), else empty."""

    def _record(self, flag: str, value: object, cause: str, *, ok: bool, reason: str) -> None:
        machine = self._m
        event = FlagChanged(
            at=machine.now,
            wall=machine.wall(),
            flag=flag,
            value=value,
            ok=ok,
            cause=cause,
            reason=reason,
        )
        self.changes.append(event)
        machine.add_event(event)

    def _set(self, setter: Any, flag: str, value: object, cause: str) -> Program:
        ok, reason = yield SetFlagValue(setter, flag, value)
        self._record(flag, value, cause, ok=ok, reason=reason)
        rules = self._rules
        if rules is not None and setter is rules.setter and flag == rules.flag:
            self._off = False  # set again: a turn-off before it no longer counts
        return ok, reason

    def step(self, step: SetFlag) -> Program:
        """Rule 5: a ``SetFlag`` step; a failed set is a trigger."""
        rules = self._rules
        setter = step.setter if step.setter is not None or rules is None else rules.setter
        ok, reason = yield from self._set(setter, step.flag, step.value, "step")
        if not ok:
            self._m.policy_trigger(f"could not set flag {step.flag!r}: {reason}")

    def _enable(self, target: str) -> Program:
        """Rule 1: turn the flag on if the forward pass ended well and only the target serves."""
        rules = self._rules
        machine = self._m
        if rules is None or machine.stopping:
            return
        old = sorted(
            s.key
            for s in machine.slots
            if s.live is not None and s.attached and s.live.version != target
        )
        if old:
            reason = f"not turned on: {', '.join(old)} still serve an old version"
            self._record(rules.flag, rules.on, "enable", ok=False, reason=reason)
            self.failure = f"flag {rules.flag!r} {reason}"
            return
        ok, reason = yield from self._set(rules.setter, rules.flag, rules.on, "enable")
        if not ok:
            self.failure = f"flag {rules.flag!r} could not be turned on (it stays off): {reason}"

    def after_forward(self, target: str) -> Program:
        """After the forward pass: rule 1 if it went well, rule 2 if a revert comes."""
        yield from self._enable(target)
        if self._m.revert_pending:
            yield from self._disable()

    def _disable(self) -> Program:
        """Rule 2 and 4: turn the flag off before a revert; a failure halts the rollback."""
        rules = self._rules
        if rules is None or self._off:
            return
        ok, reason = yield from self._set(rules.setter, rules.flag, rules.off, "disable")
        if ok:
            self._off = True
            return
        self.stays_on = f"flag {rules.flag!r} could not be turned off ({reason})"
        if self._m.revert_pending:  # not yet halted by another unit's turn-off
            self._m.halt_rollback(
                f"rollback halted before it began: {self.stays_on};"
                " turn it off, then roll back with a new rollout"
            )

    def before_restore(self) -> Generator[Any, Any, bool]:
        """Rule 7: before a failed instance's old version goes back; whether it may go back."""
        rules = self._rules
        if rules is None:
            return True
        if not self.stays_on and self._m.revert_pending:
            yield from self._disable()
        return not self.stays_on

"""The program of one unit: carry one instance to a version, or fail and put it back.

Part of the machine (:mod:`rolling._machine`): generators that yield effects and
never await. The sequences:

* in place: ``detach -> replace -> ready -> attach``;
* elastic, taking out first: ``detach -> terminate -> launch -> ready -> attach``;
* elastic with surge: ``launch -> ready -> attach new -> detach old -> terminate old``.

Each driver, router and hook call is an effect that either returns or fails
(:class:`~rolling._effects.Failed` is thrown in); a wait (readiness, back-off)
may be interrupted (:class:`~rolling._effects.Interrupted`). A failed attempt is
retried after a back-off; a unit out of attempts fails (phase ``FAILED``) and is
restored (``REVERTING``, then the phases of the way back), and ends on ``FAILED``
once more, whose reason says where the restore left it. After
an interruption a unit *settles*: a surge instance not in traffic is
terminated, and an instance out of traffic goes back in when it answers its
check (unless the coming rollback will handle it; if that rollback turns into
a halt before it begins, :meth:`rolling._unit_endings.UnitEndings.put_back_left_out` settles these
as a halt does). With ``FlagRules``, a restore asked for while a revert is
pending waits for the flag to go off (:mod:`rolling._flagging`, rule 7).
"""

from __future__ import annotations

import random
from collections.abc import Generator, Iterable
from typing import TYPE_CHECKING, Any

from ._effects import Call, Failed, Interrupted, Record, Sleep, WaitReady, check_answer
from ._ledger import Mode
from ._result import InstanceOutcome
from ._settings import Settings
from ._slot import Slot, in_doubt
from ._unit_endings import UnitEndings
from .events import Phase

if TYPE_CHECKING:
    from ._machine import Machine, Start

__all__ = ["Gone", "UnitPrograms"]

Program = Generator[Any, Any, Any]

# The hot path's enum members as module constants: a member looked up on its class costs
# about 1k instructions (some 150 ns), a module global a few dozen.
_SURGE, _IN_PLACE = Mode.SURGE, Mode.IN_PLACE
_OUTCOME_UPDATED, _OUTCOME_REVERTED = InstanceOutcome.UPDATED, InstanceOutcome.REVERTED
_DETACHING, _DETACHED, _REPLACING = Phase.DETACHING, Phase.DETACHED, Phase.REPLACING
_WAITING_READY, _READY = Phase.WAITING_READY, Phase.READY
_ATTACHING, _ATTACHED = Phase.ATTACHING, Phase.ATTACHED
_UPDATED, _REVERTED = Phase.UPDATED, Phase.REVERTED

_ROUTING = {True: Phase.ATTACHING, False: Phase.DETACHING}
_ROUTED = {True: Phase.ATTACHED, False: Phase.DETACHED}


class Gone(Failed):
    """``after_terminate`` raised: the attempt fails, but the instance was terminated.

    Not a stray, then: it no longer exists, and a result must not say it does.
    """


class UnitPrograms:
    """Builds unit programs for one machine."""

    def __init__(self, machine: Machine, settings: Settings, rng: random.Random) -> None:
        self._m = machine
        self._s = settings
        self._rng = rng
        self._hooks = settings.hooks
        self._journaled = settings.journaled
        self._router = settings.has_router
        # Nothing to call around a replace but the router: see _replace_in_place.
        self._plain = not settings.hooks and not settings.journaled
        self._instant = settings.instant_ready
        self.endings = UnitEndings(self, machine, settings)
        """How a unit that does not simply succeed ends."""

    # ---------------------------------------------------------------- unit

    def run(self, start: Start) -> Program:
        """Run one unit; return the units that may start after it."""
        machine = self._m
        slot, run, reserved = start.slot, start.run, start.reserved
        mode = reserved.mode
        goal = slot.old_version if run.version is None else run.version
        rolling_back = run.rolling_back
        # A failed instance the rollback puts back stays FAILED: it was never updated.
        failed_before = (
            slot.reason if rolling_back and slot.outcome is InstanceOutcome.FAILED else None
        )
        machine.unit_began(slot)
        counted_before = slot.serving_at_start
        taken = counted_before and mode is not _SURGE
        existed_before = slot.existing
        capacity = int(reserved.capacity)
        if rolling_back:
            machine.phase(slot, Phase.REVERTING, goal)
        try:
            try:
                plain = self._plain and not rolling_back and slot.live is not None
                if plain and mode is _IN_PLACE:
                    # The path of most units, one generator shallower: the first attempt here.
                    slot.attempts += 1
                    try:
                        yield from self._replace_in_place(slot, goal)
                        ok, reason = True, ""
                    except Failed as exc:
                        ok, reason = yield from self._attempts(
                            slot, mode, goal, rolling_back=False, failed=(1, exc.reason)
                        )
                else:
                    ok, reason = yield from self._attempts(
                        slot, mode, goal, rolling_back=rolling_back
                    )
                if ok and failed_before is None:
                    slot.set_outcome(_OUTCOME_REVERTED if rolling_back else _OUTCOME_UPDATED)
                    if not slot.strays and not slot.terminated_but:
                        slot.reason = ""
                    if machine.listening:
                        phase = _REVERTED if rolling_back else _UPDATED
                        live: Any = slot.live
                        machine.phase(slot, phase, live.version)
                    machine.record_success()
                elif rolling_back:
                    yield from self.endings.not_reverted(
                        slot, goal, reason, failed_before, restored=ok
                    )
                else:
                    yield from self.endings.fail(slot, mode, reason)
            except Interrupted:
                yield from self.endings.interrupted(slot, goal, rolling_back=rolling_back)
            if self._journaled:
                yield Record({"t": "unit", "k": slot.key, "o": str(slot.outcome)})
        finally:
            # Also when the program dies or is closed part-way: the ledger must hear of it.
            machine.unit_ended(
                start,
                serving=int(slot.serving) - (int(counted_before) - int(taken)),
                existing=slot.existing - existed_before - capacity,
            )
        return machine.successors(run)

    def _attempts(
        self,
        slot: Slot,
        mode: Mode,
        version: str,
        *,
        rolling_back: bool,
        failed: tuple[int, str] = (0, ""),
    ) -> Generator[Any, Any, tuple[bool, str]]:
        """Attempt until one attempt succeeds or none is left.

        ``failed``: how many attempts were made already, and the reason the last one failed.
        """
        policy = self._s.failure
        done, reason = failed
        strays = len(slot.strays)
        if done:
            if done > policy.retries:
                return False, reason
            yield from self._back_off(slot, done, version, reason)
        for attempt in range(done + 1, policy.retries + 2):
            if not rolling_back:
                slot.attempts += 1
            try:
                if mode is Mode.SURGE:
                    yield from self._apply_surge(slot, version, strays)
                elif mode is Mode.IN_PLACE and self._plain and slot.live is not None:
                    yield from self._replace_in_place(slot, version)
                else:
                    yield from self.apply(slot, mode, version, restoring=False)
            except Failed as exc:
                reason = exc.reason
            else:
                return True, ""
            if attempt <= policy.retries:
                yield from self._back_off(slot, attempt, version, reason)
        return False, reason

    def _back_off(self, slot: Slot, attempt: int, version: str, reason: str) -> Program:
        delay = self._s.failure.backoff.delay(attempt, self._rng)
        self._m.phase(slot, Phase.BACKING_OFF, version, reason)
        yield from self._wait(Sleep(delay))

    def _wait(self, effect: Sleep | WaitReady) -> Program:
        """Yield a wait, unless a trigger has already fired and it would be interrupted."""
        if effect.interruptible and not self._m.interruptible:
            raise Interrupted
        return (yield effect)

    # ------------------------------------------------------------- effects

    def call(
        self, slot: Slot, op: str, instance: Any, version: str, what: str, *args: Any
    ) -> Program:
        """A driver or router call, journaled around it (write-ahead) when there is a journal."""
        effect = Call(op, args, what)
        if not self._journaled:
            return (yield effect)
        base = {
            "t": "fx",
            "k": slot.key,
            "op": op,
            "i": getattr(instance, "id", None),
            "v": version,
        }
        yield Record({**base, "s": "start"}, sync=True)
        try:
            result = yield effect
        except Failed:
            yield Record({**base, "s": "fail"})
            raise
        done = {**base, "s": "done"}
        if op in {"launch", "replace"}:
            done["n"] = [result.id, result.version]
        yield Record(done, sync=op == "launch")
        return result

    def hook(self, name: str, *args: Any) -> Iterable[Any]:
        """Call the hook ``name``, if the hooks object has it."""
        if name in self._hooks:
            return self._hook(name, args)
        return ()

    def _hook(self, name: str, args: tuple[Any, ...]) -> Program:
        # A generator, not a tuple: whatever the hook returns is sent back into it.
        yield Call(name, args, f"hook {name}")

    def _set_live(self, slot: Slot, instance: Any) -> Iterable[Any]:
        """Put ``instance`` in ``slot``'s place, journaling the swap when the id changes."""
        before = slot.live
        slot.live = instance
        after = None if instance is None else instance.id
        if (None if before is None else before.id) != after:
            slot.doubt = False  # another instance: no router call on it failed
            if self._journaled:
                return self._record({"t": "swap", "k": slot.key, "i": after})
        return ()

    def _record(self, record: dict[str, Any]) -> Program:
        yield Record(record)

    def detach(
        self, slot: Slot, instance: Any, version: str, *, extra: bool = False
    ) -> Iterable[Any]:
        """Take ``instance`` out of traffic."""
        return self._route(slot, instance, version, into=False, extra=extra)

    def attach(
        self, slot: Slot, instance: Any, version: str, *, extra: bool = False
    ) -> Iterable[Any]:
        """Put ``instance`` in traffic."""
        return self._route(slot, instance, version, into=True, extra=extra)

    def _route(
        self, slot: Slot, instance: Any, version: str, *, into: bool, extra: bool
    ) -> Iterable[Any]:
        if self._router or self._hooks:
            return self._route_calls(slot, instance, version, into=into, extra=extra)
        # Nothing to call: only the bookkeeping, without a generator per instance.
        self._routed(slot, instance, version, into=into, extra=extra)
        return ()

    def _route_calls(
        self, slot: Slot, instance: Any, version: str, *, into: bool, extra: bool
    ) -> Program:
        op = "attach" if into else "detach"
        if self._hooks:
            yield from self.hook(f"before_{op}", instance)
        self._m.phase(slot, _ROUTING[into], version, instance=instance)
        if self._router:
            try:
                yield from self.call(slot, op, instance, version, f"router.{op}", instance)
            except Failed:
                in_doubt(slot, extra=extra)
                raise
        self._routed(slot, instance, version, into=into, extra=extra, announced=True)
        if self._hooks:
            yield from self.hook(f"after_{op}", instance)

    def _routed(
        self,
        slot: Slot,
        instance: Any,
        version: str,
        *,
        into: bool,
        extra: bool,
        announced: bool = False,
    ) -> None:
        """Record that ``instance`` went in (or out of) traffic, with its two phases."""
        machine = self._m
        if not announced:
            machine.phase(slot, _ROUTING[into], version, instance=instance)
        if extra:
            slot.extra_attached, slot.extra_doubt = into, False
        else:
            slot.attached, slot.doubt = into, False
        machine.phase(slot, _ROUTED[into], version, instance=instance)

    def _terminate(self, slot: Slot, instance: Any, version: str) -> Program:
        hooks = self._hooks
        if hooks:
            yield from self.hook("before_terminate", instance)
        self._m.phase(slot, Phase.TERMINATING, version, instance=instance)
        yield from self.call(slot, "terminate", instance, version, "driver.terminate", instance)
        self._m.phase(slot, Phase.TERMINATED, version, instance=instance)
        if hooks:
            try:
                yield from self.hook("after_terminate", instance)
            except Failed as exc:
                raise Gone(exc.reason) from exc

    def _launch(self, slot: Slot, version: str) -> Program:
        if self._hooks:
            yield from self.hook("before_launch", version)
        self._m.phase(slot, Phase.LAUNCHING, version)
        instance = yield from self.call(slot, "launch", None, version, "driver.launch", version)
        self._m.phase(slot, Phase.LAUNCHED, version, instance=instance)
        return instance

    def _ready(
        self, slot: Slot, instance: Any, version: str, *, restoring: bool = False
    ) -> Iterable[Any]:
        if self._hooks or not self._s.instant_ready:
            return self._wait_ready(slot, instance, version, restoring=restoring)
        self._m.phase(slot, Phase.WAITING_READY, version)
        self._m.phase(slot, Phase.READY, version)
        return ()

    def _wait_ready(self, slot: Slot, instance: Any, version: str, *, restoring: bool) -> Program:
        hooks = self._hooks
        if hooks:
            yield from self.hook("before_ready", instance)
        self._m.phase(slot, Phase.WAITING_READY, version)
        if not self._s.instant_ready:
            ok, reason = yield from self._wait(WaitReady(instance, interruptible=not restoring))
            if not ok:
                raise Failed(reason)
        self._m.phase(slot, Phase.READY, version)
        if hooks:
            yield from self.hook("after_ready", instance)

    def _replace_in_place(self, slot: Slot, version: str) -> Program:  # noqa: C901, PLR0912 - flat on purpose
        """:meth:`apply` in place with no hooks and no journal, in one flat generator.

        The same effects and phases, in the same order, as the general path: it is the
        path of most units, and every generator it does not nest saves time on each of
        their effects (tests/test_unit_paths.py holds the two to the same events).
        """
        machine = self._m
        router = self._router
        asked = slot.live
        # Each phase only when someone listens: announcing nothing still costs a call.
        if slot.attached or slot.doubt:
            if machine.listening:
                machine.phase(slot, _DETACHING, version, "", asked)
            if router:
                try:
                    yield Call("detach", (asked,), "router.detach")
                except Failed:
                    in_doubt(slot, extra=False)
                    raise
            slot.attached = slot.doubt = False
            if machine.listening:
                machine.phase(slot, _DETACHED, version, "", asked)
        if machine.listening:
            machine.phase(slot, _REPLACING, version)
        slot.ready = False
        slot.replace_tried = True
        replaced = yield Call("replace", (asked, version), "driver.replace")
        slot.live = replaced
        if replaced.version != version or replaced.id != asked.id:  # check_answer says how
            check_answer("driver.replace", replaced, version, asked.id)
        if machine.listening:
            machine.phase(slot, _WAITING_READY, version)
        if not self._instant:
            ok, reason = yield from self._wait(WaitReady(replaced, interruptible=True))
            if not ok:
                raise Failed(reason)
        slot.ready = True
        if machine.listening:
            machine.phase(slot, _READY, version)
            machine.phase(slot, _ATTACHING, version, "", replaced)
        if router:
            try:
                yield Call("attach", (replaced,), "router.attach")
            except Failed:
                in_doubt(slot, extra=False)
                raise
        slot.attached = True
        if machine.listening:
            machine.phase(slot, _ATTACHED, version, "", replaced)

    def apply(self, slot: Slot, mode: Mode, version: str, *, restoring: bool) -> Program:
        """Carry ``slot`` to ``version`` by taking it out first (in place or terminate-launch)."""
        hooks = self._hooks
        if (slot.attached or slot.doubt) and slot.live is not None:
            yield from self.detach(slot, slot.live, version)
        if mode is Mode.IN_PLACE and slot.live is not None:
            # A restore skips the replace only when none was tried: one that raised may
            # have stopped the old version already, whatever the instance still says.
            if not (restoring and slot.live.version == version and not slot.replace_tried):
                asked = slot.live
                if hooks:
                    yield from self.hook("before_replace", asked, version)
                self._m.phase(slot, Phase.REPLACING, version)
                slot.ready = False
                slot.replace_tried = True
                replaced = yield from self.call(
                    slot, "replace", asked, version, "driver.replace", asked, version
                )
                yield from self._set_live(slot, replaced)
                check_answer("driver.replace", replaced, version, asked.id)
                if hooks:
                    yield from self.hook("after_replace", replaced)
        else:
            if slot.live is not None:
                old = slot.live
                slot.ready = False
                try:
                    yield from self._terminate(slot, old, version)
                except Gone:
                    yield from self._set_live(slot, None)  # the attempt fails, with it gone
                    raise
                yield from self._set_live(slot, None)
            slot.ready = False
            launched = yield from self._launch(slot, version)
            yield from self._set_live(slot, launched)
            check_answer("driver.launch", launched, version, None)
            if hooks:
                yield from self.hook("after_launch", launched)
        yield from self._ready(slot, slot.live, version, restoring=restoring)
        slot.ready = True
        if restoring and not (yield from self._m.flags.before_restore()):
            # A revert was asked for while the restore ran, and the flag may be on (rule 7).
            msg = f"not put back in traffic: {self._m.flags.stays_on}"
            raise Failed(msg)
        yield from self.attach(slot, slot.live, version)

    def _apply_surge(self, slot: Slot, version: str, strays: int) -> Program:
        """Add the new instance first; ``strays`` is how many the slot had when the unit began."""
        # An earlier attempt that failed taking the old instance out (its detach raised)
        # left the new one in traffic: go on from there, as a retry does. Dropping it first
        # would take out what serves while the old one may be out of traffic already.
        resume = slot.extra is not None and slot.extra_attached
        if slot.extra is not None and not resume:
            # A failed earlier attempt: its instance goes before a new one comes.
            yield from self.drop_extra(slot, version)
        if len(slot.strays) > strays:
            # The unit's one instance of surge is held by what it could not terminate.
            msg = f"no room to launch: {slot.strays[-1].id} could not be terminated"
            raise Failed(msg)
        if not resume:
            yield from self._launch_extra(slot, version)
            yield from self._ready(slot, slot.extra, version)
            yield from self.attach(slot, slot.extra, version, extra=True)
        old = slot.live
        if old is not None and (slot.attached or slot.doubt):
            yield from self.detach(slot, old, version)
        # From here the new instance is in traffic and the old one out: swap them first,
        # so a failing terminate leaves a stray to report, not an instance to roll back.
        # Every flag changes before the swap's journal record is awaited, so nobody sees
        # the new instance in place but out of traffic.
        new, slot.extra = slot.extra, None
        slot.attached, slot.extra_attached = True, False
        slot.doubt = slot.extra_doubt = False
        slot.ready = True
        yield from self._set_live(slot, new)
        if old is not None:
            try:
                yield from self._terminate(slot, old, version)
            except Gone as exc:
                slot.reason = f"old instance {old.id} terminated, but {exc.reason}"
                slot.terminated_but = True
            except Failed as exc:
                slot.strays += (old,)
                slot.reason = f"old instance {old.id} left running out of traffic: {exc.reason}"
            except BaseException:
                # Cut short (a journal that refuses the terminate's record, the clean-up
                # deadline closing the program): the old instance may still run, out of traffic.
                slot.strays += (old,)
                raise

    def _launch_extra(self, slot: Slot, version: str) -> Program:
        """Launch ``slot``'s new instance beside its old one, into ``slot.extra``."""
        hooks = self._hooks
        if hooks:
            yield from self.hook("before_launch", version)
        self._m.phase(slot, Phase.LAUNCHING, version)
        slot.extra = yield from self.call(slot, "launch", None, version, "driver.launch", version)
        self._m.phase(slot, Phase.LAUNCHED, version)
        check_answer("driver.launch", slot.extra, version, None)
        if hooks:
            yield from self.hook("after_launch", slot.extra)

    def drop_extra(self, slot: Slot, version: str) -> Program:
        extra = slot.extra
        try:
            if slot.extra_attached or slot.extra_doubt:
                yield from self.detach(slot, extra, version, extra=True)
            yield from self._terminate(slot, extra, version)
        except Gone:
            raise  # terminated all the same: no stray
        except BaseException:
            # Failed, or cut short (a journal that refuses the terminate's record, the clean-up
            # deadline closing the program): the instance may still run, so it is reported.
            slot.strays += (extra,)
            raise
        finally:
            slot.extra = None
            slot.extra_attached = slot.extra_doubt = False

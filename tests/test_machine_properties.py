"""The machine alone, under random event sequences: the invariants hold on every step.

No event loop, no driver: this test plays the runner. For each example it
draws a fleet (1 to 500 instances, some unhealthy at the start), a strategy,
budgets, steps (an ``Analyze`` among them), a background analysis and hooks,
then answers the machine's effects in a random interleaving with random
outcomes (a call fails, a driver answers the wrong version, readiness fails,
a measurement passes, fails, has no data or errs), with random control calls (pause, resume,
promote, abort), timer firings, halts and cancellation. On every effect it
checks the availability floor (no serving instance is taken out below it),
the capacity ceiling (no launch above it) and that no instance is worked on
twice at once; at the end, terminal truth, no leaks, and that the machine
itself never stalls.

``ROLLING_MACHINE_SEQUENCES`` sets the number of sequences (20,000 by default):
hypothesis draws one configuration per five sequences, whose seeds it also draws.
"""

from __future__ import annotations

import os
import random
from collections.abc import Generator
from typing import Any

import attrs
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from rolling import (
    Advance,
    Analysis,
    Analyze,
    Backoff,
    Batches,
    BlueGreen,
    Canary,
    FailurePolicy,
    Gate,
    InstanceOutcome,
    Metric,
    Order,
    Pause,
    ProgressDeadline,
    Readiness,
    RollbackMode,
    RollingUpdate,
    RolloutStatus,
    SetCanaryScale,
    SetWeight,
)
from rolling._effects import (
    IDLE,
    Call,
    CheckGate,
    Failed,
    Interrupted,
    ListInstances,
    LoadJournal,
    Probe,
    Record,
    RunAnalysis,
    Sleep,
    Spawn,
    Survey,
    Together,
    WaitReady,
    WaitStep,
)
from rolling._machine import INTERRUPT, STEP, WAKE, Machine, Start
from rolling._settings import Settings
from rolling._slot import Slot
from rolling._strategy import ResolvedWindow, Strategy
from rolling.typing import FULL_WEIGHT

SEQUENCES = int(os.environ.get("ROLLING_MACHINE_SEQUENCES", "20000"))
PER_CONFIGURATION = 5
"""Event sequences played per drawn configuration (hypothesis' own cost is per example)."""
MAX_STEPS = 200_000


@attrs.define(eq=False)
class Inst:
    id: str
    version: str


async def _measure(_context: object) -> float:  # never called: the test answers measurements
    return 0.0  # pragma: no cover


def _analysis(name: str) -> Analysis:
    """Two metrics the test answers itself: either may fail, be inconclusive, or see no data."""
    return Analysis(
        name=name,
        metrics=[
            Metric(name="a", provider=_measure, success=_low, failure=_high, count=2),
            Metric(name="b", provider=_measure, failure=_high, no_data_limit=1),
        ],
    )


def _low(value: float) -> bool:
    return value < 0.3


def _high(value: float) -> bool:
    return value > 0.7


async def _gate() -> bool:  # never called: the test answers gates itself
    return True  # pragma: no cover


@st.composite
def paired_strategies(draw: st.DrawFn) -> tuple[Strategy, list[Any], bool]:
    """A canary (always weighted) or a blue-green (weighted or by attach and detach)."""
    if draw(st.booleans()):
        promotion = draw(
            st.sampled_from(
                [
                    None,
                    RollingUpdate(max_surge=1, max_unavailable=0),
                    RollingUpdate(max_surge="25%"),
                ]
            )
        )
        canary = Canary(promotion=promotion, scale_down_delay=draw(st.sampled_from([0, 30])))
        pool = [
            SetWeight(5),
            SetWeight(draw(st.sampled_from([0, 20, 50, 100]))),
            SetCanaryScale(replicas=draw(st.sampled_from([0, 1, 3, "50%"]))),  # type: ignore[arg-type]  # a mixed list draws object
            SetCanaryScale(match_traffic_weight=True),
            Pause(5),
            Pause(),
            Gate(_gate),
            Analyze(_analysis("step"), inconclusive_timeout=60),
            SetWeight(30),
        ]
        steps = draw(st.lists(st.sampled_from(pool), max_size=6))
        return canary, steps, True
    blue_green = BlueGreen(
        preview_replicas=draw(st.sampled_from([None, 1, "50%"])),
        pre_promotion=_analysis("pre") if draw(st.booleans()) else None,
        post_promotion=_analysis("post") if draw(st.booleans()) else None,
        auto_promote=draw(st.booleans()),
        scale_down_delay=draw(st.sampled_from([0, 30])),
    )
    return blue_green, [], draw(st.booleans())


@st.composite
def configurations(draw: st.DrawFn) -> tuple[Settings, int, float, int]:
    # Mostly small fleets, where interleavings are dense; some up to 500.
    tier = draw(st.integers(0, 19))
    size = draw(st.integers(1, 12 if tier < 14 else 60 if tier < 19 else 500))
    surge_ok = draw(st.booleans())
    can_replace = draw(st.booleans()) or not surge_ok
    steps: list[Any] = []
    weighted = False
    strategy: Strategy
    if draw(st.integers(0, 3)) == 0:
        # A paired strategy: a new set beside the old one (an elastic driver).
        surge_ok = True
        strategy, steps, weighted = draw(paired_strategies())
    elif draw(st.booleans()):
        sizes = draw(
            st.lists(
                st.one_of(st.integers(1, 8), st.sampled_from(["5%", "20%", "50%"])),
                min_size=1,
                max_size=3,
            )
        )
        strategy = Batches(
            *sizes,
            surge=surge_ok and draw(st.booleans()),
            pause=draw(st.sampled_from([None, Pause(5), Pause()])),
        )
    else:
        count = st.one_of(st.integers(0, 6), st.sampled_from(["0%", "10%", "25%", "100%"]))
        unavailable = draw(count)
        surge = draw(count) if surge_ok else 0
        if unavailable in {0, "0%"} and surge in {0, "0%"}:
            unavailable = 1
        strategy = RollingUpdate(max_unavailable=unavailable, max_surge=surge)
    if not isinstance(strategy, Canary | BlueGreen) and draw(st.booleans()):
        steps = [Advance(draw(st.integers(1, 3))), Pause(), Advance("100%"), Gate(_gate)]
        if draw(st.booleans()):
            steps.insert(1, Analyze(_analysis("step"), inconclusive_timeout=60))
    policy = FailurePolicy(
        retries=draw(st.integers(0, 2)),
        backoff=Backoff(initial=1, jitter=0.5),
        max_failed=draw(st.sampled_from([0, 1, 3, "10%", "50%"])),  # type: ignore[arg-type]  # a mixed list draws object
        max_failed_per_batch="50%"
        if isinstance(strategy, Batches) and draw(st.booleans())
        else None,
        circuit_breaker=draw(st.sampled_from([None, 2, 5])),
        restore_failed=draw(st.booleans()),
    )
    config = Settings(
        target="v2",
        strategy=strategy,
        readiness=Readiness(),
        failure=policy,
        rollback=draw(st.sampled_from([RollbackMode.REVERT, RollbackMode.HALT])),
        progress_deadline=draw(st.sampled_from([None, ProgressDeadline(30)])),
        steps=tuple(steps),
        order=draw(st.sampled_from([Order(), Order.shuffled(3)])),
        waves=None,
        hooks=frozenset(draw(st.sampled_from([(), ("before_batch", "after_replace")]))),
        has_router=weighted or draw(st.booleans()),
        has_check=draw(st.booleans()),
        can_replace=can_replace,
        can_launch=surge_ok,
        journaled=draw(st.booleans()),
        seed=1,
        analysis=_analysis("background") if draw(st.booleans()) else None,
        weighted=weighted,
    )
    fault = draw(st.sampled_from([0.0, 0.02, 0.1, 0.4]))
    return config, size, fault, draw(st.integers(0, 2**32 - 1 - PER_CONFIGURATION))


@attrs.define
class Player:
    """Plays the runner against one machine, checking the invariants as it goes."""

    config: Settings
    machine: Machine
    rng: random.Random
    fault: float
    fleet: list[Inst]
    now: float = 0.0
    main: Generator[Any, Any, Any] | None = None
    main_effect: object = None
    main_woken: bool = True
    units: dict[int, list[Any]] = attrs.Factory(dict[int, list[Any]])
    """Program id -> [program, pending effect, start, interrupted]."""
    deferred: list[Start] = attrs.Factory(list[Start])
    working: set[str] = attrs.Factory(set[str])
    launched: set[str] = attrs.Factory(set[str])
    terminated: set[str] = attrs.Factory(set[str])
    step_ended: bool = False
    cancelled: bool = False
    next_id: int = 0
    contrib: dict[int, tuple[int, int]] = attrs.Factory(dict[int, tuple[int, int]])
    serving: int = 0
    existing: int = 0
    together: list[Any] = attrs.Factory(list[Any])
    """The answers of a ``Together`` the main program waits on."""
    together_left: int = 0
    weights: dict[str, int] = attrs.Factory(dict[str, int])

    window: ResolvedWindow = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.window = self.config.bounds(len(self.fleet))

    # -- invariants at the moment of an effect

    def refresh(self, slot: Slot) -> None:
        """Recount what ``slot`` serves and holds (only its own program changes it)."""
        now = (slot.serving + (slot.extra is not None and slot.extra_attached), slot.existing)
        before = self.contrib.get(id(slot), (0, 0))
        self.serving += now[0] - before[0]
        self.existing += now[1] - before[1]
        self.contrib[id(slot)] = now

    def refresh_all(self) -> None:
        for slot in self.machine.slots:
            self.refresh(slot)

    def slot_of(self, instance: object) -> Slot:
        for slot in self.machine.slots:
            if instance is slot.live or instance is slot.extra:
                return slot
        raise AssertionError(f"{instance} belongs to no slot")

    def check_weight(self, effect: Call, slot: Slot | None) -> None:
        """A weight of 0 on an old instance comes only once its new partner serves."""
        instance, weight = effect.args
        if slot is None:
            slot = self.slot_of(instance)
        if weight != 0 or self.cancelled or instance is not slot.live:
            return
        partner = slot.extra
        if partner is not None and slot.extra_attached:
            assert self.weights.get(partner.id, FULL_WEIGHT) > 0, "old out before its new one"
        weights = self.weights
        assert any(
            (
                s.live is not None
                and s.attached
                and s.live is not instance
                and weights.get(s.live.id, FULL_WEIGHT)
            )
            or (s.extra is not None and s.extra_attached and weights.get(s.extra.id, FULL_WEIGHT))
            for s in self.machine.slots
        ), "every instance at weight 0"

    def check_effect(self, effect: object, slot: Slot | None) -> None:
        if not isinstance(effect, Call):
            return
        if effect.op == "set_weight":
            self.check_weight(effect, slot)
            return
        if slot is None:
            slot = self.slot_of(effect.args[0]) if effect.op in {"detach", "attach"} else None
            if slot is None:
                return
        window = self.window
        if effect.op == "detach":
            instance = effect.args[0]
            assert instance is slot.live or instance is slot.extra, "detaching another's instance"
            if instance is slot.live and slot.extra is not None:
                # Surge: the old instance leaves only once its replacement is in traffic.
                assert slot.extra_attached, "surge detached the old before the new served"
            elif instance is slot.live and slot.serving and not self.cancelled:
                # (A surge instance leaving takes away only what its own unit added.)
                assert self.serving - 1 >= window.floor, (
                    f"floor: {self.serving} serve, floor {window.floor}"
                )
        elif effect.op == "launch":
            assert self.existing + 1 <= window.ceiling, (
                f"ceiling: {self.existing} exist, ceiling {window.ceiling}"
            )

    # -- answers

    def answer_call(self, effect: Call) -> Any:
        if self.rng.random() < self.fault:
            raise Failed(f"{effect.what} failed")
        if effect.op == "replace":
            asked, version = effect.args
            if self.rng.random() < self.fault / 4:
                version += "-wrong"
            return Inst(asked.id, version)
        if effect.op == "launch":
            self.next_id += 1
            instance = Inst(f"n{self.next_id}", effect.args[0])
            self.launched.add(instance.id)
            return instance
        if effect.op == "terminate":
            self.terminated.add(effect.args[0].id)
        if effect.op == "set_weight":
            self.weights[effect.args[0].id] = effect.args[1]
        return None

    def answer(self, effect: Any, *, interrupted: bool) -> Any:  # noqa: C901, PLR0911, PLR0912 - one answer per kind
        """What the runner would send into the program; an exception is thrown in instead."""
        if isinstance(effect, Call):
            try:
                return self.answer_call(effect)
            except Failed as exc:
                return exc
        if isinstance(effect, Sleep | WaitReady):
            if (interrupted and effect.interruptible) or self.cancelled:
                return Interrupted()
            if isinstance(effect, WaitReady):
                ok = self.rng.random() >= self.fault
                return (ok, "" if ok else "not ready")
            return None
        if isinstance(effect, Probe):
            return self.rng.random() >= self.fault
        if isinstance(effect, Record | WaitStep):
            return None
        if isinstance(effect, Survey):
            return [self.rng.random() >= self.fault for _ in effect.instances]
        if isinstance(effect, ListInstances):
            return list(self.fleet)
        if isinstance(effect, LoadJournal):
            return []
        if isinstance(effect, CheckGate):
            if self.step_ended:
                return None
            return self.rng.choice([(True, ""), (False, "bad metric")])
        if isinstance(effect, RunAnalysis):
            while not self.step_ended and self.measure(effect.judge):
                pass
            return None
        raise AssertionError(effect)

    def measure(self, judge: Any) -> bool:
        """One measurement of a random metric of ``judge``: a value, no data, or an error."""
        index = self.rng.randrange(len(judge.metrics))
        if judge.metrics[index].done:
            return not judge.done
        answer = self.rng.choice([0.0, 0.1, 0.5, 0.9, None])
        error = "boom" if self.rng.random() < self.fault else ""
        self.now += 1
        self.machine.now = self.now
        more: bool = self.machine.analyses.measured(judge, index, answer, error)
        self.signals()
        return more

    @staticmethod
    def resume(program: Generator[Any, Any, Any], value: Any) -> Any:
        """Send ``value`` into ``program``, or throw it in when it is an exception."""
        if isinstance(value, BaseException):
            return program.throw(value)
        return program.send(value)

    # -- driving

    def signals(self) -> None:
        signals = self.machine.take_signals()
        self.machine.drain_events()
        if signals & WAKE:
            self.main_woken = True
        if signals & STEP:
            self.step_ended = True
        if signals & INTERRUPT:
            for entry in self.units.values():
                entry[3] = True

    def spawn(self, start: Start) -> None:
        key = start.slot.key
        assert key not in self.working, f"{key} worked on twice at once"
        self.working.add(key)
        program = self.machine.unit(start)
        self.machine.now = self.now
        effect = program.send(None)
        self.refresh(start.slot)
        self.check_effect(effect, start.slot)
        self.units[id(program)] = [program, effect, start, False]
        self.signals()

    def step_unit(self, key: int) -> None:
        program, effect, start, interrupted = self.units[key][:4]
        value = self.answer(effect, interrupted=interrupted)
        self.units[key][3] = False
        self.machine.now = self.now
        if start is None:
            self.step_together(key, program, value)
            return
        try:
            effect = self.resume(program, value)
        except StopIteration as stop:
            self.refresh(start.slot)
            del self.units[key]
            self.working.discard(start.slot.key)
            self.signals()
            successors: list[Start] = stop.value
            if self.cancelled:
                for other in successors:
                    self.machine.unstart(other)
            else:
                self.deferred.extend(successors)
            self.signals()
            return
        self.refresh(start.slot)
        self.check_effect(effect, start.slot)
        self.units[key][1] = effect
        self.signals()

    def start_together(self, effect: Together) -> None:
        """The main program waits while each of ``effect``'s programs runs like a unit."""
        self.together = [None] * len(effect.programs)
        self.together_left = len(effect.programs)
        assert len(effect.slots) == len(effect.programs)
        for index, (program, slot) in enumerate(zip(effect.programs, effect.slots, strict=True)):
            self.machine.now = self.now
            try:
                first = program.send(None)
            except StopIteration as stop:
                self.together[index] = stop.value
                self.together_left -= 1
                continue
            finally:
                self.refresh(slot)
            self.check_effect(first, slot)
            self.units[id(program)] = [program, first, None, False, index, slot]
        self.signals()

    def step_together(self, key: int, program: Any, value: Any) -> None:
        slot = self.units[key][5]
        try:
            effect = self.resume(program, value)
        except StopIteration as stop:
            self.together[self.units[key][4]] = stop.value
            self.together_left -= 1
            del self.units[key]
            self.refresh(slot)
            self.signals()
            return
        self.refresh(slot)
        self.check_effect(effect, slot)
        self.units[key][1] = effect
        self.signals()

    def step_main(self) -> bool:  # noqa: C901, PLR0912 - one branch per kind of main effect
        """Advance the main program; False once it has ended."""
        assert self.main is not None
        effect = self.main_effect
        value: Any = None
        if effect is IDLE:
            if not self.main_woken:
                return True
            self.main_woken = False
        elif isinstance(effect, Spawn):
            for start in effect.units:
                self.spawn(start)
        elif isinstance(effect, Together):
            if self.together_left:
                return True  # its programs are still running
            value, self.together = self.together, []
        elif (
            isinstance(effect, WaitStep | CheckGate)
            and not self.step_ended
            and self.rng.random() < 0.5
        ):
            return True  # the step goes on for a while
        else:
            value = self.answer(effect, interrupted=False)
        if isinstance(effect, WaitStep | CheckGate):
            self.step_ended = False
        self.machine.now = self.now
        try:
            self.main_effect = self.resume(self.main, value)
        except StopIteration:
            self.signals()
            return False
        finally:
            if isinstance(effect, Call) or len(self.contrib) != len(self.machine.slots):
                self.refresh_all()  # the main program changed slots: a resume, or the plan
        if isinstance(self.main_effect, WaitStep | CheckGate):
            self.step_ended = False
        if isinstance(self.main_effect, Together):
            self.start_together(self.main_effect)
        self.signals()
        return True

    def control(self) -> None:
        machine = self.machine
        choice = self.rng.randrange(7)
        if machine.result is not None:
            return
        if choice == 0:
            machine.pause()
        elif choice == 1:
            machine.resume()
        elif choice == 2:
            machine.promote(full=self.rng.random() < 0.3)
        elif choice == 3:
            machine.abort(rollback=self.rng.random() < 0.7)
        elif choice == 4:
            machine.fail("error: an observer raised")
        else:
            self.now += self.rng.choice([0.5, 5, 40])
            machine.now = self.now
            due = machine.progress_due()
            if due is not None and self.now >= due:
                machine.deadline_passed()
        self.signals()

    def run(self) -> None:
        machine = self.machine
        machine.start(0.0, 1_700_000_000.0)
        self.main = machine.main()
        self.main_effect = self.main.send(None)
        self.signals()
        controls = self.rng.random() < 0.5
        cancel_at = self.rng.randrange(1, 400) if self.rng.random() < 0.1 else None
        running = True
        for step in range(MAX_STEPS):
            if step == cancel_at:
                self.cancel()
                return
            if controls and self.rng.random() < 0.01:
                self.control()
            self.background_measurement()
            movable = list(self.units)
            choices = len(movable) + len(self.deferred) + (1 if running else 0)
            if not choices:
                return
            pick = self.rng.randrange(choices)
            if pick < len(movable):
                self.step_unit(movable[pick])
            elif pick < len(movable) + len(self.deferred):
                start = self.deferred.pop(pick - len(movable))
                if machine.go_on(start):
                    self.spawn(start)
                self.signals()
            else:
                before = self.main_effect
                running = self.step_main()
                idle = before is IDLE and self.main_effect is IDLE
                if running and idle and not (self.units or self.deferred or self.main_woken):
                    self.unstick()
                effect = self.main_effect
                waiting = running and isinstance(effect, WaitStep) and not self.units
                if waiting and isinstance(effect, WaitStep) and effect.seconds is None:
                    machine.promote(full=False)
                    self.signals()
        raise AssertionError("no end after MAX_STEPS")

    def background_measurement(self) -> None:
        """Now and then, a measurement of the background analysis, when one runs."""
        background = self.machine.analyses.background
        if background is not None and self.rng.random() < 0.05:
            self.measure(background)

    def unstick(self) -> None:
        """Nothing runs and nothing will wake the main program.

        Only an operator's resume() may, after a pause(), or a measurement the end of
        the rollout waits for (the background analysis's bake); anything else is a stall.
        """
        machine = self.machine
        background = machine.analyses.background
        if machine.paused:
            machine.resume()
            self.signals()
        else:
            assert background is not None, "the machine stalled"
            self.measure(background)

    def cancel(self) -> None:
        """The runner's cancellation: waits are interrupted, units settle, the run ends."""
        self.cancelled = True
        for start in self.deferred:
            self.machine.unstart(start)
        self.deferred.clear()
        for entry in self.units.values():
            entry[3] = True
        for _ in range(MAX_STEPS):
            if not self.units:
                break
            self.step_unit(next(iter(self.units)))
        assert self.main is not None
        self.main.close()
        self.machine.now = self.now
        self.machine.finish(RolloutStatus.CANCELLED, "cancelled")

    # -- the end

    def check_end(self) -> None:
        machine = self.machine
        result = machine.result
        assert result is not None, "the main program ended without a result"
        assert not self.units
        assert not self.working
        outcomes = {i.outcome for i in result.instances}
        assert InstanceOutcome.IN_PROGRESS not in outcomes
        target = self.config.target
        if result.status is RolloutStatus.SUCCEEDED:
            for slot in machine.slots:
                assert slot.live is not None, slot
                assert slot.live.version == target, slot
                assert slot.attached, slot
                # A weighted strategy leaves every instance at full weight.
                assert self.weights.get(slot.live.id, FULL_WEIGHT) == FULL_WEIGHT, slot
        if result.status is RolloutStatus.ROLLED_BACK:
            for item in result.instances:
                back = item.version == item.old_version and item.serving
                assert back or item.outcome in {
                    InstanceOutcome.REVERT_FAILED,
                    InstanceOutcome.FAILED,
                    InstanceOutcome.INTERRUPTED,
                    InstanceOutcome.PENDING,
                }, item
        # No leaks: every launched instance stands somewhere, was terminated, or is a stray.
        standing = {s.live.id for s in machine.slots if s.live is not None}
        strays = {x.id for s in machine.slots for x in s.strays}
        assert all(s.extra is None for s in machine.slots)
        leaked = self.launched - self.terminated - standing - strays
        assert not leaked, f"leaked {sorted(leaked)}"
        # The ledger agrees with the slots once nothing runs.
        if len(machine.slots) == len(self.fleet):
            assert len(result.instances) == len(self.fleet)


@settings(
    max_examples=max(1, SEQUENCES // PER_CONFIGURATION),
    deadline=None,
    database=None,
    derandomize=os.environ.get("CI") == "true",
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
)
@given(configurations())
def test_random_event_sequences_keep_the_invariants(
    configuration: tuple[Settings, int, float, int],
) -> None:
    config, size, fault, first_seed = configuration
    for seed in range(first_seed, first_seed + PER_CONFIGURATION):
        rng = random.Random(seed)
        fleet = [Inst(f"i{k}", "v2" if rng.random() < 0.1 else "v1") for k in range(size)]
        machine = Machine(config, listening=rng.random() < 0.3)
        player = Player(config=config, machine=machine, rng=rng, fault=fault, fleet=fleet)
        player.run()
        player.check_end()

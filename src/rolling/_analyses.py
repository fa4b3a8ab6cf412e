"""Analyses: the machine's side of metric analysis, steps and background alike.

Part of the machine (:mod:`rolling._machine`), sans-io like it; measurements
are judged by :mod:`rolling._judge`, taken by the runner
(:mod:`rolling._measuring`).

1. An ``Analyze`` step measures when the pass reaches its barrier
   (:mod:`rolling._holds`): failed -> the rollback policy; inconclusive ->
   paused for a person (promote or resume go on, abort rolls back), with
   the step's optional timeout action.
2. The **background** analysis (``Rollout(analysis=...)``) starts when the
   first instance on the target is in traffic: when one completes, or when a
   canary's or blue-green's traffic shift gives the new set a share (so it
   watches the canary steps and the hold after a switch). Each metric starts
   after its ``initial_delay``. It never starts during a rollback.
3. A failed background verdict is a trigger (the rollback policy) at once,
   whatever the rollout is doing: nothing new starts, in-flight units
   settle. An inconclusive one pauses the rollout for a person, once.
4. When the forward pass ends, the rollout waits ``bake`` seconds, and at
   least until every deciding metric has counted a measurement (no data is
   never a silent pass), and while a person is asked to decide.
5. The background analysis stops when a rollback starts (it must not judge
   the rollback) and when the rollout ends; metrics still running are then
   decided (:mod:`rolling._judge`, rule 5).
6. A measurement's context (:class:`~rolling.analysis.MeasureContext`) has
   the new set whether in traffic or not (a blue-green's preview is measured
   before it gets requests), and the old instances that are in traffic: an
   old instance a router call set to weight 0 is left out until it gets a
   weight again.
7. The result carries every measurement, every analysis's verdict, and the
   verdict that decided the rollout: the one that triggered or paused it,
   else the last one reached.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from ._analysis import Analysis, MeasureContext, Measurement, Outcome, Verdict
from ._effects import IDLE, Interrupted, Sleep
from ._judge import AnalysisJudge
from .events import AnalysisDecided, MeasurementTaken

if TYPE_CHECKING:
    from ._machine import Machine

__all__ = ["ANALYZE", "Analyses"]

ANALYZE = 8
"""Signal: the background analysis started or ended (the runner starts or stops its task)."""

_IDLE, _RUNNING, _ENDED = 0, 1, 2


class Analyses:
    """The analyses of one machine."""

    def __init__(self, machine: Machine, background: Analysis | None) -> None:
        self._m = machine
        self._background = (
            None if background is None else AnalysisJudge(background, background=True)
        )
        self._state = _IDLE
        self._held = False
        self._weightless: set[str] = set()
        self.baking = False
        self.judges: list[AnalysisJudge] = []
        self.deciding: Verdict | None = None

    @property
    def background(self) -> AnalysisJudge | None:
        """The background analysis's judge while it runs."""
        return self._background if self._state == _RUNNING else None

    def context(self) -> MeasureContext:
        """What a measurement taken now knows of the rollout."""
        machine = self._m
        target = machine.settings.target
        new: list[Any] = []
        old: list[Any] = []
        versions: set[str] = set()
        for slot in machine.slots:
            if slot.old_version != target:
                versions.add(slot.old_version)
            if slot.extra is not None:
                # A canary or a green instance: measured from its launch, in traffic or not.
                new.append(slot.extra)
            live = slot.live
            if live is None or not slot.attached:
                continue
            if live.version == target:
                new.append(live)
            elif live.id not in self._weightless:
                old.append(live)
        return MeasureContext(
            target=target,
            old_versions=tuple(sorted(versions)),
            new_instances=tuple(new),
            old_instances=tuple(old),
            rollout_id=machine.rollout_id,
            at=machine.now,
        )

    def weighed(self, instance_id: str, weight: int) -> None:
        """A router call gave this instance ``weight`` (rule 6)."""
        if weight:
            self._weightless.discard(instance_id)
        else:
            self._weightless.add(instance_id)

    # ---------------------------------------------------------------- steps

    def open(self, analysis: Analysis) -> AnalysisJudge:
        """A judge for an ``Analyze`` step about to measure."""
        judge = AnalysisJudge(analysis, background=False)
        self.judges.append(judge)
        return judge

    def close(self, judge: AnalysisJudge) -> Verdict:
        """The step's measuring ended: decide what is left and announce the verdict."""
        judge.close()
        verdict = judge.verdict()
        self._m.emit(AnalysisDecided, verdict=verdict)
        if (
            verdict.outcome is not Outcome.SUCCESSFUL
            or self.deciding is None
            or self.deciding.outcome is Outcome.SUCCESSFUL
        ):
            self.deciding = verdict
        return verdict

    # ----------------------------------------------------------- background

    def start_background(self) -> None:
        """The new set is in traffic: start the background analysis (rule 2)."""
        machine = self._m
        if self._state != _IDLE or self._background is None or machine.stopping:
            return
        self._state = _RUNNING
        self.judges.append(self._background)
        machine.signal(ANALYZE)

    def end_background(self) -> None:
        """A rollback starts, or the rollout ends: stop measuring (rule 5)."""
        judge = self._background
        if self._state != _RUNNING or judge is None:
            return
        self._state = _ENDED
        self.close(judge)
        self._m.signal(ANALYZE)

    def measured(self, judge: AnalysisJudge, index: int, answer: object, error: str) -> bool:
        """Judge one answer; whether the analysis wants more measurements."""
        machine = self._m
        if judge.closed:
            return False
        measurement = judge.judge(index, answer, error, machine.now)
        self._announce(judge, measurement)
        outcome = judge.outcome
        if not judge.background:
            return not (outcome is Outcome.FAILED or judge.done)
        if outcome is Outcome.FAILED:
            self._state = _ENDED
            verdict = self.close(judge)
            machine.signal(ANALYZE)
            machine.policy_trigger(f"analysis {judge.analysis.name!r} failed: {verdict.reason}")
            return False
        if outcome is Outcome.INCONCLUSIVE and not self._held:
            self._held = True
            verdict = judge.verdict()
            self.deciding = verdict
            machine.emit(AnalysisDecided, verdict=verdict)
            machine.hold(f"analysis {judge.analysis.name!r} inconclusive: {verdict.reason}")
        # The end of the rollout may be waiting for this measurement (rule 4).
        machine.signal_wake()
        return not judge.done

    def _announce(self, judge: AnalysisJudge, measurement: Measurement) -> None:
        self._m.emit(
            MeasurementTaken,
            analysis=judge.analysis.name,
            measurement=measurement,
            background=judge.background,
        )

    def after_forward(self) -> Generator[Any, Any, None]:
        """The forward pass ended: bake unless a trigger fired, then stop (rules 4 and 5)."""
        if not self._m.stopping:
            yield from self._bake()
        self.end_background()

    def _bake(self) -> Generator[Any, Any, None]:
        judge = self._background
        machine = self._m
        if self._state != _RUNNING or judge is None:
            return
        self.baking = True
        try:
            if judge.analysis.bake > 0:
                yield Sleep(judge.analysis.bake)
            while self._state == _RUNNING and not machine.stopping:
                if not machine.paused and judge.settled:
                    break
                yield IDLE
        except Interrupted:
            pass
        finally:
            self.baking = False

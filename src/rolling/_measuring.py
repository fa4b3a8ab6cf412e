"""Taking measurements: the runner's side of metric analysis, and nothing it decides.

One task per metric: wait ``initial_delay``, then measure every
``interval``, each measurement bounded by the metric's ``timeout``; every
answer (or error) goes to the machine, which judges it and says whether to
go on. Providers are prepared (:meth:`prepare`) before the rollout touches
anything, so a query the metric server rejects stops it at the start.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import anyio

from ._analysis import Analysis, MeasureContext, Metric
from ._judge import AnalysisJudge
from ._machine import Machine
from ._steps import Analyze, Step

__all__ = ["Measurer", "analyses_of"]


def analyses_of(
    steps: Iterable[Step], background: Analysis | None, strategy: object = None
) -> list[Analysis]:
    """Every analysis of a rollout: its ``Analyze`` steps', a blue-green's, the background one."""
    found = [step.analysis for step in steps if isinstance(step, Analyze)]
    for name in ("pre_promotion", "post_promotion"):
        analysis = getattr(strategy, name, None)
        if isinstance(analysis, Analysis):
            found.append(analysis)
    if background is not None:
        found.append(background)
    return found


def _measure_function(metric: Metric) -> Callable[[MeasureContext], Awaitable[Any]]:
    measure = getattr(metric.provider, "measure", None)
    if callable(measure):
        return measure  # type: ignore[no-any-return]
    return metric.provider  # type: ignore[no-any-return]


class Measurer:
    """Takes the measurements of one rollout's analyses."""

    def __init__(
        self, machine: Machine, clock: Callable[[], float], flush: Callable[[], None]
    ) -> None:
        self._m = machine
        self._clock = clock
        self._flush = flush

    async def prepare(self, analyses: Iterable[Analysis]) -> None:
        """Let each provider with a ``prepare`` method check itself, before any change.

        Raises:
            Exception: What a provider's ``prepare`` raised (a rejected query).
        """
        context = MeasureContext(target=self._m.settings.target)
        seen: set[int] = set()
        for analysis in analyses:
            for metric in analysis.metrics:
                provider = metric.provider
                prepare = getattr(provider, "prepare", None)
                if id(provider) in seen or not callable(prepare):
                    continue
                seen.add(id(provider))
                result = prepare(context)
                if inspect.isawaitable(result):
                    with anyio.move_on_after(metric.timeout) as scope:
                        await result
                    if scope.cancelled_caught:
                        msg = (
                            f"metric {metric.name!r}: its provider's prepare() did not return"
                            f" within {metric.timeout:g}s (Metric.timeout)"
                        )
                        raise TimeoutError(msg)

    async def run(self, judge: AnalysisJudge) -> None:
        """Measure until the machine wants no more (or the caller cancels)."""
        async with anyio.create_task_group() as tg:
            for index in range(len(judge.metrics)):
                tg.start_soon(self._metric, judge, index, tg.cancel_scope)

    async def _metric(self, judge: AnalysisJudge, index: int, scope: anyio.CancelScope) -> None:
        machine = self._m
        clock = self._clock
        metric = judge.metrics[index].metric
        measure = _measure_function(metric)
        await anyio.sleep(metric.initial_delay)
        while True:
            machine.now = clock()
            context = machine.analyses.context()
            answer: Any = None
            error = ""
            try:
                with anyio.fail_after(metric.timeout):
                    answer = await measure(context)
            except TimeoutError:
                error = f"measuring took longer than {metric.timeout}s"
            except Exception as exc:  # noqa: BLE001 - a provider that raises gives an error measurement
                error = f"{type(exc).__name__}: {exc}"
            machine.now = clock()
            more = machine.analyses.measured(judge, index, answer, error)
            self._flush()
            if not more:
                scope.cancel()
                return
            if judge.metrics[index].done:
                return
            await anyio.sleep(metric.interval)

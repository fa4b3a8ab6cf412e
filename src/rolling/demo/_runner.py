"""``rolling demo``: real processes behind the built-in balancer, rolled under steady load."""

from __future__ import annotations

import importlib.util
import os
import signal
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import anyio
import attrs

from rolling import (
    Analysis,
    Batches,
    BlueGreen,
    Canary,
    ConfigError,
    FailurePolicy,
    FlagRules,
    Metric,
    Pause,
    Readiness,
    RollingUpdate,
    Rollout,
    RolloutResult,
    SetWeight,
    Step,
)
from rolling.checks import HTTPCheck
from rolling.cli._output import to_json
from rolling.cli._timeline import render
from rolling.drivers.process import ProcessDriver, ProcessInstance
from rolling.flags import FlagdFile
from rolling.routers.balancer import Balancer

from . import app
from ._load import LoadGenerator
from ._progress import Progress
from ._report import DemoReport

__all__ = ["DemoOptions", "run_demo", "size_note"]


@attrs.frozen(kw_only=True)
class DemoOptions:
    """The demo's settings, one per command-line option."""

    instances: int = 4
    strategy: str = "rolling"
    max_unavailable: int | str = 1
    max_surge: int | str = 0
    broken: bool = False
    drain: bool = True
    json: bool = False
    concurrency: int = 8
    html: Path | None = None
    warmup: float = 1.0
    cooldown: float = 1.0
    faulty: float = 0.0
    slow_ms: float = 0.0
    analysis: bool = True
    flag: bool = False

    @property
    def bad_release(self) -> bool:
        """Whether v2 passes readiness but serves badly (``--faulty``, ``--slow``)."""
        return bool(self.faulty or self.slow_ms)


def app_command(
    *, broken: bool, faulty: float = 0.0, slow_ms: float = 0.0, flag_file: Path | None = None
) -> Callable[[str, int], Sequence[str]]:
    """The argv builder for the bundled app.

    The new version never becomes ready with ``broken``, fails ``faulty``
    percent of requests, and takes ``slow_ms`` longer.
    """

    def build(version: str, port: int) -> Sequence[str]:
        new = version != "v1"
        return app.command(
            version,
            port,
            startup_delay=0.3,
            never_ready=broken and new,
            error_pct=faulty if new else 0.0,
            latency_ms=20.0 + (slow_ms if new else 0.0),
            flag_file=None if flag_file is None else str(flag_file),
        )

    return build


ERROR_RATIO_LIMIT = 0.02
"""The demo's analysis fails the new version above 2 % of requests answered 5xx."""
P90_LIMIT = 0.1
"""... or above a p90 latency of 100 ms twice (the app answers in 20 ms; a p99 over half a
second of one instance's traffic is its slowest request, too noisy on a busy machine)."""


def _analysis_installed() -> bool:
    """Whether the demo's analysis can run (its Scrape provider needs prometheus-client)."""
    return importlib.util.find_spec("prometheus_client") is not None


def demo_analysis(count: int | None = None) -> Analysis:
    """The demo's analysis: error ratio and p90 latency of the new version.

    It scrapes each new instance's ``/metrics`` every half second: until the
    rollout ends (a background analysis), or ``count`` times (blue-green's
    post-promotion analysis).

    Raises:
        ConfigError: ``prometheus-client`` (``rolling[analysis]``) is not installed.
    """
    try:
        from rolling.metrics import Scrape  # noqa: PLC0415 - only the demo's analysis needs the extra
    except ImportError as exc:
        raise ConfigError(
            "rolling demo",
            f"the metric analysis needs prometheus-client ({exc})",
            "pip install 'rolling[analysis]', or pass --no-analysis",
        ) from None
    return Analysis(
        name="demo",
        metrics=[
            Metric(
                name="error-ratio",
                provider=Scrape(
                    "demo_requests_total", errors=lambda labels: labels["code"].startswith("5")
                ),
                failure=lambda ratio: ratio > ERROR_RATIO_LIMIT,
                interval=0.5,
                count=count,
            ),
            Metric(
                name="p90-latency",
                provider=Scrape("demo_request_duration_seconds", quantile=0.9),
                failure=lambda seconds: seconds > P90_LIMIT,
                failure_limit=1,
                interval=0.5,
                count=count,
            ),
        ],
    )


DEMO_FLAG = "new-format"
"""The flag ``rolling demo --flag`` drives."""


async def _demo_flags(options: DemoOptions, logs: Path) -> FlagRules | None:
    """With ``--flag``: the flag file the apps read, off to begin with, and the rules."""
    if not options.flag:
        return None
    try:
        import openfeature.contrib.provider.flagd  # noqa: F401, PLC0415  # pyright: ignore[reportMissingTypeStubs, reportUnusedImport]
    except ImportError as exc:
        raise ConfigError(
            "rolling demo --flag",
            f"the app reads the flag through OpenFeature ({exc})",
            "pip install openfeature-sdk openfeature-provider-flagd",
        ) from None
    setter = FlagdFile(logs / "flags.json")
    await setter.set(DEMO_FLAG, value=False)
    return FlagRules(setter, DEMO_FLAG)


DemoStrategy = RollingUpdate | Batches | Canary | BlueGreen

CANARY_STEPS: tuple[Step, ...] = (SetWeight(10), Pause(3), SetWeight(50), Pause(3))
"""``--strategy canary``: a tenth of the requests, then half, then promotion."""
SCALE_DOWN_DELAY = 3.0
"""Seconds the old set is kept after the switch (canary promotion and blue-green)."""
POST_PROMOTION_COUNT = 4
"""Blue-green's post-promotion analysis: this many measurements, half a second apart."""


def _strategy(options: DemoOptions) -> DemoStrategy:
    if options.strategy == "batches":
        return Batches(options.max_unavailable)
    if options.strategy == "canary":
        return Canary(scale_down_delay=SCALE_DOWN_DELAY)
    if options.strategy == "blue-green":
        post = demo_analysis(POST_PROMOTION_COUNT) if options.analysis else None
        return BlueGreen(post_promotion=post, scale_down_delay=SCALE_DOWN_DELAY)
    return RollingUpdate(max_unavailable=options.max_unavailable, max_surge=options.max_surge)


def _paired(strategy: DemoStrategy) -> bool:
    """Whether the strategy moves traffic by weight beside a second set (canary, blue-green)."""
    return isinstance(strategy, Canary | BlueGreen)


async def _wait_healthy(check: HTTPCheck, instance: ProcessInstance, deadline: float) -> None:
    with anyio.fail_after(deadline):
        while not (await check.check(instance)).healthy:  # noqa: ASYNC110 - polling a remote probe
            await anyio.sleep(0.05)


_MANY = 20
"""Above this many processes, the demo says how long it will take first."""


def size_note(options: DemoOptions) -> str | None:
    """A word of warning before a large demo, or None."""
    if options.instances <= _MANY:
        return None
    # About 0.8 s a process one at a time, measured with 50 on 2 cores (41 s).
    window = options.max_unavailable if isinstance(options.max_unavailable, int) else 1
    seconds = 5 + 0.8 * options.instances / max(window, 1)
    return (
        f"note: {options.instances} processes plus load keep {os.cpu_count() or 1} core(s)"
        f" busy; this takes about {seconds:.0f} s (Ctrl-C stops it cleanly)"
    )


async def run_demo(options: DemoOptions, out: TextIO) -> DemoReport:
    """Run the whole demo and return its report; SIGINT or SIGTERM end it cleanly."""
    started = anyio.current_time()
    note = size_note(options)
    if options.analysis and not options.bad_release and not _analysis_installed():
        # A plain `pip install` has no prometheus-client: the demo still runs, and says what
        # it leaves out. Asking for a bad release (--faulty, --slow) without it is an error.
        options = attrs.evolve(options, analysis=False)
        off = (
            "note: metric analysis is off"
            " (it needs prometheus-client: pip install 'rolling[analysis]')"
        )
        note = f"{note}\n{off}" if note else off
    if note:
        out.write(note + "\n")
        out.flush()
    result: RolloutResult | None = None
    interrupted = False
    strategy = _strategy(options)
    check = HTTPCheck("/healthz", timeout=0.8)
    samples_holder: list[LoadGenerator] = []
    progress_holder: list[Progress] = []
    with tempfile.TemporaryDirectory(prefix="rolling-demo-") as logs:
        async with anyio.create_task_group() as outer:

            async def watch_signals() -> None:
                nonlocal interrupted
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        interrupted = True
                        outer.cancel_scope.cancel()
                        return

            outer.start_soon(watch_signals)
            result = await _demo(
                options, strategy, check, Path(logs), out, samples_holder, progress_holder
            )
            outer.cancel_scope.cancel()
    samples = samples_holder[0].samples if samples_holder else []
    ended = anyio.current_time()
    rollout_started = progress_holder[0].rollout_started if progress_holder else None
    return DemoReport.build(
        analysis=options.analysis,
        flag=options.flag,
        result=result,
        samples=samples,
        instances=options.instances,
        strategy=_describe(strategy),
        drain=options.drain,
        demo_seconds=ended - started,
        interrupted=interrupted,
        cut_short_after=None if rollout_started is None else ended - rollout_started,
        shifts=progress_holder[0].shifts if progress_holder else (),
    )


async def _demo(  # noqa: PLR0917 - private; every argument is a distinct piece of the demo
    options: DemoOptions,
    strategy: DemoStrategy,
    check: HTTPCheck,
    logs: Path,
    out: TextIO,
    holder: list[LoadGenerator],
    progress_holder: list[Progress],
) -> RolloutResult:
    # Without draining, backends leave the rotation at once and are killed on the spot:
    # the naive baseline whose failed requests prove the measurement can fail.
    drain_timeout = 10.0 if options.drain else 0.0
    grace = 5.0 if options.drain else 0.0
    flags = await _demo_flags(options, logs)
    command = app_command(
        broken=options.broken,
        faulty=options.faulty,
        slow_ms=options.slow_ms,
        flag_file=None if flags is None else flags.setter.path,
    )
    async with (
        Balancer(drain_timeout=drain_timeout) as balancer,
        ProcessDriver(command, grace=grace, log_dir=logs) as driver,
    ):
        fleet = await driver.spawn(options.instances, "v1")
        async with anyio.create_task_group() as tg:
            for instance in fleet:
                tg.start_soon(_wait_healthy, check, instance, 30.0)
        for instance in fleet:
            await balancer.attach(instance)
        load = LoadGenerator(balancer.host, balancer.port, concurrency=options.concurrency)
        holder.append(load)
        progress = Progress(load, out, shares=_paired(strategy))
        progress_holder.append(progress)
        events: list[dict[str, Any]] = []
        progress.seed({i.id: i.version for i in fleet})
        rollout: Rollout[ProcessInstance] = Rollout(
            driver,
            "v2",
            strategy=strategy,
            router=balancer,
            # A bad release passes readiness: each instance then serves for a second
            # (min_ready) before the next goes, with analysis or without, so that the
            # metrics have a moment to see it.
            readiness=Readiness(
                check=check,
                period=0.2,
                timeout=1.0,
                # Generous for a bad release: its test is what the analysis sees, not how
                # fast a loaded machine starts a process.
                deadline=15.0 if options.bad_release else 5.0,
                min_ready=1.0 if options.bad_release else 0.0,
            ),
            failure=FailurePolicy(),
            # Blue-green measures green after the switch (its post-promotion analysis).
            analysis=demo_analysis()
            if options.analysis and not isinstance(strategy, BlueGreen)
            else None,
            steps=CANARY_STEPS if isinstance(strategy, Canary) else (),
            observers=[progress, lambda event: events.append(to_json(event))],
            effect_timeout=60.0,
            flags=flags,
        )
        result: RolloutResult | None = None
        async with anyio.create_task_group() as traffic:
            traffic.start_soon(load.run)
            async with anyio.create_task_group() as tg:
                tg.start_soon(progress.run)
                await anyio.sleep(options.warmup)
                result = await rollout.run()
                await anyio.sleep(options.cooldown)
                tg.cancel_scope.cancel()
            # Requests in flight finish before the fleet is torn down.
            load.stop()
        if options.html is not None:
            page = render(events, title=f"rolling demo: {options.instances} processes to v2")
            await anyio.Path(options.html).write_text(page, encoding="utf-8")
        assert result is not None  # noqa: S101 - the rollout ran, or this was cancelled
        return result


def _describe(strategy: DemoStrategy) -> str:
    if isinstance(strategy, Batches):
        return "batches of " + ", ".join(str(s) for s in strategy.sizes)
    if isinstance(strategy, Canary):
        weights = ", ".join(f"{s.percent:g} %" for s in CANARY_STEPS if isinstance(s, SetWeight))
        return f"canary ({weights}, then promotion)"
    if isinstance(strategy, BlueGreen):
        post = "post-promotion analysis, " if strategy.post_promotion is not None else ""
        return f"blue-green ({post}blue kept {strategy.scale_down_delay:g} s)"
    window = f"max_unavailable={strategy.max_unavailable}, max_surge={strategy.max_surge}"
    return f"rolling update ({window})"

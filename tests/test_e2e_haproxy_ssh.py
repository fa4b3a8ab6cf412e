"""End to end: a real HAProxy in front of four SSH hosts, rolled under steady HTTP load.

Each scenario builds, from nothing:

* a lab of four hosts, h1 to h4, each in its own network namespace running a real sshd
  (``tests/netns_hosts.py``); the SSH ``start`` command runs the demo app
  (:mod:`rolling.demo.app`) in the namespace, on ``<host address>:8000``;
* a real ``haproxy`` in the root namespace with the strict configuration of
  ``docs/haproxy-ssh.md`` (``retries 0``, no ``option redispatch``, ``option httpchk GET
  /healthz``, ``inter 200ms fall 2 rise 1``): a request a rollout breaks is a failed request,
  never hidden by a retry on another server;
* steady load: a few clients sending ``GET /`` to HAProxy's frontend on 127.0.0.1, one
  connection per request, bounded in count and time;
* the rollout of ``docs/examples/haproxy_ssh.py``: its ``build_driver`` and ``build_rollout``,
  with the lab's hosts, keys, commands and HAProxy socket, and short timeouts.

Every scenario prints the requests it sent and how many failed (``pytest -s`` shows them).

Without root, ``ip``, ``sshd``, ``haproxy`` or asyncssh these tests are skipped with a hint;
on CI (``CI=true``) that is a failure instead. The lab and HAProxy are removed, every process
they started killed, also when a test fails.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import anyio.to_thread
import attrs
import pytest

if importlib.util.find_spec("asyncssh") is None:  # pragma: no cover - depends on the machine
    if os.environ.get("CI") == "true":
        pytest.fail("asyncssh is not installed: pip install 'rolling[ssh]'", pytrace=False)
    pytest.skip("asyncssh is not installed: pip install 'rolling[ssh]'", allow_module_level=True)

# These import asyncssh: only once it is known to exist.
import rolling
from haproxy_harness import HAProxy, http_get, render_config, require_haproxy, running_haproxy
from netns_hosts import APP_PORT, NetnsLab, open_lab, require_netns
from rolling.checks import HTTPCheck
from rolling.drivers.ssh import CommandFinished, SSHCommands, SSHDriver

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).parent.parent
GUIDE = ROOT / "docs" / "haproxy-ssh.md"
EXAMPLE = ROOT / "docs" / "examples" / "haproxy_ssh.py"

SLACK = 1.5
"""Seconds a timeout may be late by on a busy 2-core machine."""

CLIENTS = 4
"""Concurrent HTTP clients; each sends one request at a time, one connection per request."""
PAUSE = 0.01
"""Seconds a client waits between two requests."""
LOAD_LIMIT = 60.0
"""Seconds a client sends requests for at most, whatever happens to the test."""


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    """asyncio only, in real time.

    asyncssh, and so the SSH driver, runs on asyncio only; and everything here is real: sshd,
    the apps, HAProxy's health checks and the network. The default of this suite (both
    backends on a virtual clock, tests/conftest.py) would not wait for any of them.
    """
    return ("asyncio", {})


def load_example() -> ModuleType:
    """Import docs/examples/haproxy_ssh.py by path (the examples are scripts, not a package)."""
    name = "rolling_docs_example_haproxy_ssh"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # registered before it runs: dataclasses look it up
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


EXAMPLE_MODULE = load_example()

# The example's own Timeouts, made short for a lab whose every step takes well under a second.
# The slowest SSH command seen on a loaded 2-core machine took 0.75 s: `command` leaves four
# times that. `connect` stays below the ~3 s the kernel's address resolution takes to give up on
# a cut-off host, so connecting to one fails by this timeout, always with the same reason.
FAST: Any = EXAMPLE_MODULE.Timeouts(
    connect=2.0, command=3.0, drain=2.0, up=5.0, check=0.5, ready=4.0, poll=0.1
)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[NetnsLab]:
    """Four namespace hosts, h1 to h4, on v1 (skipped, or failed on CI, when it cannot run)."""
    require_haproxy()
    require_netns()
    yield from open_lab(4, tmp_path / "lab")


def lab_commands(lab: NetnsLab) -> SSHCommands:
    """The lab's demo-app commands; a version ending in ``-broken`` starts ``--never-ready``.

    ``{version}`` in ``start`` is the version just deployed, quoted by the driver: ``case``
    sees it as one word, whatever it holds.
    """
    base = lab.commands()
    return SSHCommands(
        probe=base.probe,
        stop=base.stop,
        deploy=base.deploy,
        start=(
            "cd {dir} && case {version} in *-broken) ready=--never-ready;; *) ready=;; esac"
            # Braces: only the app goes to the background (see NetnsLab.commands).
            " && {{ setsid nohup {python} -m rolling.demo.app"
            ' --version "$(cat VERSION)" --port {port} --host {host}'
            " --startup-delay 0.2 --latency-ms 5 $ready"
            " </dev/null >>app.log 2>&1 & echo $! > app.pid; }}"
        ),
    )


class Recorder:
    """An observer that keeps every event, and raises flags on the events asked for."""

    def __init__(self) -> None:
        self.events: list[rolling.Event] = []
        self._watches: list[tuple[Callable[[rolling.Event], bool], anyio.Event]] = []

    def __call__(self, event: rolling.Event) -> None:
        self.events.append(event)
        for matches, flag in self._watches:
            if matches(event):
                flag.set()

    def when(self, matches: Callable[[rolling.Event], bool]) -> anyio.Event:
        """A flag set by the first event from now on that ``matches``."""
        flag = anyio.Event()
        self._watches.append((matches, flag))
        return flag

    def phase_at(self, instance_id: str, phase: rolling.Phase) -> float:
        """When ``instance_id`` first entered ``phase``."""
        return next(
            e.at
            for e in self.events
            if isinstance(e, rolling.InstancePhaseChanged)
            and (e.instance_id, e.phase) == (instance_id, phase)
        )


@attrs.frozen
class Reply:
    """One request of the load, as its client saw it."""

    started: float
    ended: float
    status: int
    body: str

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.body.startswith("hello from ")

    @property
    def version(self) -> str:
        return self.body.split()[2]  # "hello from v2 on port 8000"


@attrs.define(eq=False)
class Load:
    """Steady traffic through HAProxy's frontend, from :data:`CLIENTS` clients."""

    frontend: tuple[str, int]
    replies: list[Reply] = attrs.field(factory=list[Reply])
    stopping: anyio.Event = attrs.field(factory=anyio.Event)

    @property
    def sent(self) -> int:
        return len(self.replies)

    @property
    def failed(self) -> list[Reply]:
        return [reply for reply in self.replies if not reply.ok]

    async def client(self) -> None:
        deadline = anyio.current_time() + LOAD_LIMIT
        for _ in range(20_000):  # bounded, whatever happens to the test
            if self.stopping.is_set() or anyio.current_time() > deadline:
                return
            started = anyio.current_time()
            try:
                status, body = await http_get(*self.frontend)  # at most 5 s
            except TimeoutError:
                status, body = 0, "no answer within 5s"
            self.replies.append(Reply(started, anyio.current_time(), status, body))
            await anyio.sleep(PAUSE)


@contextlib.asynccontextmanager
async def steady_load(frontend: tuple[str, int]) -> AsyncGenerator[Load]:
    """Send load while the block runs; it has been flowing for a while when the block starts."""
    load = Load(frontend)
    async with anyio.create_task_group() as clients:
        for _ in range(CLIENTS):
            clients.start_soon(load.client)
        with anyio.fail_after(10):
            while sum(reply.ok for reply in load.replies) < 20:  # noqa: ASYNC110 - polls the load
                await anyio.sleep(0.01)
        try:
            yield load
            await anyio.sleep(0.3)  # and a little after
        finally:
            load.stopping.set()


@attrs.define(eq=False)
class Env:
    lab: NetnsLab
    driver: SSHDriver
    haproxy: HAProxy
    recorder: Recorder

    def rollout(self, version: str, **options: Any) -> rolling.Rollout[Any]:
        """The example's rollout, against this lab and this HAProxy."""
        rollout: rolling.Rollout[Any] = EXAMPLE_MODULE.build_rollout(
            self.driver,
            version,
            socket=self.haproxy.socket_path,
            timeouts=FAST,
            observers=[self.recorder],
            **options,
        )
        return rollout

    async def statuses(self) -> dict[str, str]:
        return {host.name: await self.haproxy.status(host.name) for host in self.lab.hosts}

    async def wait_statuses(self, expected: dict[str, str], within: float = 5.0) -> None:
        """Until HAProxy reports exactly ``expected`` (its checks may take a moment to settle)."""
        with anyio.move_on_after(within):
            while await self.statuses() != expected:  # noqa: ASYNC110 - HAProxy has no event to wait on
                await anyio.sleep(0.05)
        assert await self.statuses() == expected

    async def versions_served(self, requests: int = 12) -> list[str]:
        """The versions answering ``GET /`` through the frontend (round robin over the UP ones)."""
        versions: list[str] = []
        for _ in range(requests):
            status, body = await http_get(*self.haproxy.frontend)
            assert status == 200, body
            versions.append(Reply(0, 0, status, body).version)
        return versions


@contextlib.asynccontextmanager
async def fleet_behind_haproxy(lab: NetnsLab, directory: Path) -> AsyncGenerator[Env]:
    """v1 running on every host (started over SSH), HAProxy in front with all four UP."""
    recorder = Recorder()
    driver: SSHDriver = EXAMPLE_MODULE.build_driver(
        lab.ssh_hosts(),
        lab_commands(lab),
        known_hosts=lab.known_hosts,
        client_keys=[lab.client_key],
        timeouts=FAST,
        observers=[recorder],
    )
    async with driver:
        # The driver itself starts the apps: replace(..., "v1") stops nothing (no app yet),
        # writes VERSION, starts the app and probes it.
        fleet = await driver.list_instances()
        async with anyio.create_task_group() as tg:
            for instance in fleet:
                tg.start_soon(driver.replace, instance, "v1")
        health = HTTPCheck("/healthz", timeout=0.5)
        with anyio.fail_after(10):
            for instance in fleet:
                while not (await health.check(instance)).healthy:  # noqa: ASYNC110 - polls the app
                    await anyio.sleep(0.05)
        servers = [(host.name, host.address, APP_PORT) for host in lab.hosts]
        async with running_haproxy(directory, servers) as haproxy:  # waits for all four UP
            recorder.events.clear()
            yield Env(lab, driver, haproxy, recorder)


def report(scenario: str, load: Load, result: rolling.RolloutResult) -> None:
    """Print what the issue asks to see: requests sent and failed, and the rollout's result."""
    kinds = Counter(
        "no answer" if reply.status == 0 else f"HTTP {reply.status}" for reply in load.failed
    )
    failed = f"{len(load.failed)} failed"
    if kinds:
        failed += f" ({', '.join(f'{count} {kind}' for kind, count in sorted(kinds.items()))})"
    span = load.replies[-1].ended - load.replies[0].started
    lines = [
        (
            f"[e2e] {scenario}: {load.sent} requests sent in {span:.1f}s, {failed}; "
            f"rollout {result.status} in {result.duration:.1f}s"
        ),
        *(
            f"    {item.id}: {item.outcome}, on {item.version}, serving={item.serving}"
            + (f": {item.reason}" if item.reason else "")
            for item in result.instances
        ),
    ]
    print("\n" + "\n".join(lines))  # noqa: T201 - `pytest -s` shows them


# ------------------------------------------------------------------------------- scenarios


async def test_rolling_four_hosts_under_load_fails_no_request(
    lab: NetnsLab, tmp_path: Path
) -> None:
    async with fleet_behind_haproxy(lab, tmp_path / "haproxy") as env:
        async with steady_load(env.haproxy.frontend) as load:
            with anyio.fail_after(40):
                result = await env.rollout("v2").run()
        report("roll 4 hosts to v2", load, result)

        assert result.status is rolling.RolloutStatus.SUCCEEDED, result.reason
        assert result.counts == {rolling.InstanceOutcome.UPDATED: 4}
        assert load.failed == []
        assert load.sent > 100
        # The load saw the fleet go from v1 to v2.
        assert load.replies[0].version == "v1"
        assert load.replies[-1].version == "v2"
        assert {lab.version_file(host.name) for host in lab.hosts} == {"v2"}
        await env.wait_statuses(dict.fromkeys(("h1", "h2", "h3", "h4"), "UP"))
        assert set(await env.versions_served()) == {"v2"}
        # Each host was out of HAProxy while it was updated: detached before its stop command.
        for host in ("h1", "h2", "h3", "h4"):
            stop = next(
                e
                for e in env.recorder.events
                if isinstance(e, CommandFinished) and (e.host, e.phase) == (host, "stop")
            )
            assert env.recorder.phase_at(host, rolling.Phase.DETACHED) <= stop.at - stop.duration


async def test_broken_release_is_rolled_back_without_a_failed_request(
    lab: NetnsLab, tmp_path: Path
) -> None:
    async with fleet_behind_haproxy(lab, tmp_path / "haproxy") as env:
        async with steady_load(env.haproxy.frontend) as load:
            with anyio.fail_after(40):
                result = await env.rollout("v2-broken").run()
        report("broken release v2-broken", load, result)

        # h1 never became ready (its /healthz answers 503): it failed, which is over the
        # budget of max_failed=0, so the rollout was rolled back. h1 was the only host changed,
        # and its own restore put it back on v1 and in traffic; no other host was touched.
        assert result.status is rolling.RolloutStatus.ROLLED_BACK
        assert "h1" in result.reason
        h1 = result.by_id("h1")
        assert h1.outcome is rolling.InstanceOutcome.FAILED
        assert "not ready within the 4.0s deadline" in h1.reason
        assert "HTTP 503" in h1.reason
        assert h1.reason.endswith("restored to v1")
        assert (h1.version, h1.serving) == ("v1", True)
        for other in ("h2", "h3", "h4"):
            item = result.by_id(other)
            assert (item.outcome, item.version, item.serving) == (
                rolling.InstanceOutcome.PENDING,
                "v1",
                True,
            )
        assert load.failed == []
        assert load.sent > 100
        # Not one request reached the broken release: HAProxy never had h1 back before it
        # was on v1 again.
        assert {reply.version for reply in load.replies} == {"v1"}
        assert {lab.version_file(host.name) for host in lab.hosts} == {"v1"}
        await env.wait_statuses(dict.fromkeys(("h1", "h2", "h3", "h4"), "UP"))
        assert set(await env.versions_served()) == {"v1"}


async def test_host_cut_off_mid_rollout_fails_within_its_timeouts(
    lab: NetnsLab, tmp_path: Path
) -> None:
    # h3's link goes down while h1 is being updated (right after h1's stop command), so h3
    # is still in traffic when it is cut off. What a real HAProxy does with that:
    #
    # * a request in flight to h3 at the cut never gets an answer (the client gives up after
    #   5 s), and a request HAProxy sends to h3 before its checks mark it DOWN fails after
    #   `timeout connect` (1 s) with a 503: with `retries 0` and no `option redispatch` it is
    #   not tried on another server. Those failures are accepted, and only those: every
    #   failed request started between just before the cut and the moment HAProxy reported
    #   h3 DOWN (`fall 2` checks 200 ms apart, each timing out after `inter`);
    # * from then on HAProxy sends h3 nothing, and every request succeeds.
    #
    # The rollout updates h1 and h2, then reaches h3: detach drains it (sessions to h3 hang,
    # so for at most drain_timeout), and the stop command on the dead connection times out
    # after command_timeout: h3 FAILED, within drain + command timeouts. Under
    # rollback="halt" the rollout stops there (h4 is never touched); restoring h3 fails too,
    # since a new connection gets no answer within connect_timeout, so h3 stays out of
    # traffic, in maintenance.
    async with fleet_behind_haproxy(lab, tmp_path / "haproxy") as env:
        h1_stopped = env.recorder.when(
            lambda e: isinstance(e, CommandFinished) and (e.host, e.phase) == ("h1", "stop")
        )
        cut: list[float] = []  # when link_down was called, then when it returned
        down: list[float] = []  # when HAProxy was first seen reporting h3 DOWN

        async def cut_h3_off() -> None:
            await h1_stopped.wait()
            cut.append(anyio.current_time())
            await anyio.to_thread.run_sync(lab.link_down, "h3")
            cut.append(anyio.current_time())
            with anyio.fail_after(5):
                while await env.haproxy.status("h3") != "DOWN":  # noqa: ASYNC110 - polls HAProxy
                    await anyio.sleep(0.02)
            down.append(anyio.current_time())

        results: list[rolling.RolloutResult] = []
        async with steady_load(env.haproxy.frontend) as load, anyio.create_task_group() as tg:
            tg.start_soon(cut_h3_off)
            with anyio.fail_after(40):
                results.append(await env.rollout("v2", rollback=rolling.RollbackMode.HALT).run())
        [result] = results
        report("h3 cut off mid-rollout, rollback=halt", load, result)

        # HAProxy took h3 out by its own checks, quickly.
        assert down[0] - cut[1] < 2.5  # about 0.7 s: fall 2, inter 200ms
        # Failures: only requests to h3 around the cut, none once HAProxy marked it DOWN.
        for reply in load.failed:
            assert cut[0] - 1.0 < reply.started < down[0], reply
        after_down = [reply for reply in load.replies if reply.started > down[0]]
        assert len(after_down) > 50
        assert all(reply.ok for reply in after_down)
        assert load.sent > 100

        assert result.status is rolling.RolloutStatus.HALTED
        h3 = result.by_id("h3")
        assert h3.outcome is rolling.InstanceOutcome.FAILED
        assert h3.reason == (
            "driver.replace raised SSHCommandError: h3: stop timed out after command_timeout=3s;"
            " restoring v1 failed too: driver.replace raised SSHConnectError:"
            f" h3 ({lab.host('h3').address}:22): cannot connect for stop:"
            " no answer within connect_timeout=2s"
        )
        assert (h3.version, h3.serving) == ("v1", False)
        assert "h3: stop timed out" in result.reason
        for updated in ("h1", "h2"):
            item = result.by_id(updated)
            assert (item.outcome, item.version, item.serving) == (
                rolling.InstanceOutcome.UPDATED,
                "v2",
                True,
            )
        h4 = result.by_id("h4")
        assert (h4.outcome, h4.version, h4.serving) == (rolling.InstanceOutcome.PENDING, "v1", True)
        # Reported FAILED within the configured timeouts of the work on h3: the detach took at
        # most the drain timeout (sessions in flight to h3 at the cut hang), then the stop
        # command failed when its command timeout ran out, not before and not much later.
        detaching = env.recorder.phase_at("h3", rolling.Phase.DETACHING)
        detached = env.recorder.phase_at("h3", rolling.Phase.DETACHED)
        replacing = env.recorder.phase_at("h3", rolling.Phase.REPLACING)
        failed = env.recorder.phase_at("h3", rolling.Phase.FAILED)
        print(  # noqa: T201 - `pytest -s` shows the timings
            f"    h3 cut off; HAProxy reported it DOWN {down[0] - cut[1]:.2f}s later;"
            f" its detach took {detached - detaching:.2f}s, its stop failed"
            f" {failed - replacing:.2f}s after it started"
        )
        assert detached - detaching < FAST.drain + SLACK
        assert FAST.command <= failed - replacing < FAST.command + SLACK
        # h3 stays out of HAProxy; the others serve: v2 on h1 and h2, v1 on h4.
        await env.wait_statuses({"h1": "UP", "h2": "UP", "h3": "MAINT", "h4": "UP"})
        assert set(await env.versions_served()) == {"v1", "v2"}
        assert [lab.version_file(name) for name in ("h1", "h2", "h3", "h4")] == [
            "v2",
            "v2",
            "v1",
            "v1",
        ]


# ---------------------------------------------------------------- the guide shows what runs


def test_guide_shows_the_tested_config_and_example() -> None:
    example = EXAMPLE_MODULE
    servers = [(host.name, host.address, host.app_port) for host in example.HOSTS]
    config = render_config(
        socket_path=example.HAPROXY_SOCKET,
        frontend=("0.0.0.0", 80),  # noqa: S104 - text for the guide, not a bind
        servers=servers,
    )
    guide = GUIDE.read_text()
    assert f"```text\n{config}```" in guide
    assert "retries 0" in config
    assert "redispatch" not in config
    assert "```{literalinclude} examples/haproxy_ssh.py" in guide

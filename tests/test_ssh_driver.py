"""SSHDriver against real sshd servers, each in its own network namespace (see netns_hosts).

asyncssh runs on asyncio only, and the driver refuses trio (test_trio_is_refused checks that),
so these async tests run on asyncio alone, in real time: they wait for real sshd servers and
real processes. Without root, ``ip``, ``sshd`` or asyncssh they are skipped, with a hint; on
CI (CI=true) that is a failure instead.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

if importlib.util.find_spec("asyncssh") is None:  # pragma: no cover - depends on the machine
    if os.environ.get("CI") == "true":
        pytest.fail("asyncssh is not installed: pip install 'rolling[ssh]'", pytrace=False)
    pytest.skip("asyncssh is not installed: pip install 'rolling[ssh]'", allow_module_level=True)

# The driver (and netns_hosts, which uses it) import asyncssh: only once it is known to exist.
import rolling
from netns_hosts import NetnsLab, namespaces, open_lab, require_netns
from rolling.checks import HTTPCheck
from rolling.drivers.ssh import (
    CommandFinished,
    SSHCommandError,
    SSHCommands,
    SSHDriver,
    SSHError,
    SSHHost,
    SSHHostKeyError,
    SSHInstance,
)
from rolling.drivers.ssh._template import render

pytestmark = pytest.mark.anyio

SLACK = 1.5
"""Seconds a timeout may be late by on a busy 2-core machine."""


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    """asyncio only, in real time: asyncssh has no trio support (see the module docstring)."""
    return ("asyncio", {})


LabFactory = Callable[[int, Path], Iterator[NetnsLab]]


@pytest.fixture(scope="session")
def netns() -> LabFactory:
    """Opens labs, once this machine is known to be able to (else skip, or fail on CI)."""
    require_netns()
    return open_lab


@pytest.fixture
def lab(netns: LabFactory, tmp_path: Path) -> Iterator[NetnsLab]:
    """Two namespace hosts, h1 and h2 (10.231.0.11 and .12 unless that subnet is busy), on v1."""
    yield from netns(2, tmp_path)


@pytest.fixture
def lab4(netns: LabFactory, tmp_path: Path) -> Iterator[NetnsLab]:
    """Four namespace hosts, h1 to h4 (10.231.0.11 to .14 unless that subnet is busy), on v1."""
    yield from netns(4, tmp_path)


def commands_only(deploy: str = "cd {dir} && printf %s {version} > VERSION") -> SSHCommands:
    """Probe and deploy, no app: for tests about commands rather than the app."""
    return SSHCommands(probe="cat {dir}/VERSION", deploy=deploy)


PLAIN = SSHCommands(probe="cat VERSION", deploy="install {version}")
"""Commands for tests that never reach a host."""


class Recorder:
    """An observer that keeps every event."""

    def __init__(self) -> None:
        self.events: list[rolling.Event] = []

    def __call__(self, event: rolling.Event) -> None:
        self.events.append(event)

    def commands(self, host: str | None = None) -> list[CommandFinished]:
        return [
            e
            for e in self.events
            if isinstance(e, CommandFinished) and (host is None or e.host == host)
        ]


async def http_get(host: str, port: int, path: str = "/") -> tuple[int, dict[str, str]]:
    """One HTTP/1.1 GET from the root namespace; the status and the headers."""
    with anyio.fail_after(5):
        async with await anyio.connect_tcp(host, port) as stream:
            await stream.send(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            data = b""
            with contextlib.suppress(anyio.EndOfStream):
                while True:
                    data += await stream.receive()
    head = data.partition(b"\r\n\r\n")[0].decode()
    status_line, *lines = head.split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers


async def wait_ready(instance: SSHInstance, within: float = 10.0) -> None:
    assert instance.port is not None
    with anyio.fail_after(within):
        while True:
            with contextlib.suppress(OSError):
                if (await http_get(instance.host, instance.port, "/healthz"))[0] == 200:
                    return
            await anyio.sleep(0.05)


# ----------------------------------------------------------- templates, no SSH


INJECTIONS = [
    "v2; touch {marker}",
    "$(touch {marker})",
    "`touch {marker}`",
    "v2' ; touch {marker}; echo '",
    'v2" && touch {marker} && echo "',
    "v2\\'; touch {marker} #",
]


@pytest.mark.parametrize("template", INJECTIONS)
def test_rendered_commands_keep_values_literal(template: str, tmp_path: Path) -> None:
    # The rendered command, run by a real POSIX shell, prints the value and runs nothing else.
    marker = tmp_path / "pwned"
    version = template.format(marker=marker)
    command = render("printf %s {version}", {"version": version})
    result = subprocess.run(  # noqa: S603 - the point of the test: a shell parses it
        ["/bin/sh", "-c", command], capture_output=True, text=True, check=True
    )
    assert result.stdout == version
    assert not marker.exists()


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("echo '{version}'", "inside single quotes"),
        ('echo "{version}"', "inside double quotes"),
        ("echo `cat {version}`", "inside or after a `...` command substitution"),
        ("echo \\{version}", "follows a backslash"),
        ("echo ${version}", "follows a $"),
        ("cat <<EOF\n{version}\nEOF", "here-document"),
        ("echo {version!r}", "conversion or format spec"),
        ("echo {version:>10}", "conversion or format spec"),
        ("echo {0}", "is not a name"),
        ("echo {}", "is not a name"),
        ("echo {version.upper}", "is not a name"),
        ("echo {version", "not a valid template"),
        ("echo 'open", "unterminated"),
        ("  ", "non-empty command"),
    ],
)
def test_templates_that_could_break_quoting_are_refused(template: str, problem: str) -> None:
    with pytest.raises(rolling.ConfigError, match=re.escape(problem)) as caught:
        SSHCommands(probe="cat VERSION", deploy=template)
    assert caught.value.field == "SSHCommands.deploy"


def test_probe_cannot_use_version() -> None:
    with pytest.raises(rolling.ConfigError, match="probe is there to find out"):
        SSHCommands(probe="cat {version}", deploy="true")


def test_unknown_fields_are_refused_naming_field_and_template() -> None:
    hosts = [
        SSHHost(name="a", address="10.0.0.1", labels={"zone": "z1"}),
        SSHHost(name="b", address="10.0.0.2"),
    ]
    commands = SSHCommands(probe="cat VERSION", deploy="install {version} --zone {zone}")
    with pytest.raises(rolling.ConfigError) as caught:
        SSHDriver(hosts, commands)
    message = str(caught.value)
    assert caught.value.field == "SSHCommands.deploy"
    assert "{zone}" in message
    assert "install {version} --zone {zone}" in message
    assert "'b'" in message
    with pytest.raises(rolling.ConfigError, match="has no app_port"):
        SSHDriver(hosts[:1], SSHCommands(probe="cat VERSION", deploy="run --port {port}"))


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"host_keys": {"nope": "ssh-ed25519 AAAA"}}, "not the name of a host"),
        ({"host_keys": {"a": "not a key"}}, "cannot read the key"),
        (
            {"host_keys": {"a": "ssh-ed25519 AAAA"}, "insecure_no_host_key_check": True},
            "insecure_no_host_key_check is set too",
        ),
        ({"redact": [""]}, "non-empty str"),
        ({"redact": [re.compile("x*")]}, "matches the empty string"),
        ({"concurrency": 0}, "concurrency"),
        ({"command_timeout": 0}, "command_timeout"),
        ({"client_keys": "id_ed25519"}, "sequence of paths"),
        ({"observers": [42]}, "callable"),
    ],
)
def test_driver_options_are_checked(options: dict[str, Any], match: str) -> None:
    hosts = [SSHHost(name="a", address="10.0.0.1")]
    with pytest.raises(rolling.ConfigError, match=match):
        SSHDriver(hosts, PLAIN, **options)


def test_hosts_are_checked() -> None:
    with pytest.raises(rolling.ConfigError, match=r"SSHHost\.port"):
        SSHHost(name="a", address="10.0.0.1", port=0)
    with pytest.raises(rolling.ConfigError, match=r"SSHHost\.name"):
        SSHHost(name="", address="10.0.0.1")
    with pytest.raises(rolling.ConfigError, match="labels") as caught:
        SSHHost(name="a", address="10.0.0.1", labels={"zone": 1})
    assert caught.value.field == "SSHHost.labels"
    with pytest.raises(rolling.ConfigError, match="mapping") as caught:
        SSHHost(name="a", address="10.0.0.1", labels=["zone"])
    assert caught.value.field == "SSHHost.labels"
    twice = [SSHHost(name="a", address="10.0.0.1"), SSHHost(name="a", address="10.0.0.2")]
    with pytest.raises(rolling.ConfigError, match="two hosts are named"):
        SSHDriver(twice, PLAIN)


@pytest.mark.parametrize("bad", ["a\ntouch /tmp/pwned #", "a\r", "a\x00b", "a\x1b[0m", "a\x85"])
@pytest.mark.parametrize("field", ["name", "address", "labels"])
def test_host_values_with_control_characters_are_refused(field: str, bad: str) -> None:
    # They go into commands: a newline would end a comment, or a command, around a field.
    fields: dict[str, Any] = {"name": "a", "address": "10.0.0.1", "labels": {"zone": "z"}}
    fields[field] = {"zone": bad} if field == "labels" else bad
    with pytest.raises(rolling.ConfigError, match="control characters") as caught:
        SSHHost(**fields)
    assert caught.value.field == f"SSHHost.{field}"
    assert caught.value.fix


def test_a_label_can_no_longer_inject_through_a_comment() -> None:
    # The audit's case: a field in a comment, and a label value with a newline. Both refused.
    with pytest.raises(rolling.ConfigError, match="is in a comment"):
        SSHCommands(probe="cat VERSION", deploy="install {version} # zone {zone}")
    with pytest.raises(rolling.ConfigError, match="control characters"):
        SSHHost(name="a", address="10.0.0.1", labels={"zone": "a\ntouch /tmp/pwned #"})


def test_trio_is_refused() -> None:
    # asyncssh runs on asyncio only: entering the driver on trio must say so, clearly.
    driver = SSHDriver([SSHHost(name="a", address="10.0.0.1")], PLAIN)

    async def enter() -> None:
        async with driver:
            pass  # pragma: no cover - never entered

    with pytest.raises(rolling.ConfigError, match="asyncio only") as caught:
        anyio.run(enter, backend="trio")
    assert caught.value.field == "SSHDriver"


async def test_driver_must_be_entered() -> None:
    driver = SSHDriver([SSHHost(name="a", address="10.0.0.1")], PLAIN)
    with pytest.raises(SSHError, match="needs an open driver"):
        await driver.list_instances()


# -------------------------------------------------------------- real SSH hosts


async def test_list_and_replace_over_ssh(lab: NetnsLab) -> None:
    recorder = Recorder()
    async with lab.driver(command_timeout=10, observers=[recorder]) as driver:
        fleet = await driver.list_instances()
        h1, h2 = f"{lab.subnet}.11", f"{lab.subnet}.12"
        assert [(i.id, i.version, i.host, i.port) for i in fleet] == [
            ("h1", "v1", h1, 8000),
            ("h2", "v1", h2, 8000),
        ]
        updated = await driver.replace(fleet[0], "v2")
        assert (updated.id, updated.version, updated.host) == ("h1", "v2", h1)
        await wait_ready(updated)
        assert updated.port is not None
        status, headers = await http_get(updated.host, updated.port)
        assert (status, headers["x-version"]) == (200, "v2")
    assert [e.phase for e in recorder.commands("h1")] == [
        "probe",
        "stop",
        "deploy",
        "start",
        "probe",
    ]
    assert all(e.exit_status == 0 and e.ok for e in recorder.commands())
    assert recorder.commands("h1")[-1].stdout == "v2"
    assert [e.phase for e in recorder.commands("h2")] == ["probe"]
    assert lab.version_file("h2") == "v1"


@pytest.mark.parametrize("template", INJECTIONS)
async def test_versions_and_labels_cannot_inject_shell(lab: NetnsLab, template: str) -> None:
    marker = Path(f"/tmp/pwned-{uuid.uuid4().hex}")  # noqa: S108 - outside the lab: a visible escape
    version = template.format(marker=marker)
    hosts = lab.ssh_hosts(labels={"zone": f"a; touch {marker}"})
    deploy = "cd {dir} && printf %s {version} > VERSION && printf %s {zone} > ZONE && echo {id}"
    try:
        async with lab.driver(commands_only(deploy), hosts=hosts) as driver:
            fleet = await driver.list_instances()
            updated = await driver.replace(fleet[0], version)
        assert updated.version == version
        assert lab.version_file("h1") == version
        assert (lab.host("h1").workdir / "ZONE").read_text() == f"a; touch {marker}"
        assert not await anyio.Path(marker).exists()
    finally:
        await anyio.Path(marker).unlink(missing_ok=True)


async def test_unknown_host_key_is_refused_before_any_command(lab: NetnsLab) -> None:
    recorder = Recorder()
    only_h2 = lab.root / "known_hosts_h2"
    h2 = lab.host("h2")
    only_h2.write_text(f"{h2.address} {h2.host_key}\n")
    async with lab.driver(known_hosts=only_h2, observers=[recorder]) as driver:
        with pytest.raises(SSHHostKeyError, match="host key verification failed") as caught:
            await driver.list_instances()
    assert caught.value.host == "h1"
    assert lab.logins("h1") == 0, "h1 let the driver log in"
    assert recorder.commands("h1") == []

    # A known_hosts line that gives h1's address another key is refused too.
    wrong = lab.root / "known_hosts_wrong"
    wrong.write_text(f"{lab.host('h1').address} {h2.host_key}\n")
    async with lab.driver(hosts=lab.ssh_hosts()[:1], known_hosts=wrong) as driver:
        with pytest.raises(SSHHostKeyError, match="h1"):
            await driver.list_instances()
    assert lab.logins("h1") == 0


async def test_pinned_host_keys_are_accepted(lab: NetnsLab) -> None:
    pins = {host.name: host.host_key for host in lab.hosts}
    async with lab.driver(known_hosts=None, host_keys=pins) as driver:
        assert [i.version for i in await driver.list_instances()] == ["v1", "v1"]
    # known_hosts=None never means "trust anything": an unpinned host is refused.
    async with lab.driver(known_hosts=None, host_keys={"h1": pins["h1"]}) as driver:
        with pytest.raises(SSHHostKeyError, match="h2"):
            await driver.list_instances()
    # Nor does a missing file, and the error says it is missing.
    async with lab.driver(known_hosts=lab.root / "missing") as driver:
        with pytest.raises(SSHHostKeyError, match="no such file"):
            await driver.list_instances()
    # Logins: both drivers with pinned keys reached h1, only the first h2; the last, none.
    assert (lab.logins("h1"), lab.logins("h2")) == (2, 1)


async def test_insecure_opt_out_connects_and_warns(
    lab: NetnsLab, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="rolling.drivers.ssh")
    empty = lab.root / "known_hosts_empty"
    empty.write_text("")
    async with lab.driver(known_hosts=empty, insecure_no_host_key_check=True) as driver:
        assert [i.version for i in await driver.list_instances()] == ["v1", "v1"]
        await driver.list_instances()
    warnings = [r for r in caplog.records if r.name == "rolling.drivers.ssh"]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert "host key verification is OFF" in warnings[0].getMessage()


async def test_connections_are_reused(lab: NetnsLab) -> None:
    async with lab.driver() as driver:
        assert driver.statistics().connections_opened == 0  # opened lazily
        fleet = await driver.list_instances()
        await driver.list_instances()
        await driver.replace(fleet[1], "v2")
        await driver.list_instances()
        statistics = driver.statistics()
        assert statistics.connections_opened == 2
        assert statistics.connections_open == 2
        assert statistics.commands_run == 2 + 2 + 4 + 2
    assert driver.statistics().connections_open == 0
    assert (lab.logins("h1"), lab.logins("h2")) == (1, 1)


@pytest.mark.parametrize("concurrency", [1, 2])
async def test_concurrency_limit(lab: NetnsLab, concurrency: int) -> None:
    recorder = Recorder()
    deploy = "sleep 0.4 && cd {dir} && printf %s {version} > VERSION"
    async with lab.driver(
        commands_only(deploy), concurrency=concurrency, observers=[recorder]
    ) as driver:
        fleet = await driver.list_instances()
        async with anyio.create_task_group() as tg:
            for instance in fleet:
                tg.start_soon(driver.replace, instance, "v2")
    spans = sorted((e.at - e.duration, e.at) for e in recorder.commands() if e.phase == "deploy")
    assert len(spans) == 2
    overlap = spans[1][0] < spans[0][1]
    assert overlap is (concurrency > 1)


async def test_command_timeout(lab: NetnsLab) -> None:
    recorder = Recorder()
    commands = commands_only("sleep 30")
    # Three seconds, not one: the same limit bounds the probe after the reconnect below,
    # and a fresh session under a loaded CI machine took longer than a second once.
    async with lab.driver(commands, command_timeout=3, observers=[recorder]) as driver:
        fleet = await driver.list_instances()
        started = anyio.current_time()
        with pytest.raises(SSHCommandError, match="h1: deploy timed out") as caught:
            await driver.replace(fleet[0], "v2")
        assert 2.9 < anyio.current_time() - started < 3 + SLACK
        assert (caught.value.phase, caught.value.exit_status) == ("deploy", None)
        event = recorder.commands("h1")[-1]
        assert (event.phase, event.exit_status) == ("deploy", None)
        assert "timed out" in event.error
        # The stuck connection was dropped: the next command reconnects, and works.
        assert driver.statistics().connections_open == 1
        assert [i.version for i in await driver.list_instances()] == ["v1", "v1"]
        assert driver.statistics().connections_opened == 3
    assert lab.logins("h1") == 2


async def test_cancellation_goes_through_and_keeps_the_connection(lab: NetnsLab) -> None:
    async with lab.driver(commands_only("sleep 30")) as driver:
        fleet = await driver.list_instances()
        started = anyio.current_time()
        with anyio.move_on_after(0.5) as scope:
            await driver.replace(fleet[0], "v2")
        assert scope.cancelled_caught
        assert anyio.current_time() - started < 0.5 + SLACK
        statistics = driver.statistics()
        assert (statistics.commands_running, statistics.connections_open) == (0, 2)
        assert [i.version for i in await driver.list_instances()] == ["v1", "v1"]
        assert driver.statistics().connections_opened == 2


async def test_failing_command_stops_the_update(lab: NetnsLab) -> None:
    commands = SSHCommands(
        probe="cat {dir}/VERSION",
        stop="echo 'cannot stop' >&2; exit 7",
        deploy="cd {dir} && printf %s {version} > VERSION",
    )
    async with lab.driver(commands) as driver:
        fleet = await driver.list_instances()
        with pytest.raises(SSHCommandError) as caught:
            await driver.replace(fleet[0], "v2")
    assert (caught.value.phase, caught.value.exit_status) == ("stop", 7)
    assert "cannot stop" in str(caught.value)
    assert lab.version_file("h1") == "v1", "deploy ran after stop failed"


async def test_probe_must_confirm_the_version(lab: NetnsLab) -> None:
    async with lab.driver(commands_only("true")) as driver:
        fleet = await driver.list_instances()
        with pytest.raises(
            SSHCommandError, match="printed version 'v1' after the update, not 'v2'"
        ):
            await driver.replace(fleet[0], "v2")


async def test_secrets_are_redacted(lab: NetnsLab) -> None:
    recorder = Recorder()
    secret = "s3cr3t-" + uuid.uuid4().hex
    deploy = (
        f"echo token={secret} >&2; echo password=hunter2 >&2; echo {secret};"
        " cd {dir} && printf %s {version} > VERSION"
    )
    options: dict[str, Any] = {
        "redact": [secret, re.compile(r"(?<=password=)\S+")],
        "observers": [recorder],
    }
    async with lab.driver(commands_only(deploy), **options) as driver:
        fleet = await driver.list_instances()
        await driver.replace(fleet[0], "v2")
    event = next(e for e in recorder.commands("h1") if e.phase == "deploy")
    assert event.stderr == "token=***\npassword=***\n"
    assert event.stdout == "***\n"
    assert secret not in event.command
    assert "echo token=*** >&2" in event.command
    assert not any(secret in repr(e) or "hunter2" in repr(e) for e in recorder.events)

    failing = commands_only(f"echo token={secret} >&2; exit 3")
    async with lab.driver(failing, redact=[secret]) as driver:
        fleet = await driver.list_instances()
        with pytest.raises(SSHCommandError) as caught:
            await driver.replace(fleet[0], "v3")
    assert caught.value.exit_status == 3
    assert "token=***" in str(caught.value)
    assert secret not in str(caught.value) + caught.value.command + caught.value.stderr


async def test_link_down_mid_command(lab: NetnsLab) -> None:
    commands = commands_only("sleep 1 && cd {dir} && printf %s {version} > VERSION")
    async with lab.driver(commands, command_timeout=2, connect_timeout=2) as driver:
        fleet = await driver.list_instances()

        async def cut_off() -> None:
            await anyio.sleep(0.3)  # the deploy runs (for 1 s) when the link goes down
            await anyio.to_thread.run_sync(lab.link_down, "h1")

        started = anyio.current_time()
        async with anyio.create_task_group() as tg:
            tg.start_soon(cut_off)
            with pytest.raises(SSHCommandError, match="h1: deploy timed out"):
                await driver.replace(fleet[0], "v2")
        elapsed = anyio.current_time() - started
        assert 2 <= elapsed < 2 + SLACK
        # Unreachable: a new connection fails within connect_timeout, naming the host.
        where = re.escape(f"h1 ({lab.host('h1').address}:22): cannot connect for deploy")
        with pytest.raises(SSHError, match=where):
            await driver.replace(fleet[0], "v2")
        await anyio.to_thread.run_sync(lab.link_up, "h1")
        assert (await driver.replace(fleet[0], "v3")).version == "v3"
    assert lab.logins("h1") == 2


async def test_rollout_over_four_hosts(lab4: NetnsLab) -> None:
    recorder = Recorder()
    readiness = rolling.Readiness(check=HTTPCheck("/healthz", timeout=1), period=0.2, deadline=15)
    async with lab4.driver(command_timeout=10, observers=[recorder]) as driver:
        result = await rolling.Rollout(
            driver,
            "v2",
            strategy=rolling.RollingUpdate(max_unavailable=2),
            readiness=readiness,
            observers=[recorder],
        ).run()
        assert result.status is rolling.RolloutStatus.SUCCEEDED, result.reason
        for instance in await driver.list_instances():
            assert instance.port is not None
            assert (await http_get(instance.host, instance.port))[1]["x-version"] == "v2"
    # One stream: the rollout's events and the driver's commands, interleaved in time order.
    kinds = {type(e).__name__ for e in recorder.events}
    assert {"CommandFinished", "InstancePhaseChanged", "RolloutFinished"} <= kinds
    times = [e.at for e in recorder.events]
    assert times == sorted(times)


async def test_rollout_reports_a_host_cut_off_mid_update(lab4: NetnsLab) -> None:
    recorder = Recorder()
    cut = anyio.Event()
    cut_at: list[float] = []

    def observe(event: rolling.Event) -> None:
        recorder(event)
        if isinstance(event, CommandFinished) and (event.host, event.phase) == ("h2", "stop"):
            cut.set()

    async def cut_h2_off() -> None:
        await cut.wait()
        await anyio.to_thread.run_sync(lab4.link_down, "h2")
        cut_at.append(anyio.current_time())

    commands = lab4.commands(deploy="sleep 1 && cd {dir} && printf %s {version} > VERSION")
    # A short deadline: after h2 fails, the engine waits that long for it to come back on v1
    # (it cannot: its app was stopped and it is cut off) before it reports the halt.
    readiness = rolling.Readiness(check=HTTPCheck("/healthz", timeout=1), period=0.2, deadline=3)
    results: list[rolling.RolloutResult] = []
    async with (
        lab4.driver(commands, command_timeout=2, connect_timeout=2, observers=[observe]) as driver,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(cut_h2_off)
        rollout = rolling.Rollout(
            driver, "v2", readiness=readiness, rollback="halt", observers=[observe]
        )
        results.append(await rollout.run())
    [result] = results
    assert result.status is rolling.RolloutStatus.HALTED
    h2 = result.by_id("h2")
    assert h2.outcome is rolling.InstanceOutcome.FAILED
    assert "deploy timed out after command_timeout=2s" in h2.reason
    failed = next(
        e
        for e in recorder.events
        if isinstance(e, rolling.InstancePhaseChanged)
        and (e.instance_id, e.phase) == ("h2", rolling.Phase.FAILED)
    )
    assert failed.at - cut_at[0] < 2 + SLACK  # within the deploy's command_timeout
    assert result.by_id("h1").outcome is rolling.InstanceOutcome.UPDATED
    assert {result.by_id(i).outcome for i in ("h3", "h4")} == {rolling.InstanceOutcome.PENDING}


@pytest.mark.usefixtures("netns")
def test_no_namespace_is_left_behind() -> None:
    assert [name for name in namespaces() if name.startswith(f"rl-{os.getpid()}-")] == []

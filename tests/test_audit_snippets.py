"""The code the pages show, copied and pasted as a newcomer would, does what the pages say.

README.md and docs/*.md carry inline snippets (Python, TOML, shell) and tables of numbers next
to them. These tests run the snippets that matter, as written (extracted from the Markdown
where they are complete, filling in only what the text says is elided), and check the claims
around them: what a snippet prints or returns, how a command exits, and the numbers in the
tables. They use drivers of their own where the page speaks of "your" driver.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import attrs
import jsonschema
import pytest

import rolling
import rolling.metrics
import rolling.testing
from helpers import CLI_EVENTS_SCHEMA, port_of, rolling_cli
from rolling import recipes
from rolling.routers._accept import serve as serve_connections
from rolling.testing import EventRecorder, Latency, SimulatedFleet

REPO = Path(__file__).parent.parent
DOCS = REPO / "docs"


# --------------------------------------------------------------------------- reading the pages


def page(name: str) -> str:
    path = REPO / name if name == "README.md" else DOCS / name
    return path.read_text(encoding="utf-8")


def blocks(name: str, language: str) -> list[str]:
    """Every fenced code block of ``language`` on a page, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```$", page(name), flags=re.MULTILINE | re.DOTALL)


def block_with(name: str, language: str, words: str) -> str:
    """The one block of ``language`` on a page that holds ``words``."""
    found = [block for block in blocks(name, language) if words in block]
    assert len(found) == 1, f"expected one {language} block with {words!r} in {name}: {found}"
    return found[0]


def table_after(name: str, heading_words: str) -> list[list[str]]:
    """The rows (cells stripped) of the first Markdown table whose header holds the words."""
    lines = page(name).splitlines()
    start = next(
        i for i, line in enumerate(lines) if line.startswith("|") and heading_words in line
    )
    rows: list[list[str]] = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def literal(cell: str) -> Any:
    """A table cell such as ``"25%"``, `` `1` (the default)`` or ``0``, as a Python value."""
    cell = cell.strip()
    code = re.match(r"`([^`]*)`", cell)
    text = code.group(1) if code else cell.split()[0]
    return eval(text, {})  # noqa: S307 - literals written in this repository's own tables


def run_snippet(code: str, namespace: dict[str, Any]) -> dict[str, Any]:
    exec(compile(code, "<snippet>", "exec"), namespace)  # noqa: S102 - the docs' own code
    return namespace


async def run_async_snippet(code: str, namespace: dict[str, Any]) -> dict[str, Any]:
    """Run top-level ``await`` code as the body of a coroutine, as a newcomer pastes it."""
    body = textwrap.indent(code, "    ")
    source = f"async def _snippet():\n{body}\n    return locals()\n"
    run_snippet(source, namespace)
    result: dict[str, Any] = await namespace["_snippet"]()
    namespace.update(result)
    return namespace


# --------------------------------------------------------------------------- README.md


@pytest.mark.anyio
async def test_readme_example_prints_what_the_readme_shows() -> None:
    code = blocks("README.md", "python")[0]
    assert code.rstrip().endswith("anyio.run(main)")
    namespace = run_snippet(code.rstrip().removesuffix("anyio.run(main)"), {})
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        await namespace["main"]()
    shown = block_with("README.md", "text", "i-000 v1 -> v2 updated")
    assert out.getvalue() == shown


# --------------------------------------------------------------------------- concepts.md


def test_the_rolling_update_table_is_what_resolve_gives() -> None:
    rows = table_after("concepts.md", "Resolves to (unavailable, surge)")
    assert len(rows) == 6
    for fleet, unavailable, surge, resolved, floor, ceiling in rows:
        window = rolling.RollingUpdate(
            max_unavailable=literal(unavailable), max_surge=literal(surge)
        ).resolve(int(fleet))
        numbers = [int(n) for n in re.findall(r"(?<![.\d])\d+(?![.\d])", resolved)]
        if "so 1 unavailable" in resolved:
            assert (window.max_unavailable, window.max_surge) == (1, 0)
        else:
            assert (window.max_unavailable, window.max_surge) == tuple(numbers[:2]), resolved
        assert (window.floor, window.ceiling) == (int(floor), int(ceiling))


def test_the_batches_table_is_what_resolve_gives() -> None:
    rows = table_after("concepts.md", "| Strategy                    | Fleet |")
    assert len(rows) == 5
    for strategy, fleet, sizes in rows:
        built = eval(strategy.strip("`"), {"Batches": rolling.Batches})  # noqa: S307
        expected = [int(n) for n in re.findall(r"\d+", sizes.split("(")[0])]
        assert built.resolve(int(fleet)) == expected, strategy


@pytest.mark.anyio
async def test_batches_count_instances_already_on_the_target() -> None:
    # concepts.md: "Twenty instances of which ten are already on the target give
    # Batches("30%") batches of 6 and 4."
    fleet = SimulatedFleet(20)

    async def no() -> bool:
        return False

    await rolling.Rollout(
        fleet, "v2", steps=[rolling.Advance(10), rolling.Gate(no)], rollback="halt"
    ).run()
    assert fleet.version_counts() == {"v1": 10, "v2": 10}
    recorder = EventRecorder()
    result = await rolling.Rollout(
        fleet, "v2", strategy=rolling.Batches("30%"), observers=[recorder]
    ).run()
    assert result.status is rolling.RolloutStatus.SUCCEEDED
    assert [len(b.instance_ids) for b in recorder.of_type(rolling.BatchStarted)] == [6, 4]


@pytest.mark.anyio
async def test_the_canary_by_count_steps_run() -> None:
    code = block_with("concepts.md", "python", "rolling.Advance(1),  # one canary")
    gates: list[str] = []

    async def error_rate_is_normal() -> bool:
        gates.append("asked")
        return True

    steps = run_snippet(code, {"rolling": rolling, "error_rate_is_normal": error_rate_is_normal})[
        "steps"
    ]
    fleet = SimulatedFleet(8)
    async with rolling.Rollout(fleet, "v2", router=fleet, steps=steps).start() as handle:
        await anyio.sleep(1)
        assert handle.status().status is rolling.RolloutStatus.PAUSED
        assert fleet.version_counts() == {"v1": 7, "v2": 1}  # one canary
        handle.promote()
        await anyio.sleep(300)  # baking: 25 % of 8 on v2
        assert fleet.version_counts() == {"v1": 6, "v2": 2}
        assert not gates
    assert handle.result.status is rolling.RolloutStatus.SUCCEEDED
    assert gates == ["asked"]
    assert fleet.version_counts() == {"v2": 8}


@pytest.mark.anyio
@pytest.mark.parametrize("good", [True, False])
async def test_the_chatops_snippet_promotes_or_aborts_the_canary(good: bool) -> None:
    code = block_with("concepts.md", "python", "canary_looks_good")
    # The elided part: the rest of the rollout's arguments.
    code = code.replace("rolling.Pause()], ...)", "rolling.Pause()], router=driver)")
    printed: list[object] = []

    async def canary_looks_good() -> bool:
        return good

    fleet = SimulatedFleet(4)
    namespace = await run_async_snippet(
        code,
        {
            "rolling": rolling,
            "driver": fleet,
            "canary_looks_good": canary_looks_good,
            "print": printed.append,
        },
    )
    # The page prints the status: "succeeded", or "aborted" with the canary reverted.
    assert [str(status) for status in printed] == ["succeeded" if good else "aborted"]
    if good:
        assert fleet.version_counts() == {"v2": 4}
    else:
        assert fleet.version_counts() == {"v1": 4}
        outcomes = [item.outcome for item in namespace["handle"].result.instances]
        assert outcomes.count(rolling.InstanceOutcome.REVERTED) == 1  # the canary, reverted


@pytest.mark.anyio
async def test_the_cancellation_snippet_keeps_the_result() -> None:
    code = block_with("concepts.md", "python", "anyio.move_on_after(3600)")
    fleet = SimulatedFleet(10, latency=Latency(replace=500))
    printed: list[object] = []
    namespace = await run_async_snippet(
        code,
        {
            "anyio": anyio,
            "rollout": rolling.Rollout(fleet, "v2", router=fleet),
            "print": printed.append,
        },
    )
    assert [str(status) for status in printed] == ["cancelled"]  # the hour ran out
    result = namespace["handle"].result
    # "instances already on the target stay there and are reported UPDATED"
    updated = [i for i in result.instances if i.outcome is rolling.InstanceOutcome.UPDATED]
    assert updated
    assert all(i.version == "v2" and i.serving for i in updated)


# --------------------------------------------------------------------------- writing-a-driver.md


def test_the_validation_snippet_names_each_field() -> None:
    code = block_with("writing-a-driver.md", "python", "class FleetDriver")
    namespace = run_snippet(code.replace("        ...\n", ""), {"attrs": attrs})
    fleet_driver, queue_check = namespace["FleetDriver"], namespace["QueueCheck"]
    fleet_driver(dict, workers=2, timeout=1.5)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"client_factory": 3}, "FleetDriver.client_factory"),
        ({"client_factory": dict, "workers": 0}, "FleetDriver.workers"),
        ({"client_factory": dict, "timeout": 0}, "FleetDriver.timeout"),
    ]
    for arguments, field in cases:
        with pytest.raises(rolling.ConfigError) as caught:
            fleet_driver(**arguments)
        assert caught.value.field == field
    # validator() names the field "QueueCheck.timeout" itself.
    with pytest.raises(rolling.ConfigError) as caught:
        queue_check(timeout=-1)
    assert caught.value.field == "QueueCheck.timeout"


@pytest.mark.anyio
@pytest.mark.real_time
async def test_the_port_check_snippet_answers_each_way() -> None:
    code = block_with("writing-a-driver.md", "python", "class PortCheck")
    port_check = run_snippet(code, {"anyio": anyio, "rolling": rolling})["PortCheck"]

    @attrs.frozen
    class Listening:
        host: str
        port: int

    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener:
        port = port_of(listener)
        assert await port_check().check(Listening("127.0.0.1", port)) == rolling.HealthResult(
            healthy=True
        )
    refused = await port_check().check(Listening("127.0.0.1", port))
    assert not refused.healthy
    assert refused.reason == "connection refused"
    no_address = await port_check().check(object())
    assert not no_address.healthy
    assert "address" in no_address.reason


def test_the_driver_test_snippets_pass_as_a_test_module(tmp_path: Path) -> None:
    # The conftest and the test of "Testing a driver", with the fake cluster "from the example".
    conftest = block_with("writing-a-driver.md", "python", "def anyio_backend")
    test = block_with("writing-a-driver.md", "python", "test_a_broken_version_is_rolled_back")
    shutil.copy(DOCS / "examples" / "custom_driver.py", tmp_path / "custom_driver.py")
    (tmp_path / "conftest.py").write_text(conftest, encoding="utf-8")
    header = (
        "import pytest\n\nimport rolling\nfrom custom_driver import Cluster, failing_rollout\n\n"
    )
    (tmp_path / "test_driver.py").write_text(header + test, encoding="utf-8")
    env = {name: value for name, value in os.environ.items() if name != "PYTEST_ADDOPTS"}
    env["PYTHONPATH"] = str(REPO / "src")
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "2 passed" in completed.stdout  # the one test, on asyncio and on trio


@attrs.frozen
class Box:
    """An instance of the drivers below: what the protocol asks for, and nothing more."""

    id: str
    version: str


class InPlace:
    """A driver of our own, to check what the guide says rolling does with a driver's answers."""

    def __init__(self, ids: list[str], *, answer: str = "right", hang: bool = False) -> None:
        self.boxes = {name: Box(name, "v1") for name in ids}
        self.order = ids
        self.answer = answer
        self.hang = hang
        self.replaced: list[str] = []

    async def list_instances(self) -> list[Box]:
        if self.hang:
            await anyio.sleep_forever()
        return [self.boxes[name] for name in self.order]

    async def replace(self, instance: Box, version: str) -> Box:
        self.replaced.append(instance.id)
        if self.answer == "raise":
            raise LookupError(f"{instance.id} no longer exists")
        if self.answer == "other id":
            return Box(instance.id + "-new", version)
        self.boxes[instance.id] = Box(instance.id, version)
        return self.boxes[instance.id]


@pytest.mark.anyio
async def test_the_driver_guide_s_promises_about_a_driver_s_answers() -> None:
    # "A driver that lists two instances with the same id stops the rollout before anything
    # changes."
    twice = InPlace(["a", "a", "b"])
    with pytest.raises(rolling.RollingError, match="duplicate"):
        await rolling.Rollout(twice, "v2").run()
    assert twice.replaced == []
    # The reason the page quotes, for a driver that raises LookupError.
    result = await rolling.Rollout(InPlace(["web-3"], answer="raise"), "v2").run()
    assert result.instances[0].reason.startswith(
        "driver.replace raised LookupError: web-3 no longer exists"
    )
    # A returned instance with another id fails that attempt, its reason naming both ids.
    result = await rolling.Rollout(InPlace(["web-3"], answer="other id"), "v2").run()
    assert result.status is rolling.RolloutStatus.ROLLED_BACK
    assert "web-3" in result.instances[0].reason
    assert "web-3-new" in result.instances[0].reason
    # "run() raises TimeoutError ("driver.list_instances did not return within 600.0s
    # (effect_timeout)")"
    with pytest.raises(TimeoutError) as caught:
        await rolling.Rollout(InPlace(["a"], hang=True), "v2").run()
    assert (
        str(caught.value) == "driver.list_instances did not return within 600.0s (effect_timeout)"
    )


# --------------------------------------------------------------------------- testing-rollouts.md


def guide_namespace() -> dict[str, Any]:
    return {
        "anyio": anyio,
        "pytest": pytest,
        "rolling": rolling,
        **{name: getattr(rolling.testing, name) for name in rolling.testing.__all__},
    }


@pytest.mark.anyio
async def test_the_simulated_fleet_snippets_run_as_the_guide_says() -> None:
    namespace = guide_namespace()
    setup = block_with("testing-rollouts.md", "python", 'zones=("a", "b")')
    await run_async_snippet(setup, namespace)
    fleet = namespace["fleet"]
    assert [(i.id, i.zone) for i in fleet.instances[:3]] == [
        ("i-000", "a"),
        ("i-001", "b"),
        ("i-002", "a"),
    ]
    # The faults as the guide writes them, on a fleet of their own.
    faults = block_with("testing-rollouts.md", "python", 'hang="detach"')
    run_snippet(faults, namespace)
    # The final checks, after a rollout that succeeds.
    fleet = SimulatedFleet(8)
    fleet.fault("i-003", replace_raises=2)
    result = await rolling.Rollout(
        fleet, "v2", router=fleet, failure=rolling.FailurePolicy(retries=2)
    ).run()
    assert result.status is rolling.RolloutStatus.SUCCEEDED
    run_snippet(block_with("testing-rollouts.md", "python", "fleet.attached_ids"), {"fleet": fleet})
    # `fleet.calls.count(FleetCall("replace", "i-003", "v2"))` counts the attempts.
    assert fleet.calls.count(rolling.testing.FleetCall("replace", "i-003", "v2")) == 3
    assert ("replace", "i-003", "v2") in fleet.calls


@pytest.mark.anyio
async def test_the_guide_s_own_test_of_batches_of_two_passes() -> None:
    code = block_with("testing-rollouts.md", "python", "test_batches_of_two_take_too_much_out")
    namespace = run_snippet(code, guide_namespace())
    await namespace["test_batches_of_two_take_too_much_out"]()


@pytest.mark.anyio
async def test_the_monitor_snippets_run() -> None:
    namespace = guide_namespace()
    fleet = SimulatedFleet(6, latency=Latency(replace=10))
    namespace["fleet"] = fleet
    namespace["rollout"] = rolling.Rollout(
        fleet, "v2", strategy=rolling.Batches("30%"), router=fleet
    )
    code = block_with("testing-rollouts.md", "python", "# percentages resolved")
    await run_async_snippet(code, namespace)
    # "For Batches the window's max_unavailable is the largest batch"
    assert namespace["window"].max_unavailable == 1
    assert namespace["result"].status is rolling.RolloutStatus.SUCCEEDED
    fleet = SimulatedFleet(4)
    namespace.update(fleet=fleet, rollout=rolling.Rollout(fleet, "v2", router=fleet))
    code = block_with("testing-rollouts.md", "python", "monitor.assert_ok()  # every violation")
    await run_async_snippet(code, namespace)


@pytest.mark.anyio
async def test_the_excuse_snippet_and_the_violation_it_prevents() -> None:
    code = block_with("testing-rollouts.md", "python", "monitor.excuse_unhealthy()")
    await run_async_snippet(code, guide_namespace())
    # Without the excuse: "availability floor broken at t=10: detach of i-001 leaves 2
    # serving, below the floor of 3".
    text = " ".join(page("testing-rollouts.md").split())
    quoted = re.search(r'as "(availability floor broken at t=10: [^"]*)"', text)
    assert quoted is not None
    start = anyio.current_time()
    without = code.replace("    monitor.excuse_unhealthy()\n", "")
    with pytest.raises(rolling.testing.InvariantViolation) as caught:
        await run_async_snippet(without, guide_namespace())
    message = str(caught.value).replace(f"t={10 + start:g}", "t=10")
    assert quoted.group(1) in message


@pytest.mark.anyio
async def test_the_recorder_snippet_holds() -> None:
    code = block_with("testing-rollouts.md", "python", 'recorder.phases("i-003")')
    await run_async_snippet(code, guide_namespace())


@pytest.mark.anyio
async def test_the_control_snippet_promotes_the_waiting_canary() -> None:
    code = block_with("testing-rollouts.md", "python", "an hour later")
    fleet = SimulatedFleet(4)
    namespace = guide_namespace()
    namespace["rollout"] = rolling.Rollout(
        fleet, "v2", router=fleet, steps=[rolling.Advance(1), rolling.Pause()]
    )
    await run_async_snippet(code, namespace)
    assert namespace["result"] is namespace["handle"].result
    assert namespace["result"].status is rolling.RolloutStatus.SUCCEEDED


@pytest.mark.anyio
async def test_one_at_a_time_over_200_instances_takes_what_the_guide_says() -> None:
    # The page's estimate for one at a time over 200 instances, 60 s each and min_ready 30 s.
    claim = re.search(r"min_ready=30`, is ([a-z ]+?)[;.]", page("testing-rollouts.md"))
    assert claim is not None
    hours = {"five hours": 5 * 3600}[claim.group(1)]
    fleet = SimulatedFleet(200, latency=Latency(replace=60))
    result = await rolling.Rollout(
        fleet, "v2", router=fleet, readiness=rolling.Readiness(check=fleet, min_ready=30)
    ).run()
    assert result.status is rolling.RolloutStatus.SUCCEEDED
    assert result.duration == pytest.approx(hours)


# --------------------------------------------------------------------------- canary.md


class WeightedPool:
    """An elastic driver and a weighted router of our own, in memory, for canary arithmetic."""

    def __init__(self, size: int) -> None:
        self.boxes = {f"old-{n}": Box(f"old-{n}", "v1") for n in range(size)}
        self.attached: set[str] = set(self.boxes)
        self.weights: dict[str, int] = {}
        self.launched = 0

    async def list_instances(self) -> list[Box]:
        return list(self.boxes.values())

    async def launch(self, version: str) -> Box:
        self.launched += 1
        box = Box(f"new-{self.launched}", version)
        self.boxes[box.id] = box
        return box

    async def terminate(self, instance: Box) -> None:
        self.boxes.pop(instance.id, None)
        self.attached.discard(instance.id)

    async def attach(self, instance: Box) -> None:
        self.attached.add(instance.id)

    async def detach(self, instance: Box) -> None:
        self.attached.discard(instance.id)

    async def set_weight(self, instance: Box, weight: int) -> None:
        self.weights[instance.id] = weight


async def shifts_of(steps: list[rolling.Step], size: int = 4) -> list[rolling.TrafficShifted]:
    pool = WeightedPool(size)
    recorder = EventRecorder()
    result = await rolling.Rollout(
        pool, "v2", strategy=rolling.Canary(), router=pool, steps=steps, observers=[recorder]
    ).run()
    assert result.status is rolling.RolloutStatus.SUCCEEDED, result.reason
    return [shift for shift in recorder.of_type(rolling.TrafficShifted) if shift.reason == "step"]


@pytest.mark.anyio
async def test_the_canary_weights_table_with_a_weighted_router_of_our_own() -> None:
    rows = table_after("canary.md", "| asked | canaries |")
    steps: list[rolling.Step] = [rolling.SetWeight(float(row[0].rstrip(" %"))) for row in rows]
    shifts = await shifts_of(steps)
    assert len(shifts) == len(rows)
    for shift, (_, canaries, canary_weight, stable_weight, achieved) in zip(
        shifts, rows, strict=True
    ):
        assert shift.new_instances == int(canaries)
        assert (shift.new_weight, shift.old_weight) == (int(canary_weight), int(stable_weight))
        assert f"{shift.achieved:.1f} %" == achieved


@pytest.mark.anyio
async def test_the_extreme_shares_the_canary_page_quotes() -> None:
    # A share of 0.01 % achieves 0.098 %, the page says: weight 1 beside 4 x 256.
    (tiny,) = await shifts_of([rolling.SetWeight(0.01)])
    assert (tiny.new_instances, tiny.new_weight, tiny.old_weight) == (1, 1, 256)
    assert round(tiny.achieved, 3) == 0.098
    # One canary asked for 99.9 % achieves 256/(256 + 4), about 98.5 %, and so does 100 %:
    # the stable set keeps weight 1.
    for percent in (99.9, 100):
        *_, big = await shifts_of([rolling.SetCanaryScale(replicas=1), rolling.SetWeight(percent)])
        assert (big.new_instances, big.new_weight, big.old_weight) == (1, 256, 1)
        assert round(big.achieved, 1) == 98.5


def test_the_canary_and_blue_green_snippets_build() -> None:
    pool = WeightedPool(4)

    async def smoke(context: object) -> float:
        del context
        return 0.0

    analysis = rolling.Analysis(
        metrics=[rolling.Metric(name="m", provider=smoke, failure=lambda v: v > 0.1)]
    )
    canary = block_with("canary.md", "python", "rolling.SetWeight(5),")
    namespace = run_snippet(
        canary, {"rolling": rolling, "driver": pool, "router": pool, "error_ratio": analysis}
    )
    assert isinstance(namespace["rollout"], rolling.Rollout)
    blue_green = block_with("canary.md", "python", "rolling.BlueGreen(")
    namespace = run_snippet(
        blue_green, {"rolling": rolling, "smoke_tests": analysis, "error_ratio": analysis}
    )
    assert namespace["strategy"].scale_down_delay == 30


# --------------------------------------------------------------------------- cli.md


def cli_file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def first_file(tmp_path: Path, fleet_file: Path) -> Path:
    """The page's first rollout file, in a directory with the ``./serve`` it runs."""
    assert fleet_file == tmp_path / "fleet.json"  # the file's state_file, stopped at the end
    serve = tmp_path / "serve"
    serve.write_text(f'#!/bin/sh\nexec {sys.executable} -m rolling.demo.app "$@"\n')
    serve.chmod(0o755)
    return cli_file(tmp_path, "deploy.toml", blocks("cli.md", "toml")[0])


def console_lines(name: str, command: str) -> list[str]:
    """The lines a ``console`` block shows after ``$ command``, up to the next prompt."""
    for block in blocks(name, "console"):
        lines = block.splitlines()
        if f"$ {command}" in lines:
            after = lines[lines.index(f"$ {command}") + 1 :]
            prompts = [i for i, line in enumerate(after) if line.startswith("$ ")]
            return after[: prompts[0]] if prompts else after
    raise AssertionError(f"no `$ {command}` in a console block of {name}")


def test_the_first_rollout_file_validates_and_runs(first_file: Path) -> None:
    tmp_path = first_file.parent
    validated = rolling_cli("validate", "deploy.toml", cwd=tmp_path)
    assert validated.returncode == 0, validated.stderr
    assert validated.stdout.splitlines() == console_lines("cli.md", "rolling validate deploy.toml")
    run = rolling_cli("run", "deploy.toml", "--to", "v2", cwd=tmp_path, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    shown = console_lines("cli.md", "rolling run deploy.toml --to v2")
    lines = run.stdout.splitlines()
    timeless = [re.sub(r"^\[ *[\d.]+s\] ", "", line) for line in lines]
    for line in shown[:3]:  # status, started, the first phase
        assert re.sub(r"^\[ *[\d.]+s\] ", "", line) in timeless, line
    assert re.fullmatch(r"rolling run: succeeded \(v2\) in [\d.]+ s; 3 updated", lines[-1])
    assert re.fullmatch(r"rolling run: succeeded \(v2\) in [\d.]+ s; 3 updated", shown[-1])
    # "a re-run resumes or is a no-op"
    again = rolling_cli("run", "deploy.toml", "--to", "v2", cwd=tmp_path, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.splitlines()[-1].endswith("; 3 skipped")


def test_the_error_examples_are_what_the_first_file_s_typos_give(tmp_path: Path) -> None:
    text = blocks("cli.md", "toml")[0]
    shown = console_lines("cli.md", "rolling validate deploy.toml")
    assert len(shown) == 1  # the first console block shows "valid"; the errors come later
    errors = block_with("cli.md", "console", "readiness.perod").splitlines()
    cli_file(tmp_path, "deploy.toml", text.replace("period = 0.5", "perod = 0.5"))
    validated = rolling_cli("validate", "deploy.toml", cwd=tmp_path)
    assert validated.returncode == 78
    assert validated.stderr.splitlines() == [errors[1]]
    cli_file(tmp_path, "deploy.toml", text.replace('"process"', '"proces"'))
    run = rolling_cli("run", "deploy.toml", "--to", "v2", cwd=tmp_path)
    assert run.returncode == 78
    assert run.stderr.splitlines() == [errors[3]]


def test_the_analysis_canary_and_blue_green_tables_validate(tmp_path: Path) -> None:
    base = blocks("cli.md", "toml")[0].split("[readiness]")[0]
    metrics = block_with("cli.md", "toml", "[metrics.error-ratio]")
    error_ratio = metrics.split("[metrics.vs-old]")[0]
    router = '[router]\nplugin = "balancer"\n'
    files = {
        "metrics.toml": base + metrics,
        "canary.toml": base
        + router
        + block_with("cli.md", "toml", 'type = "canary"')
        + error_ratio,
        "blue-green.toml": base
        + router
        + block_with("cli.md", "toml", 'type = "blue-green"')
        + error_ratio,
    }
    for name, text in files.items():
        cli_file(tmp_path, name, text)
        validated = rolling_cli("validate", name, cwd=tmp_path)
        assert validated.returncode == 0, (name, validated.stderr)
        assert validated.stdout.strip() == f"{name}: valid"


def test_secrets_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = '[driver]\nplugin = "simulated"\n' + block_with("cli.md", "toml", "${HAPROXY_SOCKET}")
    cli_file(tmp_path, "secret.toml", text)
    monkeypatch.delenv("HAPROXY_SOCKET", raising=False)
    refused = rolling_cli("validate", "secret.toml", cwd=tmp_path)
    assert refused.returncode == 78
    assert "HAPROXY_SOCKET is not set" in refused.stderr
    monkeypatch.setenv("HAPROXY_SOCKET", str(tmp_path / "admin.sock"))
    # A simulated fleet behind HAProxy is a file that validates as far as the secret goes.
    validated = rolling_cli("validate", "secret.toml", cwd=tmp_path)
    assert "HAPROXY_SOCKET" not in validated.stderr
    assert str(tmp_path / "admin.sock") not in validated.stdout + validated.stderr


SIMULATED = """\
{rollback}
[driver]
plugin = "simulated"
instances = 4
faults = [{{ instance_id = "i-001", version = "v2", replace_raises = true }}]
{failure}
"""


@pytest.mark.parametrize(
    ("rollback", "failure", "status", "words"),
    [
        ("", "", 1, "rolled back"),
        ("", "[failure]\nmax_failed = 1", 2, "degraded"),
        ('rollback = "halt"', "", 3, "halted"),
    ],
)
def test_the_exit_statuses_of_rolling_run(
    tmp_path: Path, rollback: str, failure: str, status: int, words: str
) -> None:
    table = {row[0]: row[1] for row in table_after("cli.md", "| Status | `rolling run` outcome |")}
    assert table[str(status)].startswith(words.split(maxsplit=1)[0])
    cli_file(tmp_path, "f.toml", SIMULATED.format(rollback=rollback, failure=failure))
    run = rolling_cli("run", "f.toml", "--to", "v2", cwd=tmp_path)
    assert run.returncode == status, run.stdout + run.stderr
    assert run.stdout.splitlines()[-1].startswith(f"rolling run: {words} (v2)")
    if status == 2:
        # Failures are named in the summary, the page says, with their reasons.
        assert "; failed: i-001 (" in run.stdout.splitlines()[-1]


def test_the_usage_and_control_exit_statuses(tmp_path: Path) -> None:
    cli_file(tmp_path, "f.toml", '[driver]\nplugin = "simulated"\ninstances = 1\n')
    assert rolling_cli("run", "f.toml", cwd=tmp_path).returncode == 64  # a missing --to
    status = rolling_cli("status", "f.toml", "--json", cwd=tmp_path)
    assert status.returncode == 69  # no run listens
    assert '"ok": false' in status.stdout


def test_the_plugins_listing_is_the_page_s(tmp_path: Path) -> None:
    listed = rolling_cli("plugins", cwd=tmp_path)
    assert listed.returncode == 0
    shown = console_lines("cli.md", "rolling plugins")
    without_versions = [re.sub(r"\(rolling [^)]*\)", "(rolling)", line) for line in shown]
    assert [
        re.sub(r"\(rolling [^)]*\)", "(rolling)", line) for line in listed.stdout.splitlines()
    ] == without_versions


def test_the_plugin_guide_s_nomad_driver_is_found_and_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The plugin package of "Writing a plugin", installed as pip would leave it: the module
    # and a dist-info whose entry points are the pyproject table's.
    module = block_with("cli.md", "python", "rolling_nomad/__init__.py")
    package = tmp_path / "site" / "rolling_nomad"
    package.mkdir(parents=True)
    driver = textwrap.dedent(
        """

        class NomadDriver:
            def __init__(self, address: str, job: str, token: str) -> None:
                self.address, self.job, self.token = address, job, token

            async def list_instances(self) -> list[object]:
                return []

            async def replace(self, instance: object, version: str) -> object:
                return instance
        """
    )
    (package / "__init__.py").write_text(module + driver, encoding="utf-8")
    entry_points = block_with("cli.md", "toml", "[project.entry-points")
    group = re.search(r'\[project\.entry-points\."([^"]+)"\]', entry_points)
    assert group is not None
    info = tmp_path / "site" / "rolling_nomad-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: rolling-nomad\nVersion: 1.0\n")
    # pip writes the TOML string's value, unquoted, into entry_points.txt.
    lines = [
        line.replace('"', "")
        for line in entry_points.splitlines()
        if "=" in line and "[" not in line
    ]
    (info / "entry_points.txt").write_text(f"[{group.group(1)}]\n" + "\n".join(lines) + "\n")
    rollout_file = block_with("cli.md", "toml", 'plugin = "nomad"')
    cli_file(tmp_path, "nomad.toml", rollout_file)
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")])
    )
    monkeypatch.setenv("NOMAD_TOKEN", "s3cret")
    assert "nomad" in rolling_cli("plugins", cwd=tmp_path).stdout
    validated = rolling_cli("validate", "nomad.toml", cwd=tmp_path)
    assert validated.returncode == 0, validated.stderr
    cli_file(tmp_path, "empty.toml", rollout_file.replace('job = "web"', 'job = ""'))
    refused = rolling_cli("validate", "empty.toml", cwd=tmp_path)
    assert refused.returncode == 78
    assert 'job: is empty; write job = "web"' in refused.stderr


# --------------------------------------------------------------------------- pipelines.md


def test_the_pipeline_s_rollout_file_validates(tmp_path: Path) -> None:
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "known_hosts").write_text("")
    text = block_with("pipelines.md", "toml", "# deploy/rollout.toml")
    cli_file(tmp_path, "deploy/rollout.toml", text)
    validated = rolling_cli("validate", "deploy/rollout.toml", cwd=tmp_path)
    assert validated.returncode == 0, validated.stderr


@pytest.mark.parametrize(
    ("value", "module_text", "words"),
    [
        ('"broken_plugin:driver"', "def driver(): ...\n", "cannot be loaded"),
        ("broken_plugin:drivr", "def driver(): ...\n", "AttributeError"),
        ("broken_plugin:driver", "raise RuntimeError('no config')\n", "RuntimeError: no config"),
    ],
)
def test_a_plugin_that_cannot_be_loaded_is_an_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str, module_text: str, words: str
) -> None:
    # cli.md: "a plugin that fails to import is an error naming what it needs". A module that
    # raises as it is imported, a missing attribute or a malformed entry point used to end
    # `rolling` with a traceback and exit status 1.
    site = tmp_path / "site"
    site.mkdir()
    (site / "broken_plugin.py").write_text(module_text)
    info = site / "broken_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[rolling.drivers]\nbroken = {value}\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    cli_file(tmp_path, "f.toml", '[driver]\nplugin = "broken"\n')
    refused = rolling_cli("validate", "f.toml", cwd=tmp_path)
    assert refused.returncode == 78, refused.stderr
    assert "Traceback" not in refused.stderr
    assert "f.toml:2: driver.plugin: the driver 'broken'" in refused.stderr
    assert words in refused.stderr


# --------------------------------------------------------------------------- tutorial.md


def report_labels(text: str) -> list[str]:
    """The labels of a demo report's lines, in order (continuation lines have none)."""
    report = text.split("rolling demo report\n", 1)[1]
    return [line[2:17].strip() for line in report.splitlines() if line[2:17].strip()]


@pytest.mark.anyio
@pytest.mark.parametrize("broken", [False, True])
async def test_the_tutorial_s_reports_have_the_demo_s_lines(broken: bool) -> None:
    from rolling.demo._load import Sample  # noqa: PLC0415 - the demo's own report, as it builds it
    from rolling.demo._report import DemoReport  # noqa: PLC0415

    fleet = SimulatedFleet(4, ids=[f"p-{n}" for n in range(4)])
    if broken:
        fleet.fault(version="v2", never_ready=True)
    recorder = EventRecorder()
    result = await rolling.Rollout(
        fleet,
        "v2",
        router=fleet,
        readiness=rolling.Readiness(check=fleet, period=0.2, deadline=5),
        observers=[recorder],
    ).run()
    report = DemoReport.build(
        result=result,
        samples=[Sample(at=0.0, latency=0.02, ok=True, version="v1")],
        instances=4,
        strategy="rolling update (max_unavailable=1, max_surge=0)",
        drain=True,
        demo_seconds=result.duration + 3,
        interrupted=False,
        analysis=True,
        shifts=recorder.of_type(rolling.RollbackStarted),
    ).to_text()
    command = "rolling demo --broken" if broken else "pip install '.[analysis]' && rolling demo"
    shown = "\n".join(console_lines("tutorial.md", command))
    assert report_labels(report) == report_labels(shown)
    # The rollout's reason is the failure that fired the rollback, as the page shows it.
    if broken:
        reason = next(line for line in shown.splitlines() if line.startswith("  reason"))
        assert reason.endswith("last probe: HTTP 503")
        assert result.reason.endswith("last probe: never ready")
        label = {row[0] for row in table_after("tutorial.md", "| line | meaning |")}
        assert set(report_labels(report)) - {"reason"} <= label


# --------------------------------------------------------------------------- analysis.md


def test_the_analysis_snippets_build() -> None:
    fleet = SimulatedFleet(2)
    background = block_with("analysis.md", "python", "PrometheusQuery(")
    namespace = run_snippet(background, {"driver": fleet, "check": fleet})
    # The page's rollout is built: its query is a template the analysis accepts.
    assert isinstance(namespace["rollout"], rolling.Rollout)
    error_ratio = rolling.Metric(name="error-ratio", provider=fleet_value, failure=above(0.01))
    p99 = rolling.Metric(name="p99", provider=fleet_value, failure=above(0.5))
    steps = run_snippet(
        block_with("analysis.md", "python", "inconclusive_timeout=600"),
        {"rolling": rolling, "error_ratio": error_ratio, "p99": p99},
    )["steps"]
    assert [type(step).__name__ for step in steps] == ["Advance", "Analyze", "Advance", "Analyze"]
    compare = run_snippet(
        block_with("analysis.md", "python", "vs_baseline = Compare("), {"rolling": rolling}
    )
    assert compare["metric"].failure == compare["vs_baseline"].worse
    assert (compare["vs_baseline"].alpha, compare["vs_baseline"].window) == (0.05, 10)
    assert compare["vs_baseline"].min_samples == 5


async def fleet_value(context: object) -> float:
    del context
    return 0.0


def above(limit: float) -> Any:
    def condition(value: float) -> bool:
        return value > limit

    return condition


def test_the_template_example_becomes_what_the_page_shows() -> None:
    from rolling.analysis import MeasureContext, fill_template  # noqa: PLC0415

    template = block_with("analysis.md", "text", "$new_addresses").strip()
    shown = re.search(r"becomes `([^`]*)`", page("analysis.md"))
    assert shown is not None
    new = tuple(SimulatedFleetAddress(f"10.0.0.{n}", 8080) for n in (7, 8))
    filled = fill_template(template, MeasureContext(target="v2", new_instances=new))
    assert filled.startswith(shown.group(1).removesuffix("..."))
    # "a version such as `v2"; drop` cannot break the query"
    hostile = fill_template("x{version=$target}", MeasureContext(target='v2"; drop'))
    assert hostile == 'x{version="v2\\"; drop"}'
    # "Write `$$` for a literal `$`; an unknown placeholder is a ConfigError."
    assert fill_template("$$x", MeasureContext(target="v2")) == "$x"
    with pytest.raises(rolling.ConfigError):
        rolling.metrics.PrometheusQuery("http://prometheus:9090", "up{a=$nope}")


@attrs.frozen
class SimulatedFleetAddress:
    host: str
    port: int
    id: str = "x"
    version: str = "v2"


# --------------------------------------------------------------------------- weights.md


@attrs.frozen
class Backend:
    id: str
    host: str
    port: int
    version: str = "v1"


@pytest.mark.anyio
@pytest.mark.real_time
async def test_weights_5_1_1_give_the_order_the_page_shows() -> None:
    from rolling.routers.balancer import Balancer  # noqa: PLC0415

    shown = re.search(r"Weights 5, 1 and 1 give the order `([a-c ]+)`", page("weights.md"))
    assert shown is not None
    order = shown.group(1).split()
    seen: list[str] = []
    send, receive = anyio.create_memory_object_stream[str](len(order) * 2)

    async with contextlib.AsyncExitStack() as stack, anyio.create_task_group() as group:
        stack.enter_context(send)
        stack.enter_context(receive)
        backends: list[Backend] = []
        for name in "abc":
            listener = await stack.enter_async_context(
                await anyio.create_tcp_listener(local_host="127.0.0.1")
            )

            async def serve(stream: anyio.abc.SocketStream, name: str = name) -> None:
                send.send_nowait(name)
                await stream.aclose()

            group.start_soon(serve_connections, listener, serve)
            backends.append(Backend(name, "127.0.0.1", port_of(listener)))
        balancer = Balancer()
        # A weight set before the first attach, even before `async with`, is kept for it.
        for backend, weight in zip(backends, (5, 1, 1), strict=True):
            await balancer.set_weight(backend, weight)
        with pytest.raises(rolling.ConfigError, match=r"Balancer\.set_weight\.weight"):
            await balancer.set_weight(backends[0], 257)
        async with balancer:
            for backend in backends:
                await balancer.attach(backend)
            for _ in range(2 * len(order)):  # the order comes round again, the page says
                stream = await anyio.connect_tcp(balancer.host, balancer.port)
                with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                    await stream.receive()
                await stream.aclose()
                with anyio.fail_after(5):  # one connection at a time: the picks stay in order
                    seen.append(await receive.receive())
        group.cancel_scope.cancel()
    assert seen == order * 2


# --------------------------------------------------------------------------- ssh.md


def test_the_ssh_guide_s_templates_are_refused_or_accepted_as_it_says() -> None:
    pytest.importorskip("asyncssh", reason="pip install 'rolling[ssh]'")
    from rolling.drivers.ssh import SSHCommands, SSHDriver, SSHHost  # noqa: PLC0415

    setup = block_with(
        "ssh.md", "python", "async with SSHDriver(hosts, commands, command_timeout=120"
    )
    namespace = run_snippet(setup.split("log = rolling.LoggingObserver()")[0], {})
    hosts = namespace["hosts"]
    assert namespace["commands"].deploy.startswith("/srv/app/fetch")
    for line in block_with("ssh.md", "python", "# ConfigError: inside quotes").splitlines():
        written = re.search(r"deploy=(['\"])(.*)\1\)", line)
        assert written is not None
        if "ConfigError" in line:
            with pytest.raises(rolling.ConfigError):
                SSHCommands(probe="cat VERSION", deploy=written.group(2))
        else:
            SSHDriver(hosts, SSHCommands(probe="cat VERSION", deploy=written.group(2)))
    refused = [
        "install {version} # zone {zone}",  # in a comment
        "[[ {version} -eq 2 ]]",
        "export APP_VERSION={version}",
        "a[{version}]=1",
        "install {version!r}",
        "install {version:>8}",
        "install {version[0]}",
    ]
    for template in refused:
        with pytest.raises(rolling.ConfigError):
            SSHDriver(hosts, SSHCommands(probe="cat VERSION", deploy=template))
    accepted = [
        "[ {version} = 2 ]",
        "APP_VERSION={version} /srv/app/install",
        '--version "$(cat VERSION)" --port {port}',
        "/srv/{version}.tar",
        "NAME={version} command",
        "{{ cmd & echo $!; }} {version}",
    ]
    for template in accepted:
        SSHDriver(hosts, SSHCommands(probe="cat VERSION", deploy=template))
    with pytest.raises(rolling.ConfigError):
        SSHHost(name="web-1\n", address="10.0.0.11")
    # "refuses it together with host_keys"
    with pytest.raises(rolling.ConfigError):
        SSHDriver(
            hosts, namespace["commands"], insecure_no_host_key_check=True, host_keys={"web-1": "x"}
        )


# --------------------------------------------------------------------------- other guides


@pytest.mark.anyio
async def test_the_coming_from_snippet_runs_with_the_merge() -> None:
    fleet = SimulatedFleet(10)
    namespace = await run_async_snippet(
        block_with("coming-from.md", "python", "recipes.kubernetes_deployment("),
        {"driver": fleet, "router": fleet},
    )
    assert namespace["result"].status is rolling.RolloutStatus.SUCCEEDED
    options = namespace["options"]
    assert options["readiness"].min_ready == 10
    assert options["strategy"].resolve(10).ceiling == 13  # 25 % of 10 rounds up to 3
    merged: dict[str, Any] = {**options, "rollback": "revert"}
    assert rolling.Rollout(fleet, "v2", **merged) is not None
    # A value the tool would refuse is a ConfigError naming the recipe and the setting.
    with pytest.raises(rolling.ConfigError) as caught:
        recipes.ecs_rolling_update(maximum_percent=90)
    assert str(caught.value).startswith("ecs_rolling_update.maximum_percent: ")


@pytest.mark.anyio
async def test_the_flags_snippet_turns_the_flag_on_in_a_flagd_file(tmp_path: Path) -> None:
    code = block_with("flags.md", "python", "FlagdFile(")
    path = tmp_path / "flags.json"
    fleet = SimulatedFleet(3)
    namespace = run_snippet(
        code.replace("/etc/flagd/flags.json", str(path)), {"driver": fleet, "router": fleet}
    )
    result = await namespace["rollout"].run()
    assert result.status is rolling.RolloutStatus.SUCCEEDED
    assert [(change.flag, change.value, change.ok) for change in result.flags] == [
        ("new-format", True, True)
    ]
    assert '"new-format"' in path.read_text()
    assert result.to_dict()["flags"]


def test_the_haproxy_snippet_builds_its_router() -> None:
    code = block_with("haproxy.md", "python", "HAProxyRouter(")
    router_part = code.split("result = await")[0]
    namespace = run_snippet(router_part, {})
    router = namespace["router"]
    assert isinstance(router, rolling.typing.WeightedRouter)


def test_the_etcd_journal_snippet_refuses_trio_before_touching_the_fleet() -> None:
    """Run on trio only (on asyncio the journal needs an etcd: tests/test_etcd.py runs one)."""
    pytest.importorskip("aetcd", reason="pip install 'rolling[etcd]'")
    code = block_with("recovery.md", "python", "rolling.EtcdJournal(")
    fleet = SimulatedFleet(3)
    code = code.replace('"v2", journal=journal, ...)', '"v2", journal=journal)')

    async def main() -> None:
        await run_async_snippet(code, {"rolling": rolling, "driver": fleet})

    with pytest.raises(rolling.ConfigError, match="asyncio"):
        anyio.run(main, backend="trio")
    assert fleet.calls == []


def test_the_container_snippets_build_their_driver() -> None:
    pytest.importorskip("aiodocker", reason="pip install 'rolling[docker]'")
    from rolling.drivers.docker import DockerDriver  # noqa: PLC0415

    versions = run_snippet(
        "driver = " + block_with("containers.md", "python", 'version_label="org.example.version"'),
        {"DockerDriver": DockerDriver},
    )["driver"]
    assert isinstance(versions, DockerDriver)
    overrides = block_with("containers.md", "python", "overrides=")
    assert isinstance(
        run_snippet("driver = " + overrides, {"DockerDriver": DockerDriver})["driver"],
        DockerDriver,
    )


# ------------------------------------------------------------------ cli.md: exit statuses


def failing_fleet_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A driver plugin of our own whose fleet API is down: list_instances() raises."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "down_plugin.py").write_text(
        textwrap.dedent(
            """
            class Down:
                async def list_instances(self):
                    raise RuntimeError("the fleet API is down")

                async def replace(self, instance, version):
                    return instance


            def driver():
                return Down()
            """
        )
    )
    info = site / "down_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: down-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[rolling.drivers]\ndown = down_plugin:driver\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))


def test_a_run_an_error_ends_exits_5_and_says_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # cli.md: 5 "failed: it could not start (a plugin, the fleet, ...), or ended on an error",
    # and a run "ended on an error ... says why in its "error"". A fleet that cannot be
    # listed ended the run with exit status 3 (halted) and the error "ExceptionGroup:
    # unhandled errors in a TaskGroup (1 sub-exception)".
    failing_fleet_plugin(tmp_path, monkeypatch)
    cli_file(tmp_path, "down.toml", '[driver]\nplugin = "down"\n')
    run = rolling_cli("run", "down.toml", "--to", "v2", cwd=tmp_path)
    assert run.returncode == 5, run.stdout + run.stderr
    assert "rolling run: RuntimeError: the fleet API is down" in run.stderr.splitlines()
    assert "ExceptionGroup" not in run.stderr
    as_json = rolling_cli("run", "down.toml", "--to", "v2", "--json", cwd=tmp_path)
    assert as_json.returncode == 5
    exit_line = json.loads(as_json.stdout.splitlines()[-1])
    jsonschema.validate(exit_line, CLI_EVENTS_SCHEMA)
    assert (exit_line["outcome"], exit_line["exit_code"]) == ("failed", 5)
    assert exit_line["error"] == "RuntimeError: the fleet API is down"


ADVANCES_GO_BACK = """\
[driver]
plugin = "simulated"
instances = 20

[[steps]]
advance = 5
[[steps]]
advance = "10%"
"""


def test_advance_targets_that_go_back_on_this_fleet_are_a_bad_configuration(
    tmp_path: Path,
) -> None:
    # concepts.md: Advance(5) then Advance("10%") goes back on 20 instances, which run()
    # refuses with a ConfigError once it has listed the fleet; cli.md: 78 is "an option the
    # library refuses". `rolling run` exited 3 (halted), and `rolling plan` showed a plan of
    # the run that would be refused.
    cli_file(tmp_path, "steps.toml", ADVANCES_GO_BACK)
    words = "Advance('10%') is 2 of 20 instances, fewer than the 5 an earlier Advance"
    run = rolling_cli("run", "steps.toml", "--to", "v2", cwd=tmp_path)
    assert run.returncode == 78, run.stdout + run.stderr
    assert f"rolling run: steps.toml: Rollout.steps[1]: {words}" in run.stderr
    plan = rolling_cli("plan", "steps.toml", "--to", "v2", cwd=tmp_path)
    assert plan.returncode == 78, plan.stdout + plan.stderr
    assert words in plan.stderr


WAVES = """\
[driver]
plugin = "simulated"
instances = 6
zones = ["a", "b"]

[strategy]
type = "batches"
sizes = [2]

[waves]
attribute = "zone"
order = ["b", "a"]
"""


def test_the_plan_s_timeline_goes_wave_by_wave_as_the_run_does(tmp_path: Path) -> None:
    # cli.md: the plan shows "the instances that would change, the window or batches, ... and
    # a predicted timeline: when each instance would start and end". It ignored [waves]: the
    # run updates zone b first, each wave cut into batches of its own, the plan did not.
    cli_file(tmp_path, "waves.toml", WAVES)
    plan = rolling_cli("plan", "waves.toml", "--to", "v2", cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr
    assert "window: batches of 2, 1, 2, 1" in plan.stdout
    timeline = re.findall(r"^  (i-\d+) +([\d.]+) s -> +([\d.]+) s$", plan.stdout, re.MULTILINE)
    run = rolling_cli("run", "waves.toml", "--to", "v2", "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    batches = [
        line["instance_ids"]
        for line in map(json.loads, run.stdout.splitlines())
        if line["event"] == "batch_started"
    ]
    # Zones go round robin (i-001 is in b): wave b first, in batches of 2, then wave a.
    assert batches == [["i-001", "i-003"], ["i-005"], ["i-000", "i-002"], ["i-004"]]
    starts: dict[float, list[str]] = {}
    for key, start, _ in timeline:
        starts.setdefault(float(start), []).append(key)
    assert list(starts.values()) == batches


# ------------------------------------------------------------------ writing-a-driver.md: hooks


class CallLog:
    """A plain hooks object with every per-instance hook, logging the names in order."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        if not name.startswith(("before_", "after_")) or name.endswith(("_rollout", "_batch")):
            raise AttributeError(name)

        async def hook(*args: object) -> None:
            del args
            self.calls.append(name)

        return hook


class ElasticOnly:
    """An elastic driver of a simulated fleet: launch and terminate, no replace."""

    def __init__(self, fleet: SimulatedFleet) -> None:
        self.fleet = fleet

    async def list_instances(self) -> list[Any]:
        return list(await self.fleet.list_instances())

    async def launch(self, version: str) -> Any:
        return await self.fleet.launch(version)

    async def terminate(self, instance: Any) -> None:
        await self.fleet.terminate(instance)


@pytest.mark.anyio
async def test_the_hooks_run_in_the_order_the_driver_guide_s_table_gives() -> None:
    rows = {row[0]: row[1] for row in table_after("writing-a-driver.md", "| Hooks, in order")}
    paths: dict[str, tuple[rolling.RollingUpdate, bool]] = {
        "In place": (rolling.RollingUpdate(), False),
        "Elastic with surge": (rolling.RollingUpdate(max_unavailable=0, max_surge=1), False),
        "Elastic without surge": (rolling.RollingUpdate(), True),
    }
    assert set(rows) == set(paths)
    for path, (strategy, elastic) in paths.items():
        fleet = SimulatedFleet(1)
        hooks = CallLog()
        driver: Any = ElasticOnly(fleet) if elastic else fleet
        result = await rolling.Rollout(
            driver,
            "v2",
            strategy=strategy,
            router=fleet,
            readiness=rolling.Readiness(check=fleet),
            hooks=hooks,
        ).run()
        assert result.status is rolling.RolloutStatus.SUCCEEDED
        assert hooks.calls == re.findall(r"`(\w+)`", rows[path]), path


def test_the_json_lines_the_page_shows_are_what_a_run_writes(tmp_path: Path) -> None:
    shown = [json.loads(line) for line in blocks("cli.md", "json")[0].splitlines()]
    for line in shown:
        jsonschema.validate(line, CLI_EVENTS_SCHEMA)
    cli_file(tmp_path, "f.toml", '[driver]\nplugin = "simulated"\ninstances = 1\n')
    run = rolling_cli("run", "f.toml", "--to", "v2", "--json", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    written = [json.loads(line) for line in run.stdout.splitlines()]
    by_event = {line["event"]: line for line in written}
    for line in shown:
        real = (
            by_event[line["event"]]
            if line["event"] == "exit"
            else next(
                w for w in written if w["event"] == line["event"] and w["phase"] == line["phase"]
            )
        )
        assert set(real) == set(line), line["event"]
    assert written[-1]["event"] == "exit"


# ------------------------------------------------------------------ concepts.md: cancellation


@pytest.mark.anyio
@pytest.mark.parametrize("healthy_again", [True, False])
async def test_a_restore_during_a_cancellation_says_where_it_left_the_instance(
    healthy_again: bool,
) -> None:
    # concepts.md, Cancellation: an instance whose call was cut "is restored to its old
    # version and put back in traffic"; with restore_failed "its reason ends with 'restored
    # to ...'", and events.Phase: the final FAILED's reason "ends `restored to v1` (or says why
    # not)". Under a cancellation the restore's readiness wait is cut at once and one probe
    # decides: the instance went back on v1 and into traffic, but its reason said only that
    # the call was cut.
    fleet = SimulatedFleet(3)
    fleet.fault("i-000", version="v2", hang="replace")
    recorder = EventRecorder()
    rollout = rolling.Rollout(
        fleet,
        "v2",
        router=fleet,
        readiness=rolling.Readiness(check=fleet),
        observers=[recorder],
    )
    handles: list[rolling.RolloutHandle] = []
    with anyio.move_on_after(5):
        async with rollout.start() as handle:
            handles.append(handle)
            await anyio.sleep(1)
            if not healthy_again:
                fleet.fault("i-000", version="v1", never_ready=True)
    result = handles[0].result
    assert result.status is rolling.RolloutStatus.CANCELLED
    (first, *_) = result.instances
    cut = "cancelled: driver.replace was cut after cleanup_timeout=60.0s"
    assert (first.outcome, first.version) == (rolling.InstanceOutcome.FAILED, "v1")
    assert first.reason.startswith(cut)
    if healthy_again:
        assert first.serving
        assert first.reason.endswith("; restored to v1")
    else:
        assert not first.serving  # "A restore cut in turn leaves the instance out of traffic"
        assert "restored to v1" not in first.reason
        assert first.reason.endswith("; restoring v1 was cut short")
    final = recorder.of_type(rolling.InstancePhaseChanged)[-1]
    assert (final.instance_id, final.phase, final.reason) == (
        "i-000",
        rolling.Phase.FAILED,
        first.reason,
    )


# ------------------------------------------------------------------ concepts.md: numbers


@pytest.mark.anyio
async def test_the_readiness_example_is_ready_after_about_35_seconds() -> None:
    # "with period=5, success_threshold=2, min_ready=30, an instance that is healthy from the
    # start is ready after about 35 seconds"
    fleet = SimulatedFleet(1)
    recorder = EventRecorder()
    readiness = rolling.Readiness(check=fleet, period=5, success_threshold=2, min_ready=30)
    result = await rolling.Rollout(
        fleet, "v2", router=fleet, readiness=readiness, observers=[recorder]
    ).run()
    assert result.status is rolling.RolloutStatus.SUCCEEDED
    at = {e.phase: e.at for e in recorder.of_type(rolling.InstancePhaseChanged)}
    assert at[rolling.Phase.READY] - at[rolling.Phase.WAITING_READY] == pytest.approx(35)


def test_the_backoff_formula() -> None:
    # The delay before retry n is initial times factor to the n - 1, capped at maximum.
    backoff = rolling.Backoff(initial=1, factor=2, maximum=5)
    assert [backoff.delay(n) for n in range(1, 6)] == [1, 2, 4, 5, 5]

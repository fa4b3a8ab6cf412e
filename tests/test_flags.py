"""Feature flags tied to the rollout: FlagRules, SetFlag, FlagChanged, in virtual time."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import anyio
import pytest

import rolling
from rolling import (
    Advance,
    ConfigError,
    FailurePolicy,
    FlagChanged,
    FlagRules,
    InstancePhaseChanged,
    Phase,
    Readiness,
    RollingUpdate,
    Rollout,
    RolloutStatus,
    SetFlag,
)
from rolling.events import Event
from rolling.flags import FlagdFile
from rolling.testing import Latency, SimulatedFleet

pytestmark = pytest.mark.anyio


class Setter:
    """A flag store that checks, at every change, which versions the fleet serves."""

    def __init__(self, fleet: SimulatedFleet, *, fail: set[object] | None = None) -> None:
        self.fleet = fleet
        self.values: dict[str, object] = {}
        self.fail = fail or set()
        self.seen: list[tuple[str, object, dict[str, str]]] = []

    def serving_versions(self) -> dict[str, str]:
        return {i.id: i.version for i in self.fleet.instances if self.fleet.is_attached(i.id)}

    async def set(self, flag: str, value: object) -> None:
        self.seen.append((flag, value, self.serving_versions()))
        if value in self.fail:
            msg = "flag service down"
            raise RuntimeError(msg)
        self.values[flag] = value


def rollout(fleet: SimulatedFleet, setter: Any, **kwargs: Any) -> Rollout[Any]:
    return Rollout(
        fleet,
        "v2",
        router=fleet,
        strategy=kwargs.pop("strategy", RollingUpdate(max_unavailable=1)),
        flags=kwargs.pop("flags", FlagRules(setter, "new-format")),
        **kwargs,
    )


async def test_flag_goes_on_once_every_serving_instance_runs_the_target() -> None:
    fleet = SimulatedFleet(4)
    setter = Setter(fleet)
    result = await rollout(fleet, setter).run()
    assert result.status is RolloutStatus.SUCCEEDED
    assert setter.values == {"new-format": True}
    [(flag, value, serving)] = setter.seen
    assert (flag, value) == ("new-format", True)
    assert set(serving.values()) == {"v2"}
    assert len(serving) == 4
    [change] = result.flags
    assert (change.flag, change.value, change.ok, change.cause) == (
        "new-format",
        True,
        True,
        "enable",
    )
    assert result.to_dict()["flags"] == [
        {
            "flag": "new-format",
            "value": True,
            "ok": True,
            "cause": "enable",
            "reason": "",
            "at": change.at,
        }
    ]


async def test_flag_goes_off_before_the_first_revert() -> None:
    fleet = SimulatedFleet(4)
    fleet.fault("i-002", replace_raises=True)
    setter = Setter(fleet)
    setter.values["new-format"] = True  # left on by someone: the rollback must still turn it off
    events: list[Event] = []
    result = await rollout(
        fleet, setter, failure=FailurePolicy(max_failed=0), observers=[events.append]
    ).run()
    assert result.status is RolloutStatus.ROLLED_BACK
    assert setter.values == {"new-format": False}
    assert [c.cause for c in result.flags] == ["disable"]
    flag_at = next(i for i, e in enumerate(events) if isinstance(e, FlagChanged))
    reverts = [
        i
        for i, e in enumerate(events)
        if isinstance(e, InstancePhaseChanged) and e.rollback and e.phase is not Phase.PENDING
    ]
    assert reverts
    assert flag_at < min(reverts)
    # Nothing was reverted yet when the setter ran: the updated instances still ran v2.
    [(_, _, serving)] = setter.seen
    assert "v2" in serving.values()


async def test_failed_disable_halts_the_rollback_before_it_changes_anything() -> None:
    fleet = SimulatedFleet(4)
    fleet.fault("i-001", replace_raises=True)
    setter = Setter(fleet, fail={False})
    result = await rollout(fleet, setter, failure=FailurePolicy(max_failed=0)).run()
    assert result.status is RolloutStatus.HALTED
    assert "could not be turned off" in result.reason
    assert not any(i.outcome is rolling.InstanceOutcome.REVERTED for i in result.instances)
    assert fleet.get("i-000").version == "v2"  # left as it was, not reverted
    [change] = result.flags
    assert not change.ok
    assert "flag service down" in change.reason


def failing_rollout(fleet: SimulatedFleet, setter: Any, **kwargs: Any) -> Rollout[Any]:
    """A rollout whose instances are checked, so a fault can fail one in its readiness."""
    kwargs.setdefault("failure", FailurePolicy(max_failed=0, retries=0))
    readiness = Readiness(check=fleet, period=1, timeout=1, deadline=kwargs.pop("deadline", 5))
    return rollout(fleet, setter, readiness=readiness, **kwargs)


def attached_at(events: list[Event], key: str, version: str) -> list[int]:
    """Where ``key`` went into traffic on ``version``, by index in ``events``."""
    return [
        i
        for i, e in enumerate(events)
        if isinstance(e, InstancePhaseChanged)
        and e.instance_id == key
        and e.phase is Phase.ATTACHING
        and e.version == version
    ]


def flag_set_at(events: list[Event], cause: str) -> list[int]:
    return [i for i, e in enumerate(events) if isinstance(e, FlagChanged) and e.cause == cause]


@pytest.mark.parametrize("how", ["left on", "step"])
async def test_flag_goes_off_before_a_failed_instance_is_restored_for_a_rollback(
    how: str,
) -> None:
    # The failure that exceeds the budget asks for a revert: its own restore (back to v1, in
    # traffic) is a revert of that instance, so the flag goes off first.
    fleet = SimulatedFleet(3)
    fleet.fault("i-001", version="v2", never_ready=True)
    setter = Setter(fleet)
    steps: list[Any] = []
    if how == "left on":
        setter.values["new-format"] = True
    else:
        steps = [Advance(1), SetFlag("new-format", value=True)]
    events: list[Event] = []
    result = await failing_rollout(fleet, setter, steps=steps, observers=[events.append]).run()
    assert result.status is RolloutStatus.ROLLED_BACK
    assert setter.values == {"new-format": False}
    [disable] = flag_set_at(events, "disable")
    [restored] = attached_at(events, "i-001", "v1")
    assert disable < restored
    [(_, off, serving)] = [s for s in setter.seen if s[1] is False]
    assert not off
    assert "i-001" not in serving  # out of traffic when the flag went off
    failed = result.by_id("i-001")
    assert failed.outcome is rolling.InstanceOutcome.FAILED
    assert failed.serving
    assert failed.version == "v1"
    assert fleet.version_counts() == {"v1": 3}


async def test_failed_disable_leaves_a_failed_instance_where_it_failed() -> None:
    # The flag may still be on: putting i-001 back on v1 would let it read the flag on.
    fleet = SimulatedFleet(3)
    fleet.fault("i-001", version="v2", never_ready=True)
    setter = Setter(fleet, fail={False})
    setter.values["new-format"] = True
    result = await failing_rollout(fleet, setter).run()
    assert result.status is RolloutStatus.HALTED
    assert "could not be turned off" in result.reason
    failed = result.by_id("i-001")
    assert failed.outcome is rolling.InstanceOutcome.FAILED
    assert (failed.version, failed.serving) == ("v2", False)
    assert "not restored" in failed.reason
    assert "could not be turned off" in failed.reason
    assert fleet.get("i-001").version == "v2"
    assert result.by_id("i-000").version == "v2"  # nothing reverted
    assert [(c.cause, c.ok) for c in result.flags] == [("disable", False)]


async def test_a_restore_within_the_budget_leaves_the_flag_as_it_is() -> None:
    # No rollback is asked for: the failed instance goes back to what served before its unit
    # began (old instances serve throughout the forward pass), and the flag is not touched.
    fleet = SimulatedFleet(3)
    fleet.fault("i-001", version="v2", never_ready=True)
    setter = Setter(fleet)
    setter.values["new-format"] = True
    result = await failing_rollout(fleet, setter, failure=FailurePolicy(max_failed=1)).run()
    assert result.status is RolloutStatus.DEGRADED
    assert result.by_id("i-001").serving
    assert setter.seen == []
    assert [(c.cause, c.ok) for c in result.flags] == [("enable", False)]


async def test_a_restore_under_way_when_a_revert_is_asked_for_waits_for_the_flag() -> None:
    # i-001 fails within the budget and its restore begins; an abort asks for a revert while
    # the restore runs: its old version goes back into traffic only once the flag is off.
    fleet = SimulatedFleet(3, latency=Latency(replace=2))
    fleet.fault("i-001", version="v2", never_ready=True)
    setter = Setter(fleet)
    setter.values["new-format"] = True
    events: list[Event] = []
    handles: list[rolling.RolloutHandle] = []

    def abort_on_restore(event: Event) -> None:
        events.append(event)
        if (
            isinstance(event, InstancePhaseChanged)
            and event.instance_id == "i-001"
            and event.phase is Phase.REVERTING
        ):
            handles[0].abort()

    ro = failing_rollout(
        fleet, setter, failure=FailurePolicy(max_failed=1), observers=[abort_on_restore]
    )
    async with ro.start() as handle:
        handles.append(handle)
    result = handle.result
    assert result.status is RolloutStatus.ABORTED
    [disable] = flag_set_at(events, "disable")
    [restored] = attached_at(events, "i-001", "v1")
    assert disable < restored
    assert result.by_id("i-001").serving
    assert fleet.version_counts() == {"v1": 3}


async def test_failed_disable_puts_back_an_instance_interrupted_out_of_traffic() -> None:
    # i-000 is in its readiness wait when the abort asks for a revert: left out of traffic
    # for the revert, which never comes (the flag could not be turned off). The halt settles
    # it as any halt does: back in traffic once it passes one health check.
    fleet = SimulatedFleet(4, latency=Latency(replace=2))
    setter = Setter(fleet, fail={False})
    readiness = Readiness(check=fleet, period=1, timeout=1, deadline=1000, min_ready=100)
    ro = rollout(fleet, setter, readiness=readiness)
    async with ro.start() as handle:
        await anyio.sleep(50)
        assert handle.status().in_flight == ("i-000",)
        handle.abort()
    result = handle.result
    assert result.status is RolloutStatus.HALTED
    assert "could not be turned off" in result.reason
    updated = result.by_id("i-000")
    assert updated.outcome is rolling.InstanceOutcome.UPDATED
    assert (updated.version, updated.serving) == ("v2", True)
    assert set(fleet.attached_ids) == {i.id for i in fleet.instances}


async def test_failed_enable_leaves_the_flag_off_and_the_result_degraded() -> None:
    fleet = SimulatedFleet(3)
    setter = Setter(fleet, fail={True})
    result = await rollout(fleet, setter).run()
    assert result.status is RolloutStatus.DEGRADED
    assert "could not be turned on" in result.reason
    assert setter.values == {}
    assert fleet.version_counts() == {"v2": 3}


async def test_flag_stays_off_while_a_failed_instance_serves_the_old_version() -> None:
    fleet = SimulatedFleet(4)
    fleet.fault("i-003", version="v2", replace_raises=True)
    setter = Setter(fleet)
    failure = FailurePolicy(max_failed=1, restore_failed=True)
    result = await rollout(fleet, setter, failure=failure).run()
    assert result.status is RolloutStatus.DEGRADED
    assert result.by_id("i-003").serving
    assert setter.seen == []
    [change] = result.flags
    assert not change.ok
    assert "i-003" in change.reason


async def test_set_flag_step_and_plain_function_setter() -> None:
    fleet = SimulatedFleet(4)
    calls: list[tuple[str, object]] = []

    async def set_flag(flag: str, value: object) -> None:
        calls.append((flag, value))

    result = await Rollout(
        fleet,
        "v2",
        steps=[Advance(2), SetFlag("canary-banner", "on", setter=set_flag)],
    ).run()
    assert result.ok
    assert calls == [("canary-banner", "on")]
    assert [(c.flag, c.cause) for c in result.flags] == [("canary-banner", "step")]


async def test_failed_set_flag_step_is_a_trigger() -> None:
    fleet = SimulatedFleet(4)

    async def broken(flag: str, value: object) -> None:
        raise OSError(f"{flag}={value}")

    result = await Rollout(
        fleet,
        "v2",
        steps=[Advance(1), SetFlag("x", value=True)],
        flags=FlagRules(broken, "new-format"),
    ).run()
    assert result.status is RolloutStatus.HALTED  # the disable failed too: rule 4
    assert "could not set flag 'x'" in result.reason
    assert [(c.flag, c.cause, c.ok) for c in result.flags] == [
        ("x", "step", False),
        ("new-format", "disable", False),
    ]


def test_config_errors() -> None:
    fleet = SimulatedFleet(2)
    with pytest.raises(ConfigError, match=r"Rollout\.steps\[0\]"):
        Rollout(fleet, "v2", steps=[SetFlag("x", value=True)])
    with pytest.raises(ConfigError, match=r"FlagRules\.setter"):
        FlagRules(42, "x")
    with pytest.raises(ConfigError, match=r"FlagRules\.flag"):
        FlagRules(Setter(fleet), "")
    with pytest.raises(ConfigError, match=r"SetFlag\.value"):
        SetFlag("x", [1])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"Rollout\.flags"):
        Rollout(fleet, "v2", flags="x")  # type: ignore[arg-type]


def check_flag_events(events: list[Event], size: int) -> None:
    """From the events alone: the flag is on only while every instance in traffic runs v2.

    In place (no surge) an instance leaves traffic when DETACHED and is back from
    ATTACHING on (counted from the start of the attach, to be strict).
    """
    serving: dict[str, str | None] = dict.fromkeys([f"i-{n:03d}" for n in range(size)], "v1")
    for event in events:
        if isinstance(event, InstancePhaseChanged):
            if event.phase is Phase.ATTACHING:
                serving[event.instance_id] = event.version
            elif event.phase is Phase.DETACHED:
                serving[event.instance_id] = None
        if isinstance(event, FlagChanged) and event.ok and event.value is True:
            assert {v for v in serving.values() if v} == {"v2"}, serving


@pytest.mark.parametrize("seed", range(40))
async def test_property_flag_on_only_while_only_the_target_serves(seed: int) -> None:
    """Random fleets and failures: from the events, the flag is on only when v2 alone serves."""
    rng = random.Random(seed)
    size = rng.randint(1, 12)
    fleet = SimulatedFleet(size, seed=seed)
    for instance in fleet.instances:
        if rng.random() < 0.2:
            fleet.fault(instance.id, replace_raises=rng.choice([True, 1]))
    setter = Setter(fleet, fail={True} if rng.random() < 0.1 else set())
    setter.values["new-format"] = rng.random() < 0.3
    events: list[Event] = []
    strategy = RollingUpdate(max_unavailable=rng.randint(1, 3), max_surge=rng.choice([0, 0, 1]))
    result = await rollout(
        fleet,
        setter,
        strategy=strategy,
        failure=FailurePolicy(max_failed=rng.randint(0, 2), retries=rng.randint(0, 1)),
        rollback=rng.choice(["revert", "halt"]),
        observers=[events.append],
        seed=seed,
    ).run()
    # Track the versions in traffic from phase events, and the flag from flag events.
    if strategy.max_surge == 0:
        check_flag_events(events, size)
    # Ground truth, seen by the setter when it was called.
    for _, value, serving in setter.seen:
        if value is True:
            assert set(serving.values()) == {"v2"}
    if result.status is RolloutStatus.SUCCEEDED and not setter.fail:
        assert setter.values["new-format"] is True
    if result.status is RolloutStatus.ROLLED_BACK:
        assert setter.values["new-format"] is False


# ------------------------------------------------------------------ flagd file


def openfeature_client(path: Any) -> Any:
    """A real OpenFeature client reading ``path`` through the flagd provider in file mode."""
    try:
        from openfeature import api  # noqa: PLC0415 - an optional test dependency
        from openfeature.contrib.provider.flagd import FlagdProvider  # noqa: PLC0415  # pyright: ignore[reportMissingTypeStubs]
        from openfeature.contrib.provider.flagd.config import ResolverType  # noqa: PLC0415  # pyright: ignore[reportMissingTypeStubs]
    except ImportError:  # pragma: no cover - in the tests extra
        if os.environ.get("CI") == "true":
            raise
        pytest.skip("openfeature-sdk and openfeature-provider-flagd are not installed")
    api.set_provider(
        FlagdProvider(resolver_type=ResolverType.FILE, offline_flag_source_path=str(path))
    )
    return api.get_client()


async def until_loaded(client: Any) -> None:
    """Wait until the provider has read the file (until then it answers the default)."""
    with anyio.fail_after(10):
        while client.get_boolean_details("new-format", default_value=False).variant is None:  # noqa: ASYNC110 - polling a provider that has no event to wait on here
            await anyio.sleep(0.05)


@pytest.mark.real_time
async def test_flagd_file_is_read_by_the_real_openfeature_provider(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    other = {"state": "ENABLED", "variants": {"a": "A"}, "defaultVariant": "a"}
    path.write_text(json.dumps({"$schema": "x", "flags": {"other": other}}))
    setter = FlagdFile(path)
    await setter.set("new-format", False)
    client = openfeature_client(path)
    await until_loaded(client)
    assert client.get_boolean_value("new-format", default_value=True) is False
    await setter.set("new-format", True)
    for _ in range(40):  # the provider polls the file about every 0.5 s
        if client.get_boolean_value("new-format", False):
            break
        await anyio.sleep(0.1)
    assert client.get_boolean_value("new-format", False) is True
    data = json.loads(path.read_text())
    assert data["flags"]["other"] == other  # other flags untouched
    assert data["$schema"] == "x"
    assert os.listdir(tmp_path) == ["flags.json"]  # no temp file left  # noqa: PTH208


@pytest.mark.real_time
async def test_flagd_file_share_writes_a_fractional_rule(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    setter = FlagdFile(path)
    await setter.set_share("new-format", 25)
    entry = json.loads(path.read_text())["flags"]["new-format"]
    assert entry["targeting"] == {"fractional": [["on", 25], ["off", 75]]}
    client = openfeature_client(path)
    await until_loaded(client)
    from openfeature.evaluation_context import EvaluationContext  # noqa: PLC0415  # pyright: ignore[reportMissingTypeStubs]

    on = sum(
        client.get_boolean_value("new-format", False, EvaluationContext(targeting_key=f"u{n}"))
        for n in range(400)
    )
    assert 60 < on < 140  # about a quarter of 400 users
    await setter.set("new-format", True)
    assert "targeting" not in json.loads(path.read_text())["flags"]["new-format"]
    with pytest.raises(ConfigError):
        await setter.set_share("new-format", 101)

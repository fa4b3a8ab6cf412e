"""The public toolkit for adapter authors: rolling.net, rolling.health and rolling.validate."""

from __future__ import annotations

import re
import ssl
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import pytest

import rolling
from rolling.health import as_check_function, probe_once
from rolling.net import address_of, causes_of, default_address, describe_connect_error, is_text
from rolling.validate import check_callable, check_int, check_seconds, validator

if TYPE_CHECKING:
    from collections.abc import Callable

# -- rolling.net ---------------------------------------------------------------------------------


def test_causes_of_lists_causes_contexts_and_group_members_once() -> None:
    root = ConnectionRefusedError("refused")
    context = KeyError("while handling")
    wrapped = OSError("connect failed")
    wrapped.__cause__ = root
    wrapped.__context__ = context
    other = PermissionError("denied")
    group = ExceptionGroup("all addresses", [wrapped, other])
    found = causes_of(group)
    assert found[0] is group
    assert {id(exc) for exc in found} == {id(e) for e in (group, wrapped, root, context, other)}
    assert len(found) == 5


def test_causes_of_lists_depth_first_members_in_order_then_cause_then_context() -> None:
    first = TimeoutError(110, "Connection timed out")
    second = OSError(113, "No route to host")
    group = ExceptionGroup("multiple connection attempts failed", [first, second])
    first_cause = KeyError("first's cause")
    first.__cause__ = first_cause
    context = ValueError("while handling")
    wrapper = OSError("All connection attempts failed")
    wrapper.__cause__ = group
    wrapper.__context__ = context
    assert causes_of(wrapper) == [wrapper, group, first, first_cause, second, context]


def test_describe_connect_error_reports_the_first_address_tried() -> None:
    # anyio's group lists the addresses in the order tried: the docs promise "the first OS
    # error with a message"; the last one (no route to host) was reported.
    wrapper = OSError("All connection attempts failed")
    wrapper.__cause__ = ExceptionGroup(
        "multiple connection attempts failed",
        [TimeoutError(110, "Connection timed out"), OSError(113, "No route to host")],
    )
    assert describe_connect_error(wrapper) == "connection failed: connection timed out"


def test_causes_of_survives_a_cycle() -> None:
    first = OSError("first")
    second = OSError("second")
    first.__context__ = second
    second.__context__ = first
    assert causes_of(first) == [first, second]


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        pytest.param(ConnectionRefusedError(111, "Connection refused"), "connection refused"),
        pytest.param(OSError(113, "No route to host"), "connection failed: no route to host"),
        pytest.param(OSError("plain"), "connection failed: plain"),
    ],
)
def test_describe_connect_error(exc: OSError, reason: str) -> None:
    assert describe_connect_error(exc) == reason


def test_describe_connect_error_finds_the_refusal_behind_anyios_wrapper() -> None:
    # anyio wraps the error of every address it tried in one OSError.
    wrapper = OSError("All connection attempts failed")
    wrapper.__cause__ = ExceptionGroup(
        "", [OSError(101, "Network is unreachable"), ConnectionRefusedError(111, "refused")]
    )
    assert describe_connect_error(wrapper) == "connection refused"


def test_describe_connect_error_names_a_tls_error() -> None:
    wrapper = OSError("handshake")
    tls = ssl.SSLError(1, "bad")
    tls.reason = "CERTIFICATE_VERIFY_FAILED"
    wrapper.__cause__ = tls
    assert describe_connect_error(wrapper) == "TLS error: CERTIFICATE_VERIFY_FAILED"


def returning(value: object) -> Callable[[object], Any]:
    """An address callable that returns ``value`` whatever the instance."""

    def address(_instance: object) -> Any:
        return value

    return address


@attrs.frozen
class Listening:
    host: str
    port: int


def test_address_of_reads_host_and_port() -> None:
    assert address_of(default_address, Listening("10.0.0.1", 8080)) == ("10.0.0.1", 8080)
    assert address_of(returning(("::1", 1)), object()) == ("::1", 1)


@pytest.mark.parametrize(
    ("address", "instance", "message"),
    [
        pytest.param(default_address, object(), "pass address=", id="no-attributes"),
        pytest.param(returning("10.0.0.1:80"), None, "not a (host, port) tuple", id="a-string"),
        pytest.param(returning(("", 80)), None, "not a non-empty str", id="empty-host"),
        pytest.param(returning(("h", 0)), None, "not an int from 1 to 65535", id="port-zero"),
        pytest.param(returning(("h", 65536)), None, "from 1 to 65535", id="port-too-big"),
        pytest.param(returning(("h", True)), None, "from 1 to 65535", id="port-bool"),
        pytest.param(returning(("h", "80")), None, "from 1 to 65535", id="port-str"),
    ],
)
def test_address_of_refuses_what_cannot_be_connected_to(
    address: Any, instance: object, message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        address_of(address, instance)


def missing_key(_instance: object) -> Any:
    addresses: dict[str, str] = {}
    return addresses["host"]


def bad_arithmetic(_instance: object) -> Any:
    return None + 1  # type: ignore[operator]  # pyright: ignore[reportOptionalOperand]


def missing_method(instance: object) -> Any:
    return instance.lookup()  # type: ignore[attr-defined]  # pyright: ignore[reportAttributeAccessIssue, reportUnknownMemberType, reportUnknownVariableType]


@pytest.mark.parametrize(
    ("failure", "kind"),
    [
        pytest.param(missing_key, "KeyError", id="key-error"),
        pytest.param(bad_arithmetic, "TypeError", id="type-error"),
        pytest.param(missing_method, "AttributeError", id="attribute-error"),
    ],
)
def test_address_of_turns_any_error_of_the_callable_into_a_value_error(
    failure: Callable[[object], Any], kind: str
) -> None:
    # The docstring promises a ValueError when "the callable failed": only AttributeError was
    # converted, a KeyError or TypeError escaped as itself.
    with pytest.raises(ValueError, match=f"cannot find the address .*\\({kind}: ") as caught:
        address_of(failure, object())
    assert type(caught.value.__cause__).__name__ == kind


def test_address_of_lets_base_exceptions_through() -> None:
    def interrupted(_instance: object) -> tuple[str, int]:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        address_of(interrupted, object())


def test_is_text() -> None:
    assert is_text("x")
    assert not is_text("")
    assert not is_text(b"x")
    assert not is_text(None)


# -- rolling.health ------------------------------------------------------------------------------


class ObjectCheck:
    async def check(self, instance: object) -> rolling.HealthResult:
        return rolling.HealthResult(healthy=instance == "good", reason="object says so")


async def function_check(instance: object) -> bool:
    return instance == "good"


def test_as_check_function_takes_objects_functions_and_none() -> None:
    checker = ObjectCheck()
    assert as_check_function(None) is None
    assert as_check_function(checker) == checker.check
    assert as_check_function(function_check) is function_check
    with pytest.raises(TypeError, match="not a health check: 3"):
        as_check_function(3)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("answer", "healthy", "reason"),
    [
        pytest.param(True, True, "", id="true"),
        pytest.param(False, False, "check returned False", id="false"),
        pytest.param((False, "disk full"), False, "disk full", id="tuple"),
        pytest.param(rolling.HealthResult(healthy=True), True, "", id="result"),
        pytest.param(
            "yes",
            False,
            "check returned 'yes', not a bool, a (bool, reason) tuple or a HealthResult",
            id="str",
        ),
        pytest.param((1, 2, 3), False, "not a bool, a (bool, reason) tuple", id="long-tuple"),
        # bool("no") is True: a tuple whose first item is not a bool is "anything else".
        pytest.param(
            ("no", "down"), False, "check returned ('no', 'down'), not a bool", id="str-1st"
        ),
        pytest.param((1, "up"), False, "check returned (1, 'up'), not a bool", id="int-1st"),
        pytest.param((True, "warming"), True, "warming", id="true-tuple"),
    ],
)
async def test_probe_once_understands_every_answer(
    answer: object, healthy: bool, reason: str
) -> None:
    async def check(_instance: object) -> object:
        return answer

    result = await probe_once(check, "i-1", 1.0)
    assert result.healthy is healthy
    assert reason in result.reason


@pytest.mark.anyio
async def test_probe_once_turns_a_timeout_and_an_exception_into_unhealthy() -> None:
    async def slow(_instance: object) -> bool:
        await anyio.sleep(10)
        return True  # pragma: no cover - cut short

    async def crashing(_instance: object) -> bool:
        raise LookupError("gone")

    started = anyio.current_time()
    assert await probe_once(slow, "i-1", 2.5) == rolling.HealthResult(
        healthy=False, reason="check timed out after 2.5s"
    )
    assert anyio.current_time() - started == pytest.approx(2.5)
    assert await probe_once(crashing, "i-1", 1.0) == rolling.HealthResult(
        healthy=False, reason="check raised LookupError: gone"
    )


@pytest.mark.anyio
async def test_probe_once_tells_the_checks_own_timeout_error_from_its_time_limit() -> None:
    # A check that raises TimeoutError at once (an upstream gateway timing out) was reported
    # as "check timed out after 30s", though the limit was nowhere near.
    async def gateway(_instance: object) -> bool:
        raise TimeoutError("upstream gateway timeout")

    started = anyio.current_time()
    assert await probe_once(gateway, "i-1", 30.0) == rolling.HealthResult(
        healthy=False, reason="check raised TimeoutError: upstream gateway timeout"
    )
    assert anyio.current_time() - started < 1

    def sync_gateway(_instance: object) -> Any:  # a plain function, as probe_once allows
        raise TimeoutError("sync")

    assert (await probe_once(sync_gateway, "i-1", 30.0)).reason == (
        "check raised TimeoutError: sync"
    )

    async def late(_instance: object) -> bool:
        await anyio.sleep(2)
        raise TimeoutError("too late")  # pragma: no cover - cut short by the limit

    assert (await probe_once(late, "i-1", 1.0)).reason == "check timed out after 1.0s"


@pytest.mark.anyio
async def test_probe_once_accepts_a_plain_function_and_a_health_check_object() -> None:
    check = as_check_function(ObjectCheck())
    assert check is not None
    assert (await probe_once(check, "good", 1.0)).healthy
    assert (await probe_once(lambda instance: instance == "good", "bad", 1.0)) == (
        rolling.HealthResult(healthy=False, reason="check returned False")
    )


@pytest.mark.anyio
async def test_probe_once_lets_cancellation_through() -> None:
    async def slow(_instance: object) -> bool:
        await anyio.sleep(10)
        return True  # pragma: no cover - cancelled

    with anyio.move_on_after(1) as scope:
        await probe_once(slow, "i-1", 5.0)
    assert scope.cancelled_caught


# -- rolling.validate ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("check", "value", "kwargs", "problem"),
    [
        pytest.param(check_int, 0, {"minimum": 1}, "must be >= 1, got 0", id="int-small"),
        pytest.param(check_int, True, {"minimum": 0}, "expected an int", id="int-bool"),
        pytest.param(check_int, 1.0, {"minimum": 0}, "expected an int", id="int-float"),
        pytest.param(check_int, None, {"minimum": 0}, "expected an int", id="int-none"),
        pytest.param(check_seconds, -1, {}, "must be >= 0", id="seconds-negative"),
        pytest.param(check_seconds, 0, {"allow_zero": False}, "must be > 0", id="seconds-zero"),
        pytest.param(check_seconds, float("nan"), {}, "must be finite", id="seconds-nan"),
        pytest.param(check_seconds, 10**400, {}, "must be finite", id="seconds-huge-int"),
        pytest.param(check_seconds, "5", {}, "expected a number of seconds", id="seconds-str"),
        pytest.param(check_seconds, None, {}, "expected a number of seconds", id="seconds-none"),
        pytest.param(check_callable, 3, {}, "expected a callable", id="callable"),
    ],
)
def test_checks_raise_config_error_naming_the_field(
    check: Any, value: object, kwargs: dict[str, Any], problem: str
) -> None:
    with pytest.raises(rolling.ConfigError, match=problem) as caught:
        check("MyDriver.option", value, **kwargs)
    assert caught.value.field == "MyDriver.option"
    assert caught.value.fix


def test_checks_accept_good_values_and_none_when_allowed() -> None:
    check_int("f", 3, minimum=3)
    check_int("f", None, minimum=3, allow_none=True)
    check_seconds("f", 0)
    check_seconds("f", 2.5, allow_zero=False)
    check_seconds("f", None, allow_none=True)
    check_callable("f", print)
    check_callable("f", None, allow_none=True)


@attrs.frozen(kw_only=True)
class PortCheckOptions:
    timeout: float = attrs.field(default=2.0, validator=validator(check_seconds, allow_zero=False))


def test_validator_names_class_and_attribute() -> None:
    assert PortCheckOptions(timeout=1).timeout == 1
    with pytest.raises(rolling.ConfigError, match="must be > 0") as caught:
        PortCheckOptions(timeout=0)
    assert caught.value.field == "PortCheckOptions.timeout"

"""The engine's fast builder of frozen attrs objects makes what the class makes, or uses it."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import attrs
import pytest

from rolling import InstanceOutcome, InstanceResult, _frozen_builder, _slot
from rolling._frozen_builder import builder_class, frozen_builder
from rolling._slot import Slot, instance_result

_RESULT_FIELDS = tuple(f.name for f in attrs.fields(InstanceResult))


def _kw(names: tuple[str, ...], values: tuple[Any, ...], *, strict: bool = True) -> dict[str, Any]:
    return dict(zip(names, values, strict=strict))


def _same(fast: Any, plain: Any) -> None:
    assert type(fast) is type(plain)
    assert fast == plain
    assert hash(fast) == hash(plain)
    assert repr(fast) == repr(plain)
    assert attrs.asdict(fast) == attrs.asdict(plain)
    assert pickle.loads(pickle.dumps(fast)) == plain  # noqa: S301 - our own bytes
    assert copy.copy(fast) == plain
    assert attrs.evolve(fast) == plain


@pytest.mark.parametrize(
    "values",
    [
        ("i-1", InstanceOutcome.UPDATED, "v1", "v2", "i-1", True, 1, "", 1.5, 2.5, ()),
        ("i-2", InstanceOutcome.FAILED, "v1", None, None, False, 3, "boom", None, None, ("x",)),
    ],
)
def test_an_instance_result_is_the_same_as_the_class_makes(values: tuple[Any, ...]) -> None:
    fast = frozen_builder(InstanceResult, _RESULT_FIELDS)(*values)
    _same(fast, InstanceResult(**_kw(_RESULT_FIELDS, values)))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        fast.reason = "changed"  # type: ignore[misc]


def test_the_names_may_come_in_any_order() -> None:
    names = tuple(reversed(_RESULT_FIELDS))
    values: tuple[Any, ...] = (
        (),
        2.0,
        1.0,
        "r",
        2,
        False,
        None,
        "v2",
        "v1",
        InstanceOutcome.SKIPPED,
        "i-3",
    )
    fast = frozen_builder(InstanceResult, names)(*values)
    _same(fast, InstanceResult(**_kw(names, values)))


def _fast(make: Any) -> bool:
    return bool(make.__qualname__ == "make")  # the generated function, not _by_class's


def test_the_engine_builds_results_the_fast_way() -> None:
    slot = Slot(key="a", position=0, old_version="v1", live=None, serving_at_start=False)
    assert _fast(_slot._make_result)
    _same(
        instance_result(slot),
        InstanceResult(
            id="a",
            outcome=InstanceOutcome.PENDING,
            old_version="v1",
            version=None,
            current_id=None,
            serving=False,
        ),
    )


@attrs.frozen
class _Validated:
    x: int = attrs.field(validator=attrs.validators.instance_of(int))


@attrs.frozen
class _Converted:
    x: int = attrs.field(converter=int)


@attrs.frozen
class _PostInit:
    x: int
    seen: list[int] = attrs.field(factory=list[int])

    def __attrs_post_init__(self) -> None:
        self.seen.append(self.x)


@attrs.frozen(cache_hash=True)
class _CachedHash:
    x: int


@attrs.frozen(slots=False)
class _NoSlots:
    x: int


@pytest.mark.parametrize("cls", [_Validated, _Converted, _CachedHash, _NoSlots])
def test_a_class_it_does_not_fit_is_called_itself(cls: type[Any]) -> None:
    make = frozen_builder(cls, ("x",))
    assert not _fast(make)
    made = make(7)
    assert made == cls(x=7)
    assert hash(made) == hash(cls(x=7))


def test_the_fallback_keeps_what_the_class_does() -> None:
    with pytest.raises(TypeError):
        frozen_builder(_Validated, ("x",))("seven")  # the validator still runs
    assert frozen_builder(_Converted, ("x",))("7").x == 7  # so does the converter
    made = frozen_builder(_PostInit, ("x", "seen"))(3, [])
    assert made.seen == [3]  # and __attrs_post_init__


def test_names_that_are_not_every_field_fall_back_to_the_class() -> None:
    make = frozen_builder(InstanceResult, _RESULT_FIELDS[:-1])  # strays left to its default
    assert not _fast(make)
    values: tuple[Any, ...] = ("i-4", InstanceOutcome.UPDATED, "v1", "v2", "i-4", True, 1, "")
    values += (0.0, 1.0)
    assert make(*values) == InstanceResult(**_kw(_RESULT_FIELDS, values, strict=False))
    with pytest.raises(ValueError, match="zip"):
        make(*values[:-1])  # one value short
    assert _fast(frozen_builder(InstanceResult, _RESULT_FIELDS))


def test_nothing_but_the_class_is_ever_seen() -> None:
    make = frozen_builder(InstanceResult, _RESULT_FIELDS)
    values = ("i-5", InstanceOutcome.UPDATED, "v1", "v2", "i-5", True, 1, "", 0.0, 1.0, ())
    made = make(*values)
    assert type(made) is InstanceResult
    assert made.__class__ is InstanceResult
    builder = builder_class(InstanceResult, _RESULT_FIELDS)
    assert builder is not None
    assert issubclass(builder, InstanceResult)
    assert not isinstance(made, builder)


@attrs.frozen
class _Pair:
    a: object
    b: object


class _Crossed(_Pair):
    """A builder whose store of ``b`` lands in ``a``: proving must catch it."""

    __slots__ = ()
    __setattr__ = object.__setattr__
    __delattr__ = object.__delattr__

    @property
    def b(self) -> object:
        return None

    @b.setter
    def b(self, value: object) -> None:
        _Pair.a.__set__(self, value)  # type: ignore[attr-defined]


def test_a_builder_that_puts_a_value_elsewhere_is_not_taken() -> None:
    assert not _frozen_builder._proved(_Crossed, _Pair, ("a", "b"))
    fitting = builder_class(_Pair, ("a", "b"))
    assert fitting is not None
    assert _frozen_builder._proved(fitting, _Pair, ("a", "b"))

"""A cheaper way to make instances of the engine's commonest frozen attrs classes.

Rules:

* The object made is an ordinary instance of the class: the same type and fields, equal
  (and hashing equal) to one made by calling the class, with the same repr. Only the way
  it is built differs. attrs' frozen ``__init__`` sets each field through
  ``object.__setattr__``, looked up per call (about 15k instructions for nine fields
  here); a rollout makes one :class:`~rolling.InstanceResult` per instance and, when
  someone listens, about eight phase events per instance.
* How: the object is first made as a private *builder* subclass that adds no slot and
  writes attributes the plain way (object's own ``__setattr__`` and ``__delattr__``, so
  each field is one slot store the interpreter specialises), then its ``__class__`` is
  set to the class. Python allows that assignment exactly when the two layouts are the
  same, which a subclass adding no slot guarantees; no code runs in between, so nothing
  ever sees the builder type. The one trace: the builder is listed by the class's
  ``__subclasses__()``.
* The fast path is taken only for a class it fits: slotted, every slot a field and every
  field named (in any order), no validator, no converter, no ``on_setattr`` hook, no
  ``__attrs_pre_init__`` or ``__attrs_post_init__``; and only once an object made both
  ways has proved the same, field for field (once per class: :func:`builder_class`).
  Anything else gets the class itself, called with keywords, so a change to the class
  can make building slower but never wrong.
  tests/test_frozen_builder.py holds the two to the same objects.
* The builder's function is generated source (as attrs generates its own ``__init__``):
  one slot store per field and no call, which a loop over the fields would not give.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import attrs

__all__ = ["builder_class", "frozen_builder"]

T = TypeVar("T")


def frozen_builder(cls: type[T], names: Sequence[str]) -> Callable[..., T]:
    """A function taking one positional argument per name, in order, returning a ``cls``."""
    names = tuple(names)
    builder = builder_class(cls, names)
    if builder is None:
        return _by_class(cls, names)
    arguments = ", ".join(f"a{k}" for k in range(len(names)))
    stores = "".join(f"    o.{name} = a{k}\n" for k, name in enumerate(names))
    source = (
        f"def make({arguments}):\n    o = new(builder)\n{stores}    o.__class__ = cls\n"
        "    return o\n"
    )
    namespace: dict[str, Any] = {"new": object.__new__, "builder": builder, "cls": cls}
    exec(compile(source, f"<frozen_builder {cls.__qualname__}>", "exec"), namespace)  # noqa: S102 - our own source, from the class's field names only
    make: Callable[..., T] = namespace["make"]
    return make


_new: Callable[[type], object] = object.__new__

_BUILDERS: dict[tuple[type, tuple[str, ...]], type | None] = {}


def builder_class(cls: type, names: tuple[str, ...]) -> type | None:
    """The builder subclass of ``cls`` (see the rules), proved; None if ``cls`` does not fit.

    One per class and names: code that writes the stores out itself (the machine's
    phase events) uses it as :func:`frozen_builder`'s function does.
    """
    key = (cls, names)
    if key not in _BUILDERS:
        _BUILDERS[key] = _new_builder(cls, names)
    return _BUILDERS[key]


def _new_builder(cls: type, names: tuple[str, ...]) -> type | None:
    if not _fits(cls, names):
        return None
    try:
        builder = type(
            f"_{cls.__name__}Builder",
            (cls,),
            {
                "__slots__": (),
                # Both: a type has one slot for setting and deleting attributes.
                "__setattr__": object.__setattr__,
                "__delattr__": object.__delattr__,
                "__module__": __name__,
            },
        )
    except TypeError:  # pragma: no cover - a class that cannot be subclassed
        return None
    return builder if _proved(builder, cls, names) else None


def _proved(builder: type, cls: type, names: tuple[str, ...]) -> bool:
    """Whether building through ``builder`` puts each value where ``cls`` does."""
    values = tuple(object() for _ in names)
    made = _new(builder)
    for name, value in zip(names, values, strict=True):
        setattr(made, name, value)
    try:
        made.__class__ = cls
    except TypeError:  # pragma: no cover - __class__ refused: not the same layout after all
        return False
    expected: object = cls(**dict(zip(names, values, strict=True)))
    fields = [f.name for f in attrs.fields(cls)]
    same: bool = type(made) is cls and made == expected
    return same and all(getattr(made, n) is getattr(expected, n) for n in fields)


def _by_class(cls: type[T], names: Sequence[str]) -> Callable[..., T]:
    """The plain way, through the class (the fallback)."""
    keys = tuple(names)

    def make(*values: Any) -> T:
        return cls(**dict(zip(keys, values, strict=True)))

    return make


def _fits(cls: type, names: Sequence[str]) -> bool:
    """Whether ``cls`` is the plain slotted attrs class the fast path was written for."""
    if not attrs.has(cls) or any(
        getattr(cls, hook, None) is not None
        for hook in ("__attrs_pre_init__", "__attrs_post_init__")
    ):
        return False
    fields = attrs.fields(cls)
    slots = {s for k in cls.__mro__ for s in k.__dict__.get("__slots__", ())} - {"__weakref__"}
    # Every slot must be a field: attrs' __init__ would set any other (a cached hash) too.
    if sorted(f.name for f in fields) != sorted(names) or slots != set(names):
        return False
    if any(
        f.validator is not None
        or f.converter is not None
        or f.on_setattr not in (None, attrs.setters.NO_OP)
        for f in fields
    ):
        return False
    # A slot is a member descriptor: an attribute set on the builder lands in it.
    return all(
        type(next((k.__dict__[n] for k in cls.__mro__ if n in k.__dict__), None)).__name__
        == "member_descriptor"
        for n in names
    )

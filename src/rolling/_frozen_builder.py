"""A cheaper way to make instances of the engine's commonest frozen attrs classes.

Rules:

* The object made is an ordinary instance of the class: the same type and fields, equal
  (and hashing equal) to one made by calling the class, with the same repr. Only the way
  it is built differs. attrs' frozen ``__init__`` sets each field through
  ``object.__setattr__``, looked up per call; writing each slot through its own member
  descriptor costs about a third of that, and a rollout makes one
  :class:`~rolling.InstanceResult` per instance (about a sixth of the engine's own cost
  per instance before this) and about eight phase events per instance when someone listens.
* The fast path is taken only for a class it fits: slotted, every field named (in any
  order), no validator, no converter, no ``on_setattr`` hook, no ``__attrs_post_init__``.
  Anything else gets the class itself, called with keywords, so a change to the class can
  make building slower but never wrong. tests/test_frozen_builder.py holds the two to the
  same objects.
* The builder's function is generated source (as attrs generates its own ``__init__``):
  one plain call per field, which a loop over the setters would double.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import attrs

__all__ = ["frozen_builder"]

T = TypeVar("T")


def frozen_builder(cls: type[T], names: Sequence[str]) -> Callable[..., T]:
    """A function taking one positional argument per name, in order, returning a ``cls``."""
    setters = _slot_setters(cls, names)
    if setters is None:
        return _by_class(cls, names)
    arguments = ", ".join(f"a{k}" for k in range(len(names)))
    body = "".join(f"    s{k}(o, a{k})\n" for k in range(len(names)))
    source = f"def make({arguments}):\n    o = new(cls)\n{body}    return o\n"
    namespace: dict[str, Any] = {"new": object.__new__, "cls": cls}
    namespace.update({f"s{k}": setter for k, setter in enumerate(setters)})
    exec(compile(source, f"<frozen_builder {cls.__qualname__}>", "exec"), namespace)  # noqa: S102 - our own source, built from field positions only
    make: Callable[..., T] = namespace["make"]
    return make


def _by_class(cls: type[T], names: Sequence[str]) -> Callable[..., T]:
    """The plain way, through the class (the fallback)."""
    keys = tuple(names)

    def make(*values: Any) -> T:
        return cls(**dict(zip(keys, values, strict=True)))

    return make


def _slot_setters(cls: type, names: Sequence[str]) -> list[Callable[[object, object], None]] | None:
    """The slots' own setters for ``names``, or None if the class is not plain enough."""
    if not attrs.has(cls) or any(
        getattr(cls, hook, None) is not None
        for hook in ("__attrs_pre_init__", "__attrs_post_init__")
    ):
        return None
    fields = attrs.fields(cls)
    slots = {s for k in cls.__mro__ for s in k.__dict__.get("__slots__", ())} - {"__weakref__"}
    # Every slot must be a field: attrs' __init__ would set any other (a cached hash) too.
    if sorted(f.name for f in fields) != sorted(names) or slots != set(names):
        return None
    if any(
        f.validator is not None
        or f.converter is not None
        or f.on_setattr not in (None, attrs.setters.NO_OP)
        for f in fields
    ):
        return None
    setters: list[Callable[[object, object], None]] = []
    for name in names:
        descriptor = next((k.__dict__[name] for k in cls.__mro__ if name in k.__dict__), None)
        # A slot is a member descriptor: its __set__ writes the slot, past the frozen
        # class's __setattr__ (which only refuses changes after construction).
        if type(descriptor).__name__ != "member_descriptor":
            return None
        setters.append(descriptor.__set__)  # type: ignore[union-attr]
    return setters

"""Building a fleet's worth of long-lived objects without the collector's full passes.

Rules:

* The machine makes one :class:`~rolling._slot.Slot` per instance as it starts and one
  :class:`~rolling.InstanceResult` per instance as it ends. Every object that outlives
  the young generations counts toward CPython's next full collection, so a loop making a
  hundred thousand of them sets off full passes over the whole heap in the middle of it
  (measured: a third of the collector's time in a 100k rollout, which was a quarter of
  the engine's), although nothing in it can be garbage yet.
* :func:`collector_paused` holds automatic collection for one such loop: a loop of plain
  constructors, with no ``await`` or ``yield`` inside, so no other code of this thread
  runs meanwhile; the next allocations after it start the collections it held back.
* It never turns on a collector someone else turned off: if ``gc.isenabled()`` is false
  when it starts, it does nothing. Another thread that allocates meanwhile only has its
  collection come a little later.
"""

from __future__ import annotations

import gc
from collections.abc import Generator
from contextlib import contextmanager

__all__ = ["collector_paused"]


@contextmanager
def collector_paused() -> Generator[None]:
    """Hold automatic garbage collection for the body; see the module docstring."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()

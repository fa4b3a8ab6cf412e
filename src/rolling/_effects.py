"""What the machine asks the runner to do: plain records, no behaviour.

The machine (:mod:`rolling._machine`) decides; the runner
(:mod:`rolling._runner`) carries out one of these at a time per program and
sends back what came of it. Classes are ``attrs.define`` with slots rather than
frozen: an effect is made for every driver call of every instance, so it has to
be cheap, and nothing mutates one after the machine hands it out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs

from ._steps import Gate

if TYPE_CHECKING:
    from ._judge import AnalysisJudge

__all__ = [
    "IDLE",
    "Call",
    "CheckGate",
    "Failed",
    "Idle",
    "Interrupted",
    "ListInstances",
    "LoadJournal",
    "Probe",
    "Record",
    "RunAnalysis",
    "SetFlagValue",
    "Sleep",
    "Spawn",
    "Survey",
    "Together",
    "WaitReady",
    "WaitStep",
    "checked_answer",
]


class Failed(Exception):  # noqa: N818 - it is an answer sent into a program, not an error to users
    """Thrown into a program: the effect it asked for failed, for ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Interrupted(Exception):  # noqa: N818 - as above
    """Thrown into a program: its wait was interrupted (a trigger, or cancellation)."""


@attrs.define
class Call:
    """Call a driver, router or hook method, shielded and bounded by ``effect_timeout``.

    Attributes:
        op: ``detach``, ``attach``, ``replace``, ``launch``, ``terminate``, or a hook name.
        args: The positional arguments.
        what: How failure messages name the call (``driver.replace``).
    """

    op: str
    args: tuple[Any, ...]
    what: str


@attrs.define
class Record:
    """Append ``record`` to the journal (fsync'd first when ``sync``)."""

    record: dict[str, Any]
    sync: bool = False


@attrs.define
class Sleep:
    """Sleep ``seconds`` (a back-off); interruptible when ``interruptible``."""

    seconds: float
    interruptible: bool = True


@attrs.define
class WaitReady:
    """Probe ``instance`` until it is ready under the readiness policy; answer (ok, reason)."""

    instance: Any
    interruptible: bool = True


@attrs.define
class Probe:
    """Probe ``instance`` once, shielded; answer whether it is healthy."""

    instance: Any


@attrs.define
class Survey:
    """Probe every instance once, concurrently; answer a list of bools in the same order."""

    instances: Sequence[Any]


@attrs.define
class ListInstances:
    """Ask the driver for its instances."""


@attrs.define
class LoadJournal:
    """Read every record of the journal."""


@attrs.define
class Spawn:
    """Start a program for each of ``units`` in a task of its own."""

    units: Sequence[Any]


@attrs.define
class Together:
    """Drive ``programs`` side by side, each in a task of its own; answer their return values.

    The main program waits for all of them. Each is driven like a unit program:
    its waits are interruptible, and cancellation throws ``Interrupted`` into it.
    """

    programs: Sequence[Any]
    slots: Sequence[Any] = ()
    """The slot each program works on, in the same order (for whoever tracks slots)."""


@attrs.define
class Idle:
    """Nothing to do until the machine wakes the main program (a unit ended, a control call)."""


IDLE = Idle()


@attrs.define
class WaitStep:
    """Wait ``seconds`` (None: forever) or until a promote or a stop.

    Answers True when a promote or a stop cut it short, False when its time passed.
    """

    seconds: float | None


@attrs.define
class CheckGate:
    """Ask ``gate`` (bounded by its timeout) unless promoted or stopped first.

    Answers ``(passed, reason)``, or None when a promote or a stop came first.
    """

    gate: Gate


@attrs.define
class RunAnalysis:
    """Measure the metrics of ``judge`` until it has a verdict, or a promote or a stop.

    Each answer goes to the machine (:meth:`Machine.measured
    <rolling._machine.Machine.measured>`), which judges it. Answers None.
    """

    judge: AnalysisJudge


@attrs.define
class SetFlagValue:
    """Set ``flag`` to ``value`` with ``setter`` (shielded, bounded by ``effect_timeout``).

    Answers ``(ok, reason)``: a setter that raises or takes too long did not set it.
    """

    setter: Any
    flag: str
    value: object


_ANSWERED = frozenset({"replace", "launch"})
"""The calls whose answer is an instance the machine goes on from."""


def checked_answer(effect: Call, answer: Any) -> Any:
    """What a call returned; a replace or launch must return an instance."""
    if effect.op in _ANSWERED and not (
        isinstance(getattr(answer, "id", None), str)
        and isinstance(getattr(answer, "version", None), str)
    ):
        # Nothing to track: the attempt fails, and the unit goes on from the instance it
        # asked about (a launch's instance, never named, is unknown).
        msg = f"{effect.what} returned {answer!r}, not an instance (str id and version)"
        raise Failed(msg)
    return answer


def check_answer(what: str, instance: Any, version: str, same_id: str | None) -> None:
    """A driver's answer must be what was asked for; trusting a wrong one hides a failure.

    writing-a-driver.md requires the version asked for, and the same id in place;
    the answer is tracked first (it is what stands there now), then the attempt fails.
    """
    if same_id is not None and instance.id != same_id:
        msg = f"{what} returned a different instance: asked id {same_id}, got id {instance.id}"
        raise Failed(msg)
    if instance.version != version:
        msg = f"{what} returned the wrong version: asked {version}, got {instance.version}"
        raise Failed(msg)

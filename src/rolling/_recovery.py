"""Recovery: read an unfinished rollout back from its journal and match it to the live fleet.

Pure functions, no I/O. The rules, in order:

1. Only the last rollout in the journal counts. If it has an ``end`` record it
   finished, and a new rollout starts from scratch (appending to the journal).
2. An unfinished rollout must be resumed with the same target: anything else
   is a :class:`~rolling.JournalError`, raised before the fleet is touched.
3. For every instance of the starting fleet (a *key*) the journal says what
   stands in its place now: the key itself, a launched instance that was
   swapped in, or nothing (terminated, its replacement not yet launched, or
   gone from the fleet). What nothing stands in for is launched again, or,
   if the driver cannot launch, reported (:mod:`rolling._resuming`, rule 5).
4. Traffic: an instance is taken as attached only if its last router call
   ended with a completed ``attach`` (or it was never detached). A detach or
   attach that started but never finished leaves it *in doubt*, treated as
   detached: it is re-attached once it answers its health check.
5. Launched instances that were never swapped in, and original instances that
   a launched one replaced but that were never terminated, are *extras*: they
   are terminated before the rollout goes on. Instances in the fleet that the
   journal never heard of are terminated too when the journal shows launches
   that started but never reported back (at most that many); otherwise they
   are an error, since this is probably the wrong journal. An extra *may be in
   traffic* unless its last router call was a completed ``detach`` (or it had
   none since its launch): such an extra is detached before it is terminated,
   whatever the strategy. A stranger never had a router call (its id reached
   no record), so it is not in traffic through this rollout.
6. A journal none of whose instances is in the fleet belongs to another fleet:
   an error.
7. If a ``rollback`` record exists, the rollout resumes its rollback;
   otherwise it resumes rolling forward.
8. ``step`` records name the steps (a blue-green's holds) that ended: a
   resumed canary goes on after the last of them, and after a ``promoted``
   record (a full promote) straight to its promotion (:mod:`rolling._paired`,
   rule 7); a resumed rolling update or batches does not hold again at the
   pauses, gates and analyses among them (:mod:`rolling._passes`, rule 7).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from ._journal import JournalError
from .typing import JournalRecord

__all__ = ["Reconciled", "Recovered", "reconcile", "recover"]


@attrs.frozen(kw_only=True)
class Recovered:
    """An unfinished rollout, as its journal tells it.

    Attributes:
        target: The version it was rolling to.
        fleet: ``(key, old version)`` for every instance it started with.
        stands: For each key, the id of what stands in its place (None: nothing).
        attached: For every instance id the journal touched, whether it is
            known to be in traffic (False also when in doubt).
        detached: Ids known to be out of traffic: their last router call was a
            completed detach, or they had none since their launch (rule 5).
        launched: Ids of instances it launched (and was told about).
        unreported_launches: Launches that started and never reported back.
        outcomes: The last outcome recorded for each key.
        rolling_back: Whether it had started rolling back.
        reason: Why it was rolling back, if it was.
        steps_done: How many of the steps (a blue-green's holds) had ended, in order.
        promoted: Whether a full promote had skipped the steps left.
    """

    target: str
    fleet: tuple[tuple[str, str], ...]
    stands: dict[str, str | None]
    attached: dict[str, bool]
    detached: frozenset[str]
    launched: frozenset[str]
    unreported_launches: int
    outcomes: dict[str, str]
    rolling_back: bool
    reason: str
    steps_done: int = 0
    promoted: bool = False


def recover(records: Sequence[JournalRecord], *, target: str) -> Recovered | None:  # noqa: C901, PLR0912 - one pass, one branch per record kind, in the order the rules list them
    """Read the last rollout back, or return None when there is nothing to resume."""
    start = None
    for index, record in enumerate(records):
        if record.get("t") == "begin":
            start = index
    if start is None:
        return None
    last = records[start:]
    if any(record.get("t") == "end" for record in last):
        return None
    begin = last[0]
    if begin.get("target") != target:
        raise JournalError(
            f"the journal holds an unfinished rollout to {begin.get('target')!r}, not {target!r}; "
            "resume it with that target, or start this one with a new journal"
        )
    try:
        fleet = tuple((str(key), str(version)) for key, version in begin["fleet"])
    except (KeyError, TypeError, ValueError):
        raise JournalError("the journal's begin record has no readable fleet") from None
    stands: dict[str, str | None] = {key: key for key, _ in fleet}
    attached: dict[str, bool] = {key: True for key, _ in fleet}
    detached: set[str] = set()
    launched: set[str] = set()
    swapped: set[str] = set()
    terminated: set[str] = set()
    pending_launches = 0
    outcomes: dict[str, str] = {}
    rolling_back = False
    reason = ""
    steps_done = 0
    promoted = False
    for record in last[1:]:
        kind = record.get("t")
        if kind == "fx":
            pending_launches += _effect(record, attached, detached, launched, terminated)
        elif kind == "swap":
            stands[str(record["k"])] = None if record.get("i") is None else str(record["i"])
            if record.get("i") is not None:
                swapped.add(str(record["i"]))
        elif kind == "unit":
            outcomes[str(record["k"])] = str(record["o"])
        elif kind == "rollback":
            rolling_back = True
            reason = str(record.get("reason", ""))
        elif kind == "step":
            steps_done = max(steps_done, int(record["i"]) + 1)
        elif kind == "promoted":
            promoted = True
    return Recovered(
        target=target,
        fleet=fleet,
        stands=stands,
        attached=attached,
        detached=frozenset(detached),
        launched=frozenset(launched - terminated),
        unreported_launches=max(0, pending_launches),
        outcomes=outcomes,
        rolling_back=rolling_back,
        reason=reason,
        steps_done=steps_done,
        promoted=promoted,
    )


def _effect(
    record: JournalRecord,
    attached: dict[str, bool],
    detached: set[str],
    launched: set[str],
    terminated: set[str],
) -> int:
    """Apply one effect record; return the change in launches not reported back."""
    op, stage, instance = record.get("op"), record.get("s"), record.get("i")
    if op == "launch":
        if stage == "start":
            return 1
        if stage == "done" and record.get("n"):
            new_id = str(record["n"][0])
            launched.add(new_id)
            attached[new_id] = False
            # A launched instance receives no traffic until rolling attaches it.
            detached.add(new_id)
        return -1 if stage in {"done", "fail"} else 0
    if instance is None:
        return 0
    key = str(instance)
    if op == "detach":
        attached[key] = False
        # Only a detach that returned took it out; one cut off or failed may not have.
        if stage == "done":
            detached.add(key)
        else:
            detached.discard(key)
    elif op == "attach":
        attached[key] = stage == "done"
        # An attach that started may have put it in, whether or not it returned.
        detached.discard(key)
    elif op == "terminate" and stage == "done":
        terminated.add(key)
        attached[key] = False
        detached.add(key)
    return 0


@attrs.frozen(kw_only=True)
class Reconciled:
    """The journal matched to the live fleet.

    Attributes:
        live: For each key, the live instance standing in its place, or None.
        attached: For each key, whether that instance is in traffic.
        doomed: Live instances to terminate before going on (extras, strangers).
        in_traffic: Ids of the doomed that may be in traffic: each is detached
            before it is terminated (rule 5).
    """

    live: dict[str, Any]
    attached: dict[str, bool]
    doomed: tuple[Any, ...]
    in_traffic: frozenset[str] = frozenset()


def reconcile(recovered: Recovered, instances: Sequence[Any]) -> Reconciled:
    """Match ``recovered`` to the instances the driver lists now."""
    by_id = {instance.id: instance for instance in instances}
    known = {key for key, _ in recovered.fleet} | set(recovered.launched)
    if instances and not known & by_id.keys():
        raise JournalError(
            "none of the instances in the journal is in this fleet: the journal belongs to "
            "another fleet; start this rollout with a journal of its own"
        )
    live: dict[str, Any] = {}
    attached: dict[str, bool] = {}
    standing: set[str] = set()
    for key, _ in recovered.fleet:
        current = recovered.stands.get(key)
        instance = by_id.get(current) if current is not None else None
        live[key] = instance
        if instance is not None:
            standing.add(instance.id)
            attached[key] = recovered.attached.get(instance.id, True)
        else:
            attached[key] = False
    extras = [by_id[i] for i in sorted(recovered.launched) if i in by_id and i not in standing]
    # An original instance that a launched one replaced, killed before it was terminated.
    extras += [by_id[key] for key, _ in recovered.fleet if key in by_id and key not in standing]
    strangers = [i for i in instances if i.id not in known]
    if len(strangers) > recovered.unreported_launches:
        names = ", ".join(sorted(s.id for s in strangers)[:5])
        raise JournalError(
            f"the fleet has instances this rollout never saw ({names}); "
            "is this the right journal for this fleet?"
        )
    # Strangers are left out: no record names them, so no router call of ours reached them.
    in_traffic = frozenset(i.id for i in extras if i.id not in recovered.detached)
    return Reconciled(
        live=live, attached=attached, doomed=(*extras, *strangers), in_traffic=in_traffic
    )

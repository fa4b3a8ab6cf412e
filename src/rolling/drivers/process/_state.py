"""The state file: the fleet of a :class:`ProcessDriver` on disk, for the next controller.

The file is JSON, rewritten whole and atomically on every change. Each listed
instance has its id, version, host, port, pid and start time (clock ticks
after boot, from ``/proc/<pid>/stat``: a reused pid has another one), and the
token its process carries in its environment. A launch is *announced* (listed
with its token but no pid) before its process exists, and an instance being
replaced lists the version and token of its new process under ``"next"``, so
that a controller killed at any moment leaves a file from which every process
can be found (``_proc`` looks them up).

Reading and writing are pure file handling; nothing here looks at processes.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import Final, TypeVar

import attrs

from ._types import ProcessDriverError

__all__ = ["STATE_FORMAT", "Entry", "dump_state", "read_state", "write_state"]

STATE_FORMAT: Final = 1
"""The version of the state file's layout."""

_T = TypeVar("_T")


@attrs.frozen
class Entry:
    """One instance as the state file lists it."""

    id: str
    version: str
    host: str
    port: int
    pid: int | None
    """None for a launch announced but never recorded."""
    start: int | None
    """None when the driver knew of no process for it (a failed restart)."""
    token: str | None
    next_version: str | None = None
    """Set while the instance was being replaced: the version being started."""
    next_token: str | None = None


def dump_state(entries: Iterable[Entry], next_index: int) -> str:
    """The text of a state file listing ``entries``, with ``next_index`` the next free index."""
    instances: list[dict[str, object]] = []
    for entry in entries:
        item: dict[str, object] = {
            "id": entry.id,
            "version": entry.version,
            "host": entry.host,
            "port": entry.port,
            "pid": entry.pid,
            "start": entry.start,
            "token": entry.token,
        }
        if entry.next_version is not None:
            item["next"] = {"version": entry.next_version, "token": entry.next_token}
        instances.append(item)
    state = {"format": STATE_FORMAT, "next": next_index, "instances": instances}
    return json.dumps(state, indent=1) + "\n"


def read_state(path: Path, *, tidy: bool = True) -> tuple[list[Entry], int]:
    """The instances a state file lists and the next free index (nothing for a missing file).

    With ``tidy`` (the driver holds the file's lock), the temporary files of writes cut
    short are removed; a reader without the lock must not, since they may be a write
    under way.
    """
    for stale in path.parent.glob(f".{path.name}.*.tmp") if tidy else ():
        stale.unlink(missing_ok=True)  # a write cut short by a kill; the file itself is whole
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return [], 0
    except (OSError, ValueError) as exc:
        raise ProcessDriverError(
            f"{path} is not a ProcessDriver state file ({exc}); move it aside and reconcile"
            " the processes by hand"
        ) from None
    try:
        if data["format"] != STATE_FORMAT:
            raise ProcessDriverError(
                f"{path} has format {data['format']!r}; this driver reads {STATE_FORMAT}"
            )
        entries = [
            Entry(
                id=_typed(item["id"], str),
                version=_typed(item["version"], str),
                host=_typed(item["host"], str),
                port=_typed(item["port"], int),
                pid=None if item["pid"] is None else _typed(item["pid"], int),
                start=None if item["start"] is None else _typed(item["start"], int),
                token=None if item["token"] is None else _typed(item["token"], str),
                next_version=None if "next" not in item else _typed(item["next"]["version"], str),
                next_token=None if "next" not in item else _typed(item["next"]["token"], str),
            )
            for item in data["instances"]
        ]
        next_index = _typed(data["next"], int)
    except (KeyError, TypeError) as exc:
        raise ProcessDriverError(
            f"{path} is not a ProcessDriver state file (bad or missing {exc}); move it aside"
            " and reconcile the processes by hand"
        ) from None
    return entries, next_index


def _typed(value: object, kind: type[_T]) -> _T:
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    raise TypeError(repr(value))


def write_state(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically and durably (temporary file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    temporary.replace(path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power loss
    finally:
        os.close(directory)

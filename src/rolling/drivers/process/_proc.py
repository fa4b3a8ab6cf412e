"""Reading ``/proc``: whether a process runs, its process group, and finding lost processes.

Linux only. These read small procfs files and never signal or start anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import attrs

from ._state import Entry

__all__ = [
    "TOKEN_VARIABLE",
    "ProcStat",
    "all_pids",
    "find_processes",
    "find_tokens",
    "group_members",
    "parse_stat",
    "proc_stat",
    "start_time",
]

TOKEN_VARIABLE: Final = "ROLLING_PROCESS_TOKEN"  # noqa: S105 - a variable name, not a secret
"""Environment variable that marks each process started with a ``state_file``.

Its value is a random token written to the state file *before* the process
starts, so a process whose pid never reached the file (the controller died in
between) is still found, in ``/proc/<pid>/environ``, and adopted.
"""


@attrs.frozen
class ProcStat:
    """What ``/proc/<pid>/stat`` says of a process: its state letter, group and start time."""

    state: str
    group: int
    start: int


def proc_stat(pid: int) -> ProcStat | None:
    """State, process group and start time (clock ticks after boot) of ``pid``, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:  # noqa: PTH123 - one small procfs read
            text = file.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return parse_stat(text)


def parse_stat(text: bytes) -> ProcStat:
    """Parse the contents of a ``/proc/<pid>/stat`` file."""
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    fields = text.rpartition(b")")[2].split()
    return ProcStat(state=fields[0].decode(), group=int(fields[2]), start=int(fields[19]))


def start_time(pid: int) -> int | None:
    stat = proc_stat(pid)
    return None if stat is None else stat.start


def group_members(group: int) -> list[int]:
    """Pids of the processes of ``group`` that have not exited (zombies excluded)."""
    members: list[int] = []
    for pid in all_pids():
        stat = proc_stat(pid)
        if stat is not None and stat.group == group and stat.state != "Z":
            members.append(pid)
    return members


def all_pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def find_processes(entries: list[Entry]) -> dict[str, tuple[int, int, str]]:
    """Locate each entry's running process: ``id -> (pid, start time, version)``.

    A recorded pid counts only with the recorded start time (else the pid was
    reused) and if it is not a zombie. A process announced but never recorded
    (the controller died while starting it: a launch, or the new process of a
    replace) is looked up by its token in the environment of every process.
    """
    found: dict[str, tuple[int, int, str]] = {}
    tokens: dict[bytes, tuple[str, str]] = {}
    for entry in entries:
        if entry.next_token is not None and entry.next_version is not None:
            tokens[f"{TOKEN_VARIABLE}={entry.next_token}".encode()] = (
                entry.id,
                entry.next_version,
            )
        if entry.pid is None:
            if entry.token is not None:
                tokens[f"{TOKEN_VARIABLE}={entry.token}".encode()] = (entry.id, entry.version)
            continue
        stat = proc_stat(entry.pid)
        if stat is not None and stat.state != "Z" and stat.start == entry.start:
            found[entry.id] = (entry.pid, stat.start, entry.version)
    if tokens:
        found.update(find_tokens(tokens))  # a replace's new process wins over its old one
    return found


def find_tokens(tokens: dict[bytes, tuple[str, str]]) -> dict[str, tuple[int, int, str]]:
    """Processes whose environment holds one of ``tokens`` (``VARIABLE=token -> id, version``)."""
    found: dict[str, tuple[int, int, str]] = {}
    for pid in all_pids():
        try:
            with open(f"/proc/{pid}/environ", "rb") as file:  # noqa: PTH123 - procfs
                environment = file.read().split(b"\0")
        except OSError:  # exited meanwhile, or not ours to read
            continue
        for variable in environment:
            key = tokens.get(variable)
            stat = None if key is None else proc_stat(pid)
            if key is not None and stat is not None and stat.state != "Z":
                found[key[0]] = (pid, stat.start, key[1])
    return found

"""The process driver's state file and /proc parsing, alone: pure functions, no processes started.

tests/test_process_driver_adopt.py and tests/test_kill_sweep.py check what these are for with
real processes and killed controllers; here each piece is checked on its own, including the
damaged files a crash or a person could leave behind.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rolling.drivers.process import ProcessDriverError
from rolling.drivers.process._proc import (
    ProcStat,
    find_processes,
    parse_stat,
    proc_stat,
    start_time,
)
from rolling.drivers.process._state import (
    STATE_FORMAT,
    Entry,
    dump_state,
    read_state,
    write_state,
)

# Hex strings like the driver's tokens (which mark processes, and guard nothing).
TOKENS = ["ab12", "cd34", "ef56", "0099"]

RUNNING = Entry(
    id="p-0", version="v1", host="127.0.0.1", port=8001, pid=4242, start=99, token=TOKENS[0]
)
REPLACING = Entry(
    id="p-1",
    version="v1",
    host="127.0.0.1",
    port=8002,
    pid=4243,
    start=100,
    token=TOKENS[1],
    next_version="v2",
    next_token=TOKENS[2],
)
ANNOUNCED = Entry(
    id="p-2", version="v2", host="::1", port=8003, pid=None, start=None, token=TOKENS[3]
)
DEAD = Entry(id="p-3", version="v1", host="127.0.0.1", port=8004, pid=77, start=None, token=None)


# -- writing and reading -------------------------------------------------------------------------


def test_state_round_trips_every_kind_of_entry(tmp_path: Path) -> None:
    path = tmp_path / "fleet.json"
    entries = [RUNNING, REPLACING, ANNOUNCED, DEAD]
    write_state(path, dump_state(entries, 7))
    assert read_state(path) == (entries, 7)


def test_state_file_layout_is_stable() -> None:
    # The layout is what a controller of another release reads: keys and nesting must not move.
    data = json.loads(dump_state([RUNNING, REPLACING, ANNOUNCED], 3))
    assert data == {
        "format": STATE_FORMAT,
        "next": 3,
        "instances": [
            {
                "id": "p-0",
                "version": "v1",
                "host": "127.0.0.1",
                "port": 8001,
                "pid": 4242,
                "start": 99,
                "token": "ab12",
            },
            {
                "id": "p-1",
                "version": "v1",
                "host": "127.0.0.1",
                "port": 8002,
                "pid": 4243,
                "start": 100,
                "token": "cd34",
                "next": {"version": "v2", "token": "ef56"},
            },
            {
                "id": "p-2",
                "version": "v2",
                "host": "::1",
                "port": 8003,
                "pid": None,
                "start": None,
                "token": "0099",
            },
        ],
    }
    assert STATE_FORMAT == 1


NAMES = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=12)
OPTIONAL_INTS = st.none() | st.integers(min_value=0, max_value=2**40)
OPTIONAL_TOKENS = st.none() | st.text("0123456789abcdef", min_size=16, max_size=16)


@st.composite
def entries(draw: st.DrawFn) -> Entry:
    replacing = draw(st.booleans())
    return Entry(
        id=draw(NAMES),
        version=draw(NAMES),
        host=draw(st.sampled_from(["127.0.0.1", "::1", "10.0.0.7"])),
        port=draw(st.integers(min_value=1, max_value=65535)),
        pid=draw(OPTIONAL_INTS),
        start=draw(OPTIONAL_INTS),
        token=draw(OPTIONAL_TOKENS),
        next_version=draw(NAMES) if replacing else None,
        next_token=draw(st.text("0123456789abcdef", min_size=16, max_size=16))
        if replacing
        else None,
    )


@given(listed=st.lists(entries(), max_size=8), next_index=st.integers(0, 10**6))
def test_any_fleet_reads_back_as_written(
    tmp_path_factory: pytest.TempPathFactory, listed: list[Entry], next_index: int
) -> None:
    path = tmp_path_factory.mktemp("state") / "fleet.json"
    write_state(path, dump_state(listed, next_index))
    assert read_state(path) == (listed, next_index)


def test_missing_file_is_an_empty_fleet(tmp_path: Path) -> None:
    assert read_state(tmp_path / "never-written.json") == ([], 0)


def test_write_is_private_whole_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "fleet.json"
    write_state(path, dump_state([RUNNING], 1))
    write_state(path, dump_state([RUNNING, DEAD], 2))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["fleet.json"]
    assert read_state(path) == ([RUNNING, DEAD], 2)


def test_read_removes_temporary_files_of_a_write_cut_short(tmp_path: Path) -> None:
    path = tmp_path / "fleet.json"
    write_state(path, dump_state([RUNNING], 1))
    stale = tmp_path / f".fleet.json.{os.getpid()}.0badcafe.tmp"
    stale.write_text('{"format": 1, "next"')  # the kill came mid-write
    other = tmp_path / ".other.json.1.2.tmp"  # another file's temporary: not ours to remove
    other.write_text("")
    # A reader without the lock (`rolling plan`) leaves it: it may be a write under way.
    assert read_state(path, tidy=False) == ([RUNNING], 1)
    assert stale.exists()
    assert read_state(path) == ([RUNNING], 1)
    assert not stale.exists()
    assert other.exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("not json", "is not a ProcessDriver state file", id="not-json"),
        pytest.param('{"format": 1, "next": 0, "instan', "is not a ProcessDriver", id="torn"),
        pytest.param(
            '{"format": 2, "next": 0, "instances": []}',
            "has format 2; this driver reads 1",
            id="newer-format",
        ),
        pytest.param('{"next": 0, "instances": []}', "bad or missing 'format'", id="no-format"),
        pytest.param('{"format": 1, "instances": []}', "bad or missing 'next'", id="no-next"),
        pytest.param('{"format": 1, "next": 0}', "bad or missing 'instances'", id="no-instances"),
        pytest.param(
            '{"format": 1, "next": true, "instances": []}', "bad or missing", id="bool-index"
        ),
        pytest.param("[1, 2]", "bad or missing", id="a-list"),
    ],
)
def test_damaged_files_are_refused_with_what_to_do(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "fleet.json"
    path.write_text(text)
    with pytest.raises(ProcessDriverError, match=message) as caught:
        read_state(path)
    assert str(path) in str(caught.value)
    if "format 2" not in message:
        assert "move it aside and reconcile" in str(caught.value)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id", 3),
        ("version", None),
        ("host", ["127.0.0.1"]),
        ("port", "8001"),
        ("port", True),  # a bool is an int to Python, never a port
        ("pid", 4.5),
        ("start", "99"),
        ("token", 12),
    ],
)
def test_entries_with_a_wrongly_typed_field_are_refused(
    tmp_path: Path, field: str, value: object
) -> None:
    instance = json.loads(dump_state([RUNNING], 1))["instances"][0]
    instance[field] = value
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps({"format": 1, "next": 1, "instances": [instance]}))
    with pytest.raises(ProcessDriverError, match="is not a ProcessDriver state file"):
        read_state(path)


def test_entries_missing_a_field_are_refused(tmp_path: Path) -> None:
    instance = json.loads(dump_state([REPLACING], 1))["instances"][0]
    del instance["next"]["token"]
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps({"format": 1, "next": 1, "instances": [instance]}))
    with pytest.raises(ProcessDriverError, match="bad or missing 'token'"):
        read_state(path)


# -- /proc ---------------------------------------------------------------------------------------


def stat_line(pid: int, comm: str, state: str, group: int, start: int) -> bytes:
    # Fields after the command name: state, ppid, pgrp, session, ... starttime is field 22.
    rest = [state, "1", str(group), str(group), "0", "-1", *["0"] * 13, str(start), "0", "0"]
    return f"{pid} ({comm}) {' '.join(rest)}\n".encode()


@pytest.mark.parametrize(
    "comm",
    ["python3", "my app", "a) S 1 2 3 (", "))", "(", ""],
)
def test_stat_parsing_survives_any_command_name(comm: str) -> None:
    parsed = parse_stat(stat_line(123, comm, "S", 120, 987654))
    assert parsed == ProcStat(state="S", group=120, start=987654)


def test_stat_parsing_reads_a_zombie() -> None:
    assert parse_stat(stat_line(5, "gone", "Z", 5, 1)).state == "Z"


def test_own_stat_matches_the_kernel() -> None:
    # This test's own process: no new process needed.
    mine = proc_stat(os.getpid())
    assert mine is not None
    assert mine.group == os.getpgrp()
    assert mine.state in {"R", "S"}
    assert start_time(os.getpid()) == mine.start


def test_a_pid_that_does_not_exist_has_no_stat() -> None:
    # Beyond the kernel's pid limit, so never in use.
    limit = int(Path("/proc/sys/kernel/pid_max").read_text())
    assert proc_stat(limit + 1) is None
    assert start_time(limit + 1) is None


def test_find_processes_trusts_a_pid_only_with_its_start_time() -> None:
    me, start = os.getpid(), start_time(os.getpid())
    assert start is not None
    listed = [
        Entry(id="same", version="v1", host="h", port=1, pid=me, start=start, token=None),
        Entry(id="reused", version="v1", host="h", port=2, pid=me, start=start + 1, token=None),
        Entry(id="never", version="v1", host="h", port=3, pid=None, start=None, token=None),
    ]
    assert find_processes(listed) == {"same": (me, start, "v1")}


def test_find_processes_looks_up_announced_tokens_in_environments() -> None:
    # A token nobody carries finds nothing; the lookup reads every /proc/<pid>/environ it may.
    listed = [
        Entry(id="lost", version="v2", host="h", port=1, pid=None, start=None, token="f" * 16),
        Entry(
            id="half",
            version="v1",
            host="h",
            port=2,
            pid=None,
            start=None,
            token=None,
            next_version="v2",
            next_token="e" * 16,
        ),
    ]
    assert find_processes(listed) == {}

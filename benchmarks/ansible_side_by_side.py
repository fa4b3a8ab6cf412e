# Ansible side by side: the same fleet rolled by `ansible-playbook` with `serial` and by rolling.
#
# A fleet of N local hosts (24 by default). Updating one host is a sleep of its own scripted
# duration (uniform 0.5 to 2.0 s, seeded), then a readiness wait (a 0.2 s sleep). Rolled:
#
# * by ansible-playbook: `serial: k`, `gather_facts: false`, `ansible_connection=local`, two
#   `command` tasks per host (`sleep <duration>`, then `sleep 0.2`), forks = k;
# * by rolling with Batches(k) (lockstep, Ansible's `serial` semantics);
# * by rolling with RollingUpdate(max_unavailable=k) (a sliding window, the same unavailability);
#
# rolling's driver sleeps in-process (asyncio, real time), then again running the same `sleep`
# commands as child processes, as Ansible does (--no-processes skips those rows). The bound is
# what no schedule with k slots can beat: max(sum(d + 0.2) / k, max(d + 0.2)). All times are
# wall seconds from this one run; the ratios are Ansible's time over rolling's.
#
# ansible-core is installed by `nox -s bench` only; it is never a dependency of the library.
# Without ansible-playbook this script says so and exits with status 2 (no silent skip).
#
#     python benchmarks/ansible_side_by_side.py
#     python benchmarks/ansible_side_by_side.py --hosts 24 --serial 4 --no-processes

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import anyio
from _report import command, machine, table

from rolling import Batches, Readiness, RollingUpdate, Rollout, RolloutStatus

READINESS_WAIT = 0.2
TASKS = 2  # per host: the update, then the readiness wait
RECAP_LINE = re.compile(r"^(?P<host>h\d+)\s+:\s+(?P<counts>ok=.*)$", re.MULTILINE)
DESCRIPTION = "Roll the same fleet with ansible-playbook (serial) and with rolling."

PLAYBOOK = """\
- name: Rolling update, {serial} at a time
  hosts: fleet
  gather_facts: false
  serial: {serial}
  tasks:
    - name: Update (a sleep of the host's scripted duration)
      ansible.builtin.command: "sleep {{{{ duration }}}}"
    - name: Readiness wait
      ansible.builtin.command: "sleep {readiness}"
"""


class Host:
    __slots__ = ("duration", "id", "version")

    def __init__(self, id_: str, duration: float) -> None:
        self.id = id_
        self.version = "v1"
        self.duration = duration


class SleepDriver:
    """Updating a host sleeps its duration, then waits READINESS_WAIT for it to be ready."""

    def __init__(self, durations: Sequence[float], *, processes: bool) -> None:
        self.hosts = [Host(f"h{k:02}", d) for k, d in enumerate(durations)]
        self.processes = processes

    async def list_instances(self) -> list[Host]:
        return self.hosts

    async def _sleep(self, seconds: float) -> None:
        if self.processes:
            await anyio.run_process(["sleep", f"{seconds:.3f}"])
        else:
            await anyio.sleep(seconds)

    async def replace(self, instance: Host, version: str) -> Host:
        await self._sleep(instance.duration)
        await self._sleep(READINESS_WAIT)
        instance.version = version
        return instance


def find_ansible(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "ansible-playbook"
    if beside.exists():
        return str(beside)
    return shutil.which("ansible-playbook")


def run_ansible(playbook_cmd: str, durations: Sequence[float], serial: int) -> float:
    """Roll the fleet with ansible-playbook; return its wall time, after checking its results."""
    with tempfile.TemporaryDirectory(prefix="rolling-bench-ansible-") as tmp:
        root = Path(tmp)
        hosts = "\n".join(f"h{k:02} duration={d:.3f}" for k, d in enumerate(durations))
        (root / "inventory.ini").write_text(
            f"[fleet]\n{hosts}\n\n[fleet:vars]\nansible_connection=local\n"
            f"ansible_python_interpreter={sys.executable}\n"
        )
        (root / "playbook.yml").write_text(PLAYBOOK.format(serial=serial, readiness=READINESS_WAIT))
        env = {
            **os.environ,
            "ANSIBLE_HOME": str(root / "home"),
            "ANSIBLE_LOCAL_TEMP": str(root / "tmp"),
            "ANSIBLE_REMOTE_TEMP": str(root / "remote-tmp"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
        }
        argv = [
            playbook_cmd,
            "-i",
            str(root / "inventory.ini"),
            "--forks",
            str(serial),
            str(root / "playbook.yml"),
        ]
        started = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)  # noqa: S603 - our own command line
        elapsed = time.perf_counter() - started
    if done.returncode:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise SystemExit(f"ansible-playbook failed (exit {done.returncode}):\n{tail}")
    # The PLAY RECAP: one line per host, "h00 : ok=2 changed=2 unreachable=0 failed=0 ...".
    recap = {
        match["host"]: dict(pair.split("=") for pair in match["counts"].split())
        for match in RECAP_LINE.finditer(done.stdout)
    }
    expected = {"ok": str(TASKS), "changed": str(TASKS), "unreachable": "0", "failed": "0"}
    bad = {h: c for h, c in recap.items() if any(c.get(k) != v for k, v in expected.items())}
    if len(recap) != len(durations) or bad:
        raise SystemExit(f"ansible-playbook did not run both tasks on every host: {bad or recap}")
    return elapsed


async def roll(
    durations: Sequence[float],
    strategy: Batches | RollingUpdate,
    processes: bool,  # noqa: FBT001 - passed positionally by anyio.run
) -> float:
    driver = SleepDriver(durations, processes=processes)
    rollout = Rollout(driver, "v2", strategy=strategy, readiness=Readiness())
    started = time.perf_counter()
    result = await rollout.run()
    elapsed = time.perf_counter() - started
    if result.status is not RolloutStatus.SUCCEEDED:
        raise SystemExit(f"rolling did not succeed: {result.status} {result.reason}")
    return elapsed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=DESCRIPTION)
    parser.add_argument("--hosts", type=int, default=24)
    parser.add_argument("--serial", type=int, default=4, help="Ansible's serial, rolling's k")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument(
        "--no-processes",
        dest="processes",
        action="store_false",
        help="skip the rows where rolling's driver runs `sleep` as child processes",
    )
    parser.add_argument("--ansible-playbook", help="path to ansible-playbook (default: PATH)")
    parser.add_argument("--quick", action="store_true", help="accepted for nox; no change")
    args = parser.parse_args(argv)
    playbook_cmd = find_ansible(args.ansible_playbook)
    if playbook_cmd is None:
        print(
            "ansible-playbook not found: install ansible-core (`nox -s bench` does) or pass"
            " --ansible-playbook PATH. This benchmark cannot run without it.",
            file=sys.stderr,
        )
        return 2
    rng = random.Random(args.seed)
    durations = [round(rng.uniform(0.5, 2.0), 3) for _ in range(args.hosts)]
    k = args.serial
    work = [d + READINESS_WAIT for d in durations]
    longest = max(work)
    bound = max(sum(work) / k, longest)
    lockstep = sum(max(work[start : start + k]) for start in range(0, len(work), k))
    print(f"Ansible side by side: {args.hosts} local hosts, serial / max_unavailable = {k}")
    print(f"machine: {machine()}")
    print(f"command: {command()}")
    version = subprocess.run(  # noqa: S603 - our own command line
        [playbook_cmd, "--version"], capture_output=True, text=True, check=True
    ).stdout.splitlines()[0]
    print(f"ansible: {version}")
    kinds = [False, True] if args.processes else [False]
    print(f"  ansible-playbook, serial: {k} ...", flush=True)
    ansible = run_ansible(playbook_cmd, durations, k)
    rows: list[list[object]] = [
        [
            "ansible-playbook, serial",
            "`sleep` processes",
            f"{ansible:.2f}",
            f"{ansible / bound:.2f}",
            "1.00",
        ]
    ]
    strategies: list[tuple[str, Batches | RollingUpdate]] = [
        (f"rolling, Batches({k})", Batches(k)),
        (f"rolling, RollingUpdate({k})", RollingUpdate(max_unavailable=k)),
    ]
    for processes in kinds:
        kind = "`sleep` processes" if processes else "in-process sleeps"
        for name, strategy in strategies:
            print(f"  {name}, {kind} ...", flush=True)
            elapsed = anyio.run(roll, durations, strategy, processes)
            rows.append(
                [name, kind, f"{elapsed:.2f}", f"{elapsed / bound:.2f}", f"{ansible / elapsed:.2f}"]
            )
    header = ["tool", "updates run as", "wall (s)", "/ bound", "Ansible's time / this"]
    title = (
        f"Wall time; bound max(sum(d + {READINESS_WAIT}) / {k}, max(d + {READINESS_WAIT}))"
        f" = {bound:.2f} s; d uniform(0.5, 2.0) s, seed {args.seed}, sum {sum(durations):.1f} s"
    )
    print(table(title, header, rows))
    print(
        f"\nLockstep batches of {k} in inventory order cannot beat {lockstep:.2f} s (the sum of"
        " each batch's slowest host): that is the floor for both `serial` and Batches."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

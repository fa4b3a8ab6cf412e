"""A Podman engine for tests: its own storage, an API service on a temporary socket, test images.

Everything lives under one temporary directory named with this process's pid:
``containers.conf`` (runc, not the default crun that fails here; ulimits that
fit a container), the image and container storage (``--root``/``--runroot``,
so nothing touches the machine's own Podman), and the API sockets. Images are
built with no registry: a root filesystem holding a static busybox is
imported, and small images are built ``FROM`` it with a ``HEALTHCHECK``.

Without ``podman``, ``runc`` or a static busybox the tests are skipped with a
hint; on CI (``CI=true``) that is a failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Generator, Sequence
from pathlib import Path

import attrs
import pytest

__all__ = ["BASE", "Podman", "require_podman", "started_podman"]

INSTALL_HINT = "install them with `apt-get install -y podman runc busybox-static`"
BASE = "localhost/rolling-test/base:1"
"""A busybox root filesystem, imported: the base of every test image."""

CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
[engine]
runtime = "runc"
"""

# An httpd that serves the version it was built with, with a HEALTHCHECK asking it.
WEB_IMAGE = """\
FROM {base}
RUN mkdir -p /www && echo {version} > /www/index.html
HEALTHCHECK --interval=30s --timeout=2s --retries=1 \\
  CMD wget -q -O /dev/null http://127.0.0.1:8080/ || exit 1
CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]
"""

# Exits at once, as an app with a bad configuration does.
BROKEN_IMAGE = """\
FROM {base}
CMD ["sh", "-c", "echo starting up; echo 'fatal: DATABASE_URL is not set' >&2; exit 3"]
"""


def _exec(
    argv: Sequence[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` to the end, capturing its output (run before any event loop starts)."""
    return subprocess.run(  # noqa: S603 - argument lists built here, no shell
        argv, env=env, cwd=cwd, capture_output=True, text=True, check=False
    )


_BUSYBOX_TOOLS = ("sh", "httpd", "wget", "sleep", "echo", "cat", "mkdir", "ls")


def _busybox() -> str | None:
    for path in ("/bin/busybox", "/usr/bin/busybox"):
        found = Path(path)
        if found.exists():
            # A dynamic executable names its loader near its start; a static one has none.
            head = found.read_bytes()[:16384]
            if b"ld-linux" not in head and b"ld-musl" not in head:
                return path
    return None


def require_podman() -> tuple[str, str]:
    """``podman`` and a static busybox; skip without them, or fail under CI."""
    podman = shutil.which("podman")
    busybox = _busybox()
    missing = [
        name
        for name, found in (
            ("podman", podman),
            ("runc", shutil.which("runc")),
            ("busybox-static", busybox),
        )
        if found is None
    ]
    if not missing and podman is not None and busybox is not None:
        return podman, busybox
    message = f"{', '.join(missing)} not installed; {INSTALL_HINT}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (.ci/run does)")
    pytest.skip(message)


@attrs.define
class Podman:
    """A Podman with storage of its own under ``root``; :meth:`service` starts its API."""

    binary: str
    root: Path
    services: dict[Path, subprocess.Popen[bytes]] = attrs.Factory(
        dict[Path, "subprocess.Popen[bytes]"]
    )

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "CONTAINERS_CONF": str(self.root / "containers.conf")}

    def argv(self, *args: str) -> list[str]:
        storage = ["--root", str(self.root / "storage"), "--runroot", str(self.root / "run")]
        return [self.binary, *storage, *args]

    def run(self, *args: str, cwd: Path | None = None) -> str:
        done = _exec(self.argv(*args), self.env, cwd)
        if done.returncode != 0:
            pytest.fail(f"podman {' '.join(args)} failed ({done.returncode}): {done.stderr}")
        return done.stdout

    def service(self, name: str = "api") -> str:
        """Start an API service on ``<root>/<name>.sock``; returns its ``unix://`` URL."""
        sock = self.root / f"{name}.sock"
        sock.unlink(missing_ok=True)
        log = (self.root / f"{name}.log").open("ab")
        # Its own session: a test that kills a process group never takes the service down.
        process = subprocess.Popen(  # noqa: S603 - our own argv
            self.argv("system", "service", "--time=0", f"unix://{sock}"),
            env=self.env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        self.services[sock] = process
        deadline = time.monotonic() + 15
        while not sock.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                output = (self.root / f"{name}.log").read_text()
                pytest.fail(f"podman system service did not start: {output}")
            time.sleep(0.02)
        return f"unix://{sock}"

    def stop_service(self, url: str) -> None:
        """Kill the service at ``url`` (SIGKILL: the API goes away at once; containers stay)."""
        sock = Path(url.removeprefix("unix://"))
        process = self.services.pop(sock)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        sock.unlink(missing_ok=True)

    def count(self, label: str, *, all_states: bool = True) -> list[str]:
        """Names of the containers with ``label``, running or not."""
        args = ["ps", "--format", "{{.Names}}", "--filter", f"label={label}"]
        return sorted(self.run(*args, *(["-a"] if all_states else [])).split())

    def build(self, tag: str, containerfile: str) -> None:
        context = self.root / "build" / tag.replace("/", "_").replace(":", "_")
        context.mkdir(parents=True)
        (context / "Containerfile").write_text(containerfile)
        self.run("build", "--format", "docker", "-t", tag, str(context))

    def close(self) -> None:
        for url in [f"unix://{s}" for s in self.services]:
            self.stop_service(url)
        _exec(self.argv("rm", "-af", "-t", "0"), self.env)
        _exec(self.argv("rmi", "-af"), self.env)
        # Storage may leave overlay mounts behind; a mounted directory cannot be removed.
        for line in reversed(Path("/proc/mounts").read_text().splitlines()):
            mount_point = line.split()[1]
            if mount_point.startswith(str(self.root)):
                _exec(["umount", "-l", mount_point])
        shutil.rmtree(self.root, ignore_errors=True)


def _import_base(podman: Podman, busybox: str) -> None:
    rootfs = podman.root / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    for directory in ("tmp", "proc", "sys", "dev", "etc"):
        (rootfs / directory).mkdir()
    shutil.copy(busybox, rootfs / "bin" / "busybox")
    for tool in _BUSYBOX_TOOLS:
        (rootfs / "bin" / tool).symlink_to("busybox")
    archive = podman.root / "rootfs.tar"
    _exec(["tar", "-C", str(rootfs), "-cf", str(archive), "."])
    podman.run("import", "--change", 'CMD ["/bin/sh"]', str(archive), BASE)


@contextlib.contextmanager
def started_podman(versions: Sequence[str]) -> Generator[tuple[Podman, str], None, None]:
    """A Podman with ``localhost/rolling-test/web:<version>`` for each version and ``:broken``."""
    binary, busybox = require_podman()
    root = Path(tempfile.mkdtemp(prefix=f"rolling-podman-{os.getpid()}-"))
    podman = Podman(binary, root)
    try:
        (root / "containers.conf").write_text(CONTAINERS_CONF)
        _import_base(podman, busybox)
        for version in versions:
            podman.build(
                f"localhost/rolling-test/web:{version}",
                WEB_IMAGE.format(base=BASE, version=version),
            )
        podman.build("localhost/rolling-test/web:broken", BROKEN_IMAGE.format(base=BASE))
        yield podman, podman.service()
    finally:
        podman.close()

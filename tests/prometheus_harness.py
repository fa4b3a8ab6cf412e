"""A real Prometheus server for the tests: started directly, scraping targets from a file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Generator, Sequence
from contextlib import contextmanager
from pathlib import Path

import attrs
import pytest

from helpers import LOOPBACK, free_port

INSTALL_HINT = "apt-get install -y prometheus"


def require_prometheus() -> str:
    """The ``prometheus`` binary; without one, fail under CI (``CI=true``) and skip elsewhere."""
    found = shutil.which("prometheus") or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
    )
    if found is not None:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail(f"prometheus is not installed; {INSTALL_HINT} (.ci/run does)")
    pytest.skip(f"prometheus is not installed; {INSTALL_HINT}")


@attrs.define
class Prometheus:
    """A running server: its URL, and the file listing what it scrapes."""

    url: str
    targets_file: Path
    process: subprocess.Popen[bytes]

    def scrape(self, ports: Sequence[int]) -> None:
        """Scrape the apps on ``ports`` of 127.0.0.1 (picked up within a second)."""
        targets = [{"targets": [f"{LOOPBACK}:{port}" for port in ports]}]
        tmp = self.targets_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(targets))
        tmp.replace(self.targets_file)

    def stop(self) -> None:
        """SIGTERM, and wait for it to exit."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextmanager
def running_prometheus(directory: Path) -> Generator[Prometheus]:
    """Start Prometheus scraping every second; stop it on the way out."""
    binary = require_prometheus()
    directory.mkdir(parents=True, exist_ok=True)
    targets_file = directory / "targets.json"
    targets_file.write_text("[]")
    config = directory / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: apps\n"
        "    file_sd_configs:\n"
        f"      - files: ['{targets_file}']\n"
        "        refresh_interval: 1s\n"
    )
    port = free_port()
    log = (directory / "prometheus.log").open("wb")
    process = subprocess.Popen(  # noqa: S603 - a fixed argv, no shell
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={directory / 'data'}",
            f"--web.listen-address={LOOPBACK}:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = Prometheus(url=f"http://{LOOPBACK}:{port}", targets_file=targets_file, process=process)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"prometheus exited: {(directory / 'prometheus.log').read_text()}")
            try:
                with urllib.request.urlopen(f"{server.url}/-/ready", timeout=1) as answer:  # noqa: S310 - http on loopback
                    if answer.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail("prometheus did not become ready within 30s")
            time.sleep(0.05)
        yield server
    finally:
        server.stop()
        log.close()

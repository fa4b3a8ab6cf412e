"""Development tasks: `nox` runs tests, lint, typecheck and docs; `nox -s bench` runs benchmarks."""

from __future__ import annotations

import shutil
from pathlib import Path

import nox
from nox.command import CommandFailed

nox.needs_version = ">=2024.3.2"  # the first release with `reuse_venv`
nox.options.default_venv_backend = "uv|virtualenv"
# A fresh environment every time, so CI and developers test what a clean machine installs.
# Pass `-R` (or `--reuse-venv=yes`) to reuse environments while iterating.
nox.options.reuse_venv = "no"
nox.options.sessions = ["tests", "lint", "typecheck", "docs"]

ROOT = Path(__file__).parent
DOCS = ROOT / "docs"
DOCS_BUILD = DOCS / "_build"
# Random-scenario tests run unmeasured, after the rest: the tracer would slow them two to three
# times, and the machine's own (20,000 sequences) is held to a minute on this machine.
PROPERTY_TESTS = (
    "tests/test_properties.py::test_random_rollouts_never_break_an_invariant",
    "tests/test_machine_properties.py::test_random_event_sequences_keep_the_invariants",
)

# pytest-xdist workers for the measured part of the suite. Most tests wait on real processes,
# sockets and timers rather than compute, so three workers on two cores finish the suite in
# about 12 minutes instead of 20; the property tests, which compute, run after them on one.
WORKERS = 3

# `select = ["ALL"]` picks up every rule a new ruff minor release stabilises, so the version
# is held to one minor series; bump it on purpose and fix what the new rules find.
RUFF = "ruff>=0.17.6,<0.18"


def run_all(session: nox.Session, *commands: tuple[str, ...]) -> None:
    """Run every command, even after one fails, so one run reports every problem."""
    failed: list[str] = []
    for command in commands:
        try:
            session.run(*command)
        except CommandFailed:
            failed.append(" ".join(command))
    if failed:
        session.error("failed: " + "; ".join(failed))


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite; every async test runs on asyncio and trio (see tests/conftest.py).

    The tests run in three pytest-xdist workers (WORKERS), under coverage.py, which measures
    every worker and the subprocesses the tests start. It reports branch coverage of
    src/rolling (settings in pyproject.toml), failing below its ``fail_under``. The property
    tests run unmeasured, after the rest (see PROPERTY_TESTS), and print their durations.
    ``nox -s tests -- tests/test_x.py`` runs the tests named, all measured; the report is
    shown, but a part of the suite is not held to the whole suite's minimum.
    """
    session.install(".[tests]")
    session.run("coverage", "erase")
    if session.posargs:
        session.run("coverage", "run", "-m", "pytest", *session.posargs)
    else:
        run_all(
            session,
            (
                "coverage",
                "run",
                "-m",
                "pytest",
                f"--numprocesses={WORKERS}",
                *(f"--deselect={t}" for t in PROPERTY_TESTS),
            ),
            ("pytest", "--durations=0", "--durations-min=1", *PROPERTY_TESTS),
        )
    session.run("coverage", "combine", "--quiet")
    session.run("coverage", "report", *(["--fail-under=0"] if session.posargs else []))


@nox.session
def lint(session: nox.Session) -> None:
    """Check the code with ruff's linter and formatter."""
    session.install(RUFF)
    run_all(session, ("ruff", "check", "."), ("ruff", "format", "--check", "."))


@nox.session
def typecheck(session: nox.Session) -> None:
    """Run mypy and pyright, both strict (their settings and file lists are in pyproject.toml)."""
    session.install(".[typecheck]")
    # The pyright wheel bundles the matching npm release of pyright and runs it with the `node`
    # found on PATH (.ci/run makes sure there is one: its fallback, nodeenv, downloads Node.js
    # from outside the package registries).
    run_all(session, ("mypy",), ("pyright",))


@nox.session
def docs(session: nox.Session) -> None:
    """Build the HTML docs; every warning (unresolved references included) is an error."""
    session.install(".[docs]")
    # Sphinx reports warnings only for documents it rebuilds: start from scratch every time so
    # a cached environment can never hide one.
    shutil.rmtree(DOCS_BUILD, ignore_errors=True)
    session.run(
        "sphinx-build", "-W", "--keep-going", "-n", "-b", "html", "docs", "docs/_build/html"
    )
    session.log(f"Open {DOCS_BUILD / 'html' / 'index.html'}")


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmarks in benchmarks/; each prints its own table (docs/performance.md).

    ``nox -s bench -- --quick`` runs smaller versions; name scripts to run only those,
    as in ``nox -s bench -- makespan probe_throughput``.
    """
    scripts = {p.stem: p for p in sorted((ROOT / "benchmarks").glob("[!_]*.py"))}
    quick = "--quick" in session.posargs
    chosen = [arg for arg in session.posargs if arg != "--quick"]
    unknown = sorted(set(chosen) - set(scripts))
    if unknown:
        session.error(f"unknown benchmarks {unknown}; choose from {sorted(scripts)} or --quick")
    # trio for the trio rows; ansible-core for the side-by-side; aiohttp and httpx for the
    # probe benchmark's rows beside HTTPCheck; pytest for the Podman harness the container
    # benchmark shares with the tests. None of them is a library dependency.
    session.install(".[docker]", "trio>=0.26", "ansible-core", "aiohttp", "httpx", "pytest")
    for name in chosen or scripts:
        session.run("python", str(scripts[name].relative_to(ROOT)), *(["--quick"] if quick else []))

"""The guide to rolling.testing (docs/testing-rollouts.md) shows code that works.

The complete example is a test module of its own: it runs under pytest in a subprocess, as a
user who copied it would run it. The conftest and the property-based recipe written inline in
the guide run the same way, from a temporary directory.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parent.parent
GUIDE = REPO / "docs" / "testing-rollouts.md"
EXAMPLE = REPO / "docs" / "examples" / "test_my_rollout.py"

BACKENDS = 2
"""Every test of the example runs on asyncio and on trio."""


def run_pytest(*args: str, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run pytest on its own in ``cwd``, with our interpreter, and no cache left behind."""
    env = {name: value for name, value in os.environ.items() if name != "PYTEST_ADDOPTS"}
    return subprocess.run(  # noqa: S603 - our own interpreter, on files of this repository
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def summary(completed: subprocess.CompletedProcess[str]) -> str:
    """The last line pytest printed: ``6 passed in 0.51s``."""
    lines = [line for line in completed.stdout.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def defined_tests(path: Path) -> list[str]:
    """Names of the module-level test functions defined in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    ]


def guide_block(first_line: str) -> str:
    """The Python code block of the guide that starts with the comment ``first_line``."""
    found = re.findall(
        rf"^```python\n({re.escape(first_line)}\n.*?)^```$",
        GUIDE.read_text(encoding="utf-8"),
        flags=re.MULTILINE | re.DOTALL,
    )
    assert len(found) == 1, f"expected one code block starting with {first_line!r} in {GUIDE}"
    return str(found[0])


def test_the_complete_example_passes_on_both_backends() -> None:
    tests = defined_tests(EXAMPLE)
    # The guide promises three tests (a canary, a rollback, a retry): six runs.
    assert len(tests) == 3, tests
    expected = len(tests) * BACKENDS

    completed = run_pytest(str(EXAMPLE.relative_to(REPO)), cwd=REPO, timeout=120)

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert re.fullmatch(rf"{expected} passed in [\d.]+s( \(.*\))?", summary(completed)), (
        completed.stdout
    )


def test_the_conftest_and_the_property_recipe_run(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(guide_block("# conftest.py"), encoding="utf-8")
    recipe = guide_block("# test_rollout_properties.py")
    # A smaller sample than the guide's, with a fixed seed: the same examples every run.
    assert "max_examples=100" in recipe
    recipe = recipe.replace("max_examples=100", "max_examples=25")
    (tmp_path / "test_rollout_properties.py").write_text(recipe, encoding="utf-8")
    # The recipe imports build_rollout from the user's deploy code: here, from the example.
    shutil.copy(EXAMPLE, tmp_path / "deploy.py")

    completed = run_pytest(
        "--hypothesis-seed=0", "test_rollout_properties.py", cwd=tmp_path, timeout=120
    )

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert re.fullmatch(rf"{BACKENDS} passed in [\d.]+s( \(.*\))?", summary(completed)), (
        completed.stdout
    )

# Shared by the benchmark scripts: aligned tables, PASS/MISS marks and the machine's description.
# Not a benchmark itself (noxfile skips files whose names start with "_").

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path


def verdict(*, met: bool) -> str:
    """PASS or MISS, for the goal column."""
    return "PASS" if met else "MISS"


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Render ``rows`` as a Markdown table whose columns line up in a terminal too."""
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    return "\n".join([f"\n{title}\n", line(cells[0]), rule, *(line(r) for r in cells[1:])])


def machine() -> str:
    """One line: cores, CPU model, Python and OS."""
    model = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for text in cpuinfo.read_text().splitlines():
            if text.startswith("model name"):
                model = text.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} cores, {model}, Python {platform.python_version()}"
        f" ({platform.python_implementation()}), {platform.system()} {platform.release()}"
    )


def command() -> str:
    """The command line that ran this script, to paste into docs/performance.md."""
    return " ".join(["python", *sys.argv])

"""Every async test runs on asyncio and on trio, both in virtual time.

Tests that need real time (real processes, real sockets) use the
``anyio_backend`` override ``real_time_backend`` instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio.testing

from helpers import stop_fleet
from rolling.testing import virtual_time_loop_factory


@pytest.fixture(
    params=[
        pytest.param("asyncio", id="asyncio"),
        pytest.param("trio", id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Both backends, each with a clock that jumps whenever every task waits.

    Tests marked ``real_time`` (real sockets, processes, threads) get the real clock.
    """
    if request.node.get_closest_marker("real_time") is not None:
        return (request.param, {})
    if request.param == "asyncio":
        return ("asyncio", {"loop_factory": virtual_time_loop_factory})
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})


@pytest.fixture
def fleet_file(tmp_path: Path) -> Iterator[Path]:
    """A process fleet's state file; every process it lists is stopped at the end."""
    path = tmp_path / "fleet.json"
    yield path
    stop_fleet(path)

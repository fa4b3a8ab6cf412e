"""Drive a feature flag from a rollout: on once only v2 serves, off before a rollback.

The flag lives in a flagd flag file; apps read it with the OpenFeature SDK's
flagd provider in file mode. Here the fleet is simulated and the file is in a
temporary directory.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import anyio

import rolling
import rolling.testing
from rolling.flags import FlagdFile


async def roll(flag_file: Path, *, broken: bool) -> rolling.RolloutResult:
    fleet = rolling.testing.SimulatedFleet(4, version="v1")
    if broken:
        fleet.fault("i-002", version="v2", replace_raises=True)
    rollout = rolling.Rollout(
        fleet,
        "v2",
        router=fleet,
        failure=rolling.FailurePolicy(max_failed=0),
        flags=rolling.FlagRules(FlagdFile(flag_file), "new-format"),
    )
    return await rollout.run()


async def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        flag_file = Path(directory) / "flags.json"
        good = await roll(flag_file, broken=False)
        # Prints: succeeded, and the flag turned on once all four ran v2.
        print(good.status, [(c.flag, c.value, c.cause) for c in good.flags])
        bad = await roll(flag_file, broken=True)
        # Prints: rolled_back, and the flag turned off before the first revert.
        print(bad.status, [(c.flag, c.value, c.cause) for c in bad.flags])
        flags = json.loads(flag_file.read_text())["flags"]
        print(flags["new-format"]["defaultVariant"])  # off


if __name__ == "__main__":
    anyio.run(main)

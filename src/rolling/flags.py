"""Flag setters: :class:`FlagdFile` writes flagd's flag file (OpenFeature's reference daemon).

Applications read the file with the OpenFeature SDK and its flagd provider in
file mode (``openfeature-sdk`` and ``openfeature-provider-flagd``); rolling
only writes JSON and needs neither.

Rules:

1. A change rewrites the whole file atomically: a temporary file in the same
   directory, flushed and fsync'd, then renamed over the old one, so a
   reader sees the old file or the new one, never half of each.
2. Only the flag being set changes: every other flag, and every other key of
   the file, is kept as it was.
3. A boolean flag gets the variants ``on``/``off``; other values get a
   variant named after the value. Setting a value removes any ``targeting``
   of that flag, so the value holds for everyone.
4. :meth:`FlagdFile.set_share` writes a ``fractional`` rule instead: ``on``
   for ``percent`` % of evaluation contexts (bucketed by flagd by targeting
   key), so a flag can follow a canary's traffic share.

.. versionadded:: 0.4.0
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import anyio.to_thread

from ._errors import ConfigError
from ._validate import path_of
from .typing import FlagValue

__all__ = ["FlagdFile"]


def _variant(value: FlagValue) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


class FlagdFile:
    """A :class:`~rolling.typing.FlagSetter` that writes a flagd flag file.

    Args:
        path: The flag file (a str or path-like); created on the first change if missing.
            Anything else is a ConfigError.

    .. versionadded:: 0.4.0
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:  # noqa: D107 - documented on the class
        self.path = path_of("FlagdFile.path", path)

    async def set(self, flag: str, value: FlagValue) -> None:
        """Set ``flag`` to ``value`` for everyone (rule 3)."""
        await anyio.to_thread.run_sync(self._update, flag, value, None)

    async def set_share(self, flag: str, percent: float) -> None:
        """Turn boolean ``flag`` on for ``percent`` % of evaluation contexts (rule 4)."""
        if not 0 <= percent <= 100:  # noqa: PLR2004 - a percentage
            raise ConfigError("FlagdFile.set_share.percent", f"{percent!r}", "pass 0 to 100")
        await anyio.to_thread.run_sync(self._update, flag, False, percent)  # noqa: FBT003 - the value

    def read(self) -> dict[str, Any]:
        """The file's JSON (``{"flags": {}}`` when it does not exist yet)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {"flags": {}}
        data: dict[str, Any] = json.loads(text)
        data.setdefault("flags", {})
        return data

    def _update(self, flag: str, value: FlagValue, percent: float | None) -> None:
        data = self.read()
        flags: dict[str, Any] = data["flags"]
        entry: dict[str, Any] = dict(flags.get(flag, {}))
        entry["state"] = "ENABLED"
        if isinstance(value, bool) or percent is not None:
            entry["variants"] = {"on": True, "off": False}
        else:
            variants = dict(entry.get("variants", {}))
            variants[_variant(value)] = value
            entry["variants"] = variants
        entry["defaultVariant"] = _variant(value)
        entry.pop("targeting", None)
        if percent is not None:
            entry["targeting"] = {"fractional": [["on", percent], ["off", 100 - percent]]}
        flags[flag] = entry
        self._write(json.dumps(data, indent=2, sort_keys=True) + "\n")

    def _write(self, text: str) -> None:
        directory = self.path.parent
        fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            Path(temp).replace(self.path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

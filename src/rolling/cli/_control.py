"""Live control of a running ``rolling run`` from another shell, through a unix socket.

The socket sits next to the journal (``<journal>.control``, or
``<rollout file>.control`` without a journal, or where ``control = ...``
says). It is created with mode 0600, and every connection's peer credentials
(``SO_PEERCRED``) must show the user the run belongs to: the file mode keeps
other users out, and the check keeps out root-owned tools run as another uid
as well. One request per connection, one JSON line each way::

    {"action": "promote", "full": false}
    {"ok": true, "status": {...}}

A socket file left by a killed run answers no connection: ``rolling run``
replaces it, and the client commands say there is no run to talk to.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from rolling import ControlError, RolloutHandle, RolloutSnapshot

from ._output import step_json

__all__ = [
    "ACTIONS",
    "ControlUnavailableError",
    "open_control",
    "request",
    "serve_control",
    "snapshot_json",
]

ACTIONS = ("abort", "pause", "promote", "resume", "status")
_MAX_REQUEST = 4096


class ControlUnavailableError(Exception):
    """No run answers on the control socket (none, or a stale socket), or it is in use."""


def _peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def _probe(path: Path) -> bool:
    """Whether a process listens on the socket at ``path`` (blocking; one local connect)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2.0)
        try:
            sock.connect(str(path))
        except (ConnectionRefusedError, FileNotFoundError):
            return False
    return True


async def open_control(path: Path) -> anyio.abc.SocketListener:
    """Listen on ``path`` with mode 0600, replacing a stale socket left by a killed run.

    Raises:
        ControlUnavailableError: Another run listens there, a file that is
            not a socket is in the way, or the socket cannot be made there.
    """
    await anyio.to_thread.run_sync(_clear_stale, path)
    try:
        return await anyio.create_unix_listener(path, mode=0o600)
    except OSError as exc:  # bind() names no path: say which one, so the fix is plain
        msg = f"cannot listen on the control socket {path}: {exc.strerror or exc}"
        raise ControlUnavailableError(msg) from exc


def _clear_stale(path: Path) -> None:
    """Remove the socket at ``path`` if no process listens on it (blocking)."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ControlUnavailableError(f"{path} exists and is not a socket; remove it")
    if _probe(path):
        raise ControlUnavailableError(f"another `rolling run` is listening on {path}")
    path.unlink()  # stale: its run was killed before it could remove it


def snapshot_json(snapshot: RolloutSnapshot) -> dict[str, Any]:
    """A status snapshot as JSON."""
    return {
        "status": snapshot.status.value,
        "target": snapshot.target,
        "reason": snapshot.reason,
        "counts": {k.value: v for k, v in snapshot.counts.items()},
        "in_flight": list(snapshot.in_flight),
        "paused": snapshot.paused,
        "step": None if snapshot.step is None else step_json(snapshot.step),
        "elapsed": snapshot.elapsed,
        "traffic": snapshot.traffic,
    }


def _act(handle: RolloutHandle, message: dict[str, Any]) -> dict[str, Any]:
    action = message.get("action")
    try:
        if action == "pause":
            handle.pause()
        elif action == "resume":
            handle.resume()
        elif action == "promote":
            handle.promote(full=bool(message.get("full", False)))
        elif action == "abort":
            handle.abort(rollback=bool(message.get("rollback", True)))
        elif action != "status":
            return {"ok": False, "error": f"unknown action {action!r}"}
    except ControlError as exc:
        error = _cli_words(str(exc))
        return {"ok": False, "error": error, "status": snapshot_json(handle.status())}
    return {"ok": True, "status": snapshot_json(handle.status())}


def _cli_words(error: str) -> str:
    """A library refusal, its Python fix said as the command line's (``full=True``: ``--full``)."""
    return error.replace("full=True", "`rolling promote --full`")


async def _receive_line(stream: anyio.abc.SocketStream) -> bytes:
    data = b""
    with anyio.move_on_after(5.0):
        while b"\n" not in data and len(data) < _MAX_REQUEST:
            try:
                data += await stream.receive(_MAX_REQUEST)
            except anyio.EndOfStream:
                break
    return data


async def _serve_one(
    stream: anyio.abc.SocketStream, handle: RolloutHandle, redact: Callable[[str], str]
) -> None:
    async with stream:
        raw = stream.extra(anyio.abc.SocketAttribute.raw_socket)  # noqa: S610 - anyio, not Django
        uid = _peer_uid(raw)
        data = await _receive_line(stream)  # read first even to refuse: the client is not cut off
        reply: dict[str, Any]
        if uid != os.geteuid():
            reply = {
                "ok": False,
                "error": f"refused: uid {uid} does not own this rollout (uid {os.geteuid()} does)",
            }
        else:
            try:
                message = json.loads(data.decode("utf-8") or "null")
            except (UnicodeDecodeError, json.JSONDecodeError):
                message = None
            if isinstance(message, dict):
                reply = _act(handle, message)  # pyright: ignore[reportUnknownArgumentType]
            else:
                reply = {"ok": False, "error": "expected one JSON object on one line"}
        # A client that went away has nothing more to be told.
        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
            await stream.send((redact(json.dumps(reply)) + "\n").encode())


async def serve_control(
    listener: anyio.abc.SocketListener,
    handle: RolloutHandle,
    redact: Callable[[str], str] = str,
) -> None:
    """Answer control requests until cancelled; ``redact`` hides the file's secrets in replies."""

    async def serve(stream: anyio.abc.SocketStream) -> None:
        await _serve_one(stream, handle, redact)

    await listener.serve(serve)


def request(path: Path, message: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Send one request to the run listening on ``path`` and return its reply (blocking).

    Raises:
        ControlUnavailableError: No run listens there (no socket, or a stale one).
        PermissionError: The socket belongs to another user.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except FileNotFoundError:
            raise ControlUnavailableError(
                f"no `rolling run` is running: {path} does not exist"
            ) from None
        except ConnectionRefusedError:
            raise ControlUnavailableError(
                f"no `rolling run` answers on {path}: a stale socket left by a run that was killed"
            ) from None
        sock.sendall((json.dumps(message) + "\n").encode())
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    if not data:
        raise ControlUnavailableError(f"the run on {path} closed the connection without answering")
    reply: dict[str, Any] = json.loads(data)
    return reply

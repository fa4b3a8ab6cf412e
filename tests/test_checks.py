"""TCPCheck and HTTPCheck against real servers on 127.0.0.1, in real time."""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import socket
import ssl
import struct
import subprocess
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import attrs
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.tls import TLSStream

import rolling.checks
from helpers import LOOPBACK, Node, port_of
from rolling import ConfigError, HealthResult, Readiness
from rolling.checks import HTTPCheck, TCPCheck, _http
from rolling.routers._accept import serve as serve_connections
from rolling.typing import HealthCheck

pytestmark = [pytest.mark.anyio, pytest.mark.real_time]

Handler = Callable[[anyio.abc.ByteStream], Awaitable[None]]


@attrs.define
class Server:
    """A tiny HTTP server: reads each request head, answers with ``response``."""

    response: bytes | list[bytes] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    requests: list[bytes] = attrs.field(factory=list[bytes])
    silent: bool = False

    async def __call__(self, stream: anyio.abc.ByteStream) -> None:
        async with stream:
            reader = BufferedByteReceiveStream(stream)
            with contextlib.suppress(anyio.IncompleteRead, anyio.BrokenResourceError):
                self.requests.append(await reader.receive_until(b"\r\n\r\n", 65536))
            if self.silent:
                await anyio.sleep_forever()
            parts = self.response if isinstance(self.response, list) else [self.response]
            # The client may stop reading early (a long body); that is fine.
            with contextlib.suppress(anyio.BrokenResourceError, OSError):
                for part in parts:
                    await stream.send(part)
                    await anyio.sleep(0.01)  # arrive in pieces, as on a real network


@contextlib.asynccontextmanager
async def serving(
    handler: Handler, tls: ssl.SSLContext | None = None, host: str = LOOPBACK
) -> AsyncGenerator[Node]:
    """Serve ``handler`` on a free loopback port; yield an instance that points at it."""
    listener = await anyio.create_tcp_listener(local_host=host, local_port=0)
    port = port_of(listener)

    async def over_tls(stream: anyio.abc.SocketStream) -> None:
        assert tls is not None
        try:
            wrapped = await TLSStream.wrap(
                stream, server_side=True, ssl_context=tls, standard_compatible=False
            )
        except (
            OSError,
            anyio.BrokenResourceError,
            anyio.EndOfStream,
        ):  # ssl.SSLError is an OSError
            await stream.aclose()  # a client that gave up on the handshake (a wrong CA)
            return
        await handler(wrapped)

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(serve_connections, listener, handler if tls is None else over_tls)
        yield Node("web-1", port, host=host)
        tg.cancel_scope.cancel()


async def closed_node(host: str = LOOPBACK) -> Node:
    listener = await anyio.create_tcp_listener(local_host=host, local_port=0)
    port = port_of(listener)
    await listener.aclose()
    return Node("gone", port, host=host)


@contextlib.contextmanager
def never_accepted(*, connects: bool) -> Generator[Node]:
    """A loopback port nobody serves: connections wait in a listener nobody accepts from.

    With ``connects``, connections open (they queue in the backlog) and nothing ever answers.
    Without, the accept queue is full first, so Linux drops every new SYN and a connection
    never opens: the client retransmits until it gives up, and nothing leaves the machine.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    fillers: list[socket.socket] = []
    try:
        listener.bind((LOOPBACK, 0))
        listener.listen(8 if connects else 0)
        port: int = listener.getsockname()[1]
        while not connects:
            if len(fillers) > 8:  # far more than a listen(0) socket queues
                pytest.fail("the accept queue of a listen(0) socket never filled")
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            fillers.append(filler)
            filler.setblocking(False)
            filler.connect_ex((LOOPBACK, port))
            # On loopback a connection with room in the queue opens at once; one that does not
            # open within 0.2 s met a full queue, and so will the check's.
            if not select.select([], [filler], [], 0.2)[1]:
                break
        yield Node("silent", port)
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def open_fds() -> int:
    return sum(1 for _ in Path("/proc/self/fd").iterdir())


async def fds_back_to(count: int) -> int:
    """The open file descriptors once they are back to ``count``, or after 2 s of waiting.

    asyncio closes a transport's socket one loop turn after it is closed, so a closed
    connection may hold its descriptor a moment longer; a leaked one holds it forever.
    """
    with anyio.move_on_after(2):
        while open_fds() != count:  # noqa: ASYNC110 - nothing to wait on: polls the kernel's count
            await anyio.sleep(0.01)
    return open_fds()


def ipv6_loopback() -> None:
    """Skip (or, in CI, fail) when this machine has no IPv6 loopback address."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe_socket:
            probe_socket.bind(("::1", 0))
    except OSError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"::1 is not available: {exc}")
        pytest.skip(f"::1 is not available: {exc}")


def response(status: str = "200 OK", body: bytes = b"ok", *headers: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in headers)
    return f"HTTP/1.1 {status}\r\n{head}\r\n".encode() + body


def with_length(status: str, body: bytes) -> bytes:
    return response(status, body, f"Content-Length: {len(body)}")


def chunked(*chunks: bytes) -> list[bytes]:
    parts = [response("200 OK", b"", "Transfer-Encoding: chunked")]
    parts += [f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in chunks]
    parts.append(b"0\r\n\r\n")
    return parts


async def probe(check: HTTPCheck | TCPCheck, server: Handler) -> HealthResult:
    async with serving(server) as node:
        return await check.check(node)


def test_public_names() -> None:
    assert rolling.checks.__all__ == ["HTTPCheck", "TCPCheck"]
    assert isinstance(HTTPCheck(), HealthCheck)
    assert isinstance(TCPCheck(), HealthCheck)
    Readiness(check=HTTPCheck())  # accepted where health checks are


# -- TCPCheck -------------------------------------------------------------------


async def test_tcp_open_port_is_healthy() -> None:
    assert await probe(TCPCheck(), Server()) == HealthResult(healthy=True)


async def test_tcp_closed_port_is_refused() -> None:
    result = await TCPCheck().check(await closed_node())
    assert result == HealthResult(healthy=False, reason="connection refused")


async def test_tcp_custom_address_and_missing_address() -> None:
    async with serving(Server()) as node:
        check = TCPCheck(address=lambda _: (LOOPBACK, node.port))
        assert (await check.check(object())).healthy
    result = await TCPCheck().check(object())
    assert not result.healthy
    assert "cannot find the address" in result.reason


# -- HTTPCheck: status, framing, body -------------------------------------------


async def test_http_ok_and_request_shape() -> None:
    server = Server()
    async with serving(server) as node:
        result = await HTTPCheck().check(node)
    assert result == HealthResult(healthy=True, reason="HTTP 200")
    lines = server.requests[0].decode().split("\r\n")
    assert lines[0] == "GET /healthz HTTP/1.1"
    assert f"Host: 127.0.0.1:{node.port}" in lines
    assert "Connection: close" in lines


async def test_http_host_header_and_path() -> None:
    server = Server()
    async with serving(server) as node:
        check = HTTPCheck("/status?full=1", host_header="app.example")
        assert (await check.check(node)).healthy
    lines = server.requests[0].decode().split("\r\n")
    assert lines[0] == "GET /status?full=1 HTTP/1.1"
    assert "Host: app.example" in lines


async def test_http_bad_status() -> None:
    result = await probe(HTTPCheck(), Server(with_length("503 Service Unavailable", b"down")))
    assert result == HealthResult(healthy=False, reason="HTTP 503")


async def test_http_expect_status_is_any_container() -> None:
    server = Server(with_length("503 Service Unavailable", b""))
    assert (await probe(HTTPCheck(expect_status={503}), server)).healthy
    assert not (await probe(HTTPCheck(expect_status=[200, 204]), server)).healthy


async def test_http_status_line_without_reason_phrase() -> None:
    assert (await probe(HTTPCheck(), Server(b"HTTP/1.0 204\r\n\r\n"))).healthy


async def test_http_body_substring_with_content_length() -> None:
    server = Server(with_length("200 OK", b'{"status": "ok"}'))
    assert (await probe(HTTPCheck(body='"ok"'), server)).healthy
    result = await probe(HTTPCheck(body="ready"), server)
    assert result == HealthResult(healthy=False, reason="body did not match 'ready'")


async def test_http_body_regex() -> None:
    server = Server(with_length("200 OK", b"version=v2 status=up"))
    assert (await probe(HTTPCheck(body=re.compile(r"status=(up|ok)")), server)).healthy
    result = await probe(HTTPCheck(body=re.compile(r"version=v3")), server)
    assert result == HealthResult(healthy=False, reason="body did not match 'version=v3'")


async def test_http_chunked_body() -> None:
    server = Server(chunked(b"stat", b"us: ", b"up"))
    assert (await probe(HTTPCheck(body="status: up"), server)).healthy
    assert not (await probe(HTTPCheck(body="down"), server)).healthy


async def test_http_chunk_extensions_and_trailers_are_ignored() -> None:
    body = b"4;name=value\r\nall \r\n2\r\nok\r\n0\r\nX-Trailer: yes\r\n\r\n"
    server = Server(response("200 OK", body, "Transfer-Encoding: chunked"))
    assert (await probe(HTTPCheck(body="all ok"), server)).healthy


async def test_http_body_read_to_end_of_connection() -> None:
    server = Server([response("200 OK", b"no "), b"length ", b"given"])
    assert (await probe(HTTPCheck(body="no length given"), server)).healthy


async def test_http_body_is_capped_at_64_kib() -> None:
    body = b"a" * 65536 + b"beyond the cap"
    server = Server(with_length("200 OK", body))
    assert (await probe(HTTPCheck(body="a" * 65536), server)).healthy
    assert not (await probe(HTTPCheck(body="beyond"), server)).healthy


async def test_http_interim_responses_are_skipped() -> None:
    server = Server(b"HTTP/1.1 100 Continue\r\n\r\n" + with_length("200 OK", b"ok"))
    assert (await probe(HTTPCheck(body="ok"), server)).healthy


async def test_http_headers_are_read_case_insensitively() -> None:
    server = Server(response("200 OK", b"okay and more", "content-LENGTH: 4"))
    assert (await probe(HTTPCheck(body=re.compile(r"^okay$")), server)).healthy


# -- HTTPCheck: failures ----------------------------------------------------------


async def test_http_timeout() -> None:
    started = anyio.current_time()
    result = await probe(HTTPCheck(timeout=0.3), Server(silent=True))
    assert result == HealthResult(healthy=False, reason="timed out after 0.3s")
    assert anyio.current_time() - started < 1


async def test_http_connection_refused() -> None:
    result = await HTTPCheck().check(await closed_node())
    assert result == HealthResult(healthy=False, reason="connection refused")


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (b"HTP/1.1 200 OK\r\n\r\n", "malformed status line"),
        (b"SSH-2.0-OpenSSH_9.6\r\n", "malformed status line"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "malformed status line"),
        (b"", "connection closed before the status line ended"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", "connection closed before the headers ended"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header line"),
        (response("200 OK", b"ok", "Content-Length: two"), "malformed Content-Length"),
        (
            response("200 OK", b"ok", "Content-Length: 2", "Content-Length: 3"),
            "malformed Content-Length",
        ),
        (with_length("200 OK", b"ok")[:-1], "connection closed before the body ended"),
        (response("200 OK", b"zz\r\n", "Transfer-Encoding: chunked"), "malformed chunk size"),
        (response("200 OK", b"2\r\nokay\r\n", "Transfer-Encoding: chunked"), "malformed chunk"),
        (
            b"HTTP/1.1 200 OK\r\n" + b"X: " + b"y" * 9000 + b"\r\n\r\n",
            "headers longer than 8192 bytes",
        ),
    ],
)
async def test_http_bad_responses(answer: bytes, reason: str) -> None:
    result = await probe(HTTPCheck(body="ok"), Server(answer))
    assert not result.healthy
    assert result.reason.startswith(reason)


async def test_http_missing_address() -> None:
    result = await HTTPCheck().check(object())
    assert not result.healthy
    assert "cannot find the address" in result.reason


# -- connecting: IP literals directly, host names through anyio ----------------------------


async def test_ip_literals_connect_directly_and_host_names_through_anyio(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hosts: list[str] = []
    connect_tcp = anyio.connect_tcp

    async def counting_connect_tcp(host: str, port: int) -> anyio.abc.SocketStream:
        hosts.append(host)
        return await connect_tcp(host, port)

    monkeypatch.setattr(anyio, "connect_tcp", counting_connect_tcp)
    async with serving(Server()) as node:
        assert (await HTTPCheck().check(node)).healthy
        assert (await TCPCheck().check(node)).healthy
        assert hosts == []
        by_name = attrs.evolve(node, host="localhost")
        assert (await HTTPCheck().check(by_name)).healthy
        assert (await TCPCheck().check(by_name)).healthy
    assert hosts == ["localhost", "localhost"]


@pytest.mark.parametrize("check", [HTTPCheck(timeout=0.3), TCPCheck(timeout=0.3)])
async def test_connection_that_never_opens_times_out_and_is_closed(
    check: HTTPCheck | TCPCheck,
) -> None:
    with never_accepted(connects=False) as node:
        before = open_fds()
        started = anyio.current_time()
        result = await check.check(node)
        assert anyio.current_time() - started < 1
        assert await fds_back_to(before) == before
    assert result == HealthResult(healthy=False, reason="timed out after 0.3s")


async def test_unanswered_request_and_tls_handshake_time_out_and_are_closed(
    certificate: tuple[Path, Path],
) -> None:
    trusting = ssl.create_default_context(cafile=str(certificate[0]))
    with never_accepted(connects=True) as node:
        before = open_fds()
        plain = await HTTPCheck(timeout=0.3).check(node)
        assert await fds_back_to(before) == before
        tls = await HTTPCheck(timeout=0.3, tls=trusting).check(node)
        assert await fds_back_to(before) == before
    assert plain == HealthResult(healthy=False, reason="timed out after 0.3s")
    assert tls == HealthResult(healthy=False, reason="timed out after 0.3s")


@pytest.mark.parametrize("check", [HTTPCheck(timeout=30), TCPCheck(timeout=30)])
async def test_cancelled_check_closes_its_socket(check: HTTPCheck | TCPCheck) -> None:
    returned: list[HealthResult] = []
    with never_accepted(connects=False) as node:
        before = open_fds()
        async with anyio.create_task_group() as tg:

            async def probe() -> None:
                returned.append(await check.check(node))

            tg.start_soon(probe)
            await anyio.sleep(0.2)
            assert open_fds() == before + 1  # the socket of the connection under way
            tg.cancel_scope.cancel()
        assert await fds_back_to(before) == before
    assert returned == []  # the cancellation went through the check, not into a result


async def test_connection_reset_as_it_opens_is_a_failed_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wait_writable = anyio.wait_writable
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind((LOOPBACK, 0))
        listener.listen(1)

        async def reset_once_open(obj: Any) -> None:
            await wait_writable(obj)
            # The connection is open: the server takes it and resets it (close with a zero
            # linger sends RST) before the check has handed its socket to anyio.
            conn, _ = listener.accept()
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

        monkeypatch.setattr(anyio, "wait_writable", reset_once_open)
        node = Node("reset", listener.getsockname()[1])
        before = open_fds()
        result = await HTTPCheck().check(node)
        assert open_fds() == before
    assert result == HealthResult(
        healthy=False, reason="connection failed: connection reset by peer"
    )


async def test_ipv6_literal() -> None:
    ipv6_loopback()
    server = Server()
    async with serving(server, host="::1") as node:
        assert await HTTPCheck().check(node) == HealthResult(healthy=True, reason="HTTP 200")
        assert await TCPCheck().check(node) == HealthResult(healthy=True)
    assert f"Host: [::1]:{node.port}" in server.requests[0].decode().split("\r\n")
    gone = await closed_node("::1")
    refused = HealthResult(healthy=False, reason="connection refused")
    assert await HTTPCheck().check(gone) == refused
    assert await TCPCheck().check(gone) == refused


# -- HTTPCheck over TLS ---------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    openssl = shutil.which("openssl")
    if openssl is None:
        if os.environ.get("CI") == "true":
            pytest.fail("openssl is needed for the TLS tests")
        pytest.skip("openssl is not installed")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(  # noqa: S603 - a fixed command line, run before the event loop starts
        [
            openssl,
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_http_over_tls(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))
    async with serving(Server(chunked(b"secure ok")), tls=server_context) as node:
        assert await HTTPCheck(body="secure ok", tls=trusting).check(node) == HealthResult(
            healthy=True, reason="HTTP 200"
        )
        untrusted = await HTTPCheck(tls=True).check(node)
        plain = await HTTPCheck(timeout=0.5).check(node)
    assert not untrusted.healthy
    assert untrusted.reason.startswith("TLS error")
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.reason
    assert not plain.healthy


# -- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"path": "healthz"}, "HTTPCheck.path"),
        ({"path": "/health z"}, "HTTPCheck.path"),
        ({"path": "/h\r\nX: y"}, "HTTPCheck.path"),
        ({"path": "/é"}, "HTTPCheck.path"),
        ({"path": b"/healthz"}, "HTTPCheck.path"),
        ({"timeout": 0}, "HTTPCheck.timeout"),
        ({"timeout": -1.0}, "HTTPCheck.timeout"),
        ({"timeout": "2"}, "HTTPCheck.timeout"),
        ({"expect_status": 200}, "HTTPCheck.expect_status"),
        ({"expect_status": "200"}, "HTTPCheck.expect_status"),
        ({"expect_status": ["200"]}, "HTTPCheck.expect_status"),
        ({"expect_status": (200, True)}, "HTTPCheck.expect_status"),
        ({"expect_status": {99}}, "HTTPCheck.expect_status"),
        ({"expect_status": []}, "HTTPCheck.expect_status"),
        ({"body": b"ok"}, "HTTPCheck.body"),
        ({"body": ""}, "HTTPCheck.body"),
        ({"body": re.compile(b"ok")}, "HTTPCheck.body"),
        ({"host_header": "a b"}, "HTTPCheck.host_header"),
        ({"host_header": ""}, "HTTPCheck.host_header"),
        ({"tls": "yes"}, "HTTPCheck.tls"),
        ({"address": ("127.0.0.1", 80)}, "HTTPCheck.address"),
    ],
)
def test_http_config_errors(kwargs: dict[str, Any], field: str) -> None:
    path = kwargs.pop("path", "/healthz")
    with pytest.raises(ConfigError) as caught:
        HTTPCheck(path, **kwargs)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"timeout": 0}, "TCPCheck.timeout"),
        ({"timeout": float("inf")}, "TCPCheck.timeout"),
        ({"address": "127.0.0.1:80"}, "TCPCheck.address"),
    ],
)
def test_tcp_config_errors(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        TCPCheck(**kwargs)
    assert caught.value.field == field


def test_checks_are_frozen_values() -> None:
    assert HTTPCheck("/a", timeout=1) == HTTPCheck("/a", timeout=1)
    assert hash(HTTPCheck("/a")) == hash(HTTPCheck("/a"))
    assert "HTTPCheck(path='/a'" in repr(HTTPCheck("/a"))


@pytest.mark.parametrize(
    ("authority", "hostname"),
    [
        ("app.example", "app.example"),
        ("app.example:8443", "app.example"),
        ("127.0.0.1:443", "127.0.0.1"),
        ("[::1]:443", "::1"),
        ("[::1]", "::1"),
    ],
)
def test_tls_server_name_comes_from_the_host_header(authority: str, hostname: str) -> None:
    assert _http._hostname(authority) == hostname

"""Metric providers against real servers on loopback, in real time, both backends.

``PrometheusQuery`` and ``WebMetric`` talk to a small HTTP server made here
(the answers Prometheus gives are checked against the real server in
test_prometheus.py); ``Scrape`` reads real demo-app processes.
"""

from __future__ import annotations

import base64
import json
import math
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
import pytest

from helpers import LOOPBACK, free_port, http_get, port_of, wait_healthy
from rolling import ConfigError
from rolling.analysis import MeasureContext
from rolling.demo.app import command as app_command
from rolling.drivers.process import ProcessDriver
from rolling.metrics import MetricError, PrometheusQuery, Scrape, WebMetric
from rolling.metrics._http import HTTPError, _dechunk, _parse  # the client's framing, unit-tested
from rolling.metrics._prometheus import parse_query_result
from rolling.metrics._scrape import _quantile
from rolling.routers._accept import serve as serve_connections

pytestmark = [pytest.mark.anyio, pytest.mark.real_time]

Handler = Callable[[str, dict[str, str]], tuple[int, bytes, dict[str, str]]]


Reply = tuple[int, bytes, dict[str, str]]
NO_HEADERS: dict[str, str] = {}


def always(_labels: object) -> bool:
    return True


def replies(*answers: Reply) -> Handler:
    """Answer with each of ``answers`` in turn, then the last one again and again."""
    queue = list(answers)

    def handler(_target: str, _headers: dict[str, str]) -> Reply:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return handler


class Server:
    """One-request-per-connection HTTP server; ``handler(target, headers)`` answers."""

    def __init__(
        self, listener: anyio.abc.Listener[anyio.abc.SocketStream], handler: Handler
    ) -> None:
        self.url = f"http://{LOOPBACK}:{port_of(listener)}"
        self.handler = handler
        self.requests: list[tuple[str, dict[str, str]]] = []

    async def serve(self, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                data += await stream.receive()
            lines = data.split(b"\r\n\r\n")[0].decode().split("\r\n")
            target = lines[0].split(" ")[1]
            headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
            self.requests.append((target, headers))
            status, body, extra = self.handler(target, headers)
            head = f"HTTP/1.1 {status} X\r\n" + "".join(f"{k}: {v}\r\n" for k, v in extra.items())
            if "Transfer-Encoding" not in extra:
                head += f"Content-Length: {len(body)}\r\n"
            await stream.send(head.encode() + b"Connection: close\r\n\r\n" + body)


Serve = Callable[[Handler], Awaitable["Server"]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    listeners: list[anyio.abc.Listener[anyio.abc.SocketStream]] = []
    async with anyio.create_task_group() as tg:

        async def make(handler: Handler) -> Server:
            listener = await anyio.create_tcp_listener(local_host=LOOPBACK)
            listeners.append(listener)
            server = Server(listener, handler)
            tg.start_soon(serve_connections, listener, server.serve)
            return server

        yield make
        tg.cancel_scope.cancel()
    for listener in listeners:
        await listener.aclose()


def vector(*series: tuple[dict[str, str], str]) -> bytes:
    result = [{"metric": labels, "value": [1.0, value]} for labels, value in series]
    return json.dumps(
        {"status": "success", "data": {"resultType": "vector", "result": result}}
    ).encode()


CONTEXT = MeasureContext(target="v2")


# ------------------------------------------------------------------ PrometheusQuery


def test_query_result_shapes() -> None:
    assert parse_query_result(json.loads(vector())) is None
    assert parse_query_result(json.loads(vector(({}, "0.25")))) == 0.25
    two = parse_query_result(json.loads(vector(({"a": "1"}, "1"), ({"a": "2"}, "NaN"))))
    assert isinstance(two, dict)
    assert two[(("a", "1"),)] == 1.0
    assert math.isnan(two[(("a", "2"),)])
    scalar = {"status": "success", "data": {"resultType": "scalar", "result": [1, "3"]}}
    assert parse_query_result(scalar) == 3.0
    with pytest.raises(MetricError, match="matrix"):
        parse_query_result({"status": "success", "data": {"resultType": "matrix", "result": []}})
    with pytest.raises(MetricError, match="bad_data: oops"):
        parse_query_result({"status": "error", "errorType": "bad_data", "error": "oops"})
    with pytest.raises(MetricError, match="malformed"):
        parse_query_result({"status": "success", "data": {"resultType": "vector", "result": [1]}})
    with pytest.raises(MetricError, match="JSON object"):
        parse_query_result([])


async def test_prometheus_query_fills_the_template_and_authenticates(serve: Serve) -> None:
    server = await serve(replies((200, vector(({}, "0.5")), NO_HEADERS)))
    query = PrometheusQuery(server.url, "sum(x{v=$target})", bearer_token="t0k")  # noqa: S106 - a test token
    assert await query.measure(CONTEXT) == 0.5
    target, headers = server.requests[-1]
    assert target.startswith("/api/v1/query?query=sum%28x%7Bv%3D%22v2%22%7D%29")
    assert headers["authorization"] == "Bearer t0k"
    basic = PrometheusQuery(server.url, "up", basic_auth=("me", "pw"))
    await basic.measure(CONTEXT)
    assert server.requests[-1][1]["authorization"] == "Basic " + base64.b64encode(b"me:pw").decode()
    assert "t0k" not in repr(query)


async def test_prometheus_query_errors(serve: Serve) -> None:
    server = await serve(
        replies(
            (503, b"down", NO_HEADERS),
            (200, b"not json", NO_HEADERS),
            (400, b'{"status":"error","errorType":"bad_data","error":"parse error"}', NO_HEADERS),
            (500, b"", NO_HEADERS),
        )
    )
    query = PrometheusQuery(server.url, "up")
    with pytest.raises(MetricError, match="HTTP 503"):
        await query.measure(CONTEXT)
    with pytest.raises(MetricError, match="not JSON"):
        await query.measure(CONTEXT)
    with pytest.raises(ConfigError, match="Prometheus rejected 'up': parse error"):
        await query.prepare(CONTEXT)
    with pytest.raises(MetricError, match="HTTP 500"):
        await query.prepare(CONTEXT)
    with pytest.raises(MetricError, match="cannot connect"):
        await PrometheusQuery(f"http://{LOOPBACK}:{free_port()}", "up").measure(CONTEXT)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"url": "localhost:9090"}, "PrometheusQuery.url"),
        ({"query": ""}, "PrometheusQuery.query"),
        ({"query": "x{v=$version}"}, "PrometheusQuery.query"),
        ({"query": "x $"}, "PrometheusQuery.query"),
        ({"basic_auth": ("user",)}, "PrometheusQuery.basic_auth"),
        ({"headers": {"a": 1}}, "PrometheusQuery.headers"),
        ({"tls": True}, "PrometheusQuery.tls"),
        ({"timeout": 0}, "PrometheusQuery.timeout"),
    ],
)
def test_prometheus_query_config(options: dict[str, Any], field: str) -> None:
    arguments: dict[str, Any] = {"url": "http://127.0.0.1:9090", "query": "up", **options}
    with pytest.raises(ConfigError) as info:
        PrometheusQuery(**arguments)
    assert info.value.field == field


# ------------------------------------------------------------------ WebMetric


async def test_web_metric(serve: Serve) -> None:
    server = await serve(
        replies(
            (200, b'{"data": {"rate": 0.02}}', NO_HEADERS),
            (200, b'{"data": {"rate": null}}', NO_HEADERS),
            (200, b"{}", NO_HEADERS),
        )
    )
    metric = WebMetric(
        f"{server.url}/stats", extract=lambda body: body["data"]["rate"], headers={"X-K": "1"}
    )
    assert await metric.measure(CONTEXT) == 0.02
    assert server.requests[-1] == ("/stats", server.requests[-1][1])
    assert server.requests[-1][1]["x-k"] == "1"
    assert await metric.measure(CONTEXT) is None
    with pytest.raises(KeyError):
        await metric.measure(CONTEXT)


async def test_web_metric_errors(serve: Serve) -> None:
    server = await serve(replies((404, b"{}", NO_HEADERS)))
    with pytest.raises(MetricError, match="HTTP 404"):
        await WebMetric(server.url, extract=lambda _: 1).measure(CONTEXT)
    with pytest.raises(MetricError, match="cannot connect"):
        await WebMetric(f"http://{LOOPBACK}:{free_port()}", extract=lambda _: 1).measure(CONTEXT)


async def test_chunked_answers_are_read(serve: Serve) -> None:
    body = b'7\r\n{"a": 1\r\n1\r\n}\r\n0\r\n\r\n'
    server = await serve(replies((200, body, {"Transfer-Encoding": "chunked"})))
    assert await WebMetric(server.url, extract=lambda b: b["a"]).measure(CONTEXT) == 1.0


def test_http_framing_errors() -> None:
    with pytest.raises(HTTPError, match="head"):
        _parse(b"HTTP/1.1 200 OK\r\n")
    with pytest.raises(HTTPError, match="status line"):
        _parse(b"HTTP/2 200\r\n\r\n")
    with pytest.raises(HTTPError, match="header line"):
        _parse(b"HTTP/1.1 200 OK\r\nbad\r\n\r\n")
    with pytest.raises(HTTPError, match="Content-Length"):
        _parse(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n")
    with pytest.raises(HTTPError, match="chunk size"):
        _dechunk(b"zz\r\n")
    assert _parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nabcd").body == b"ab"


# ------------------------------------------------------------------ Scrape


def test_histogram_quantile_interpolates_like_promql() -> None:
    def buckets(**counts: float) -> dict[Any, float]:
        return {
            ("h_bucket", (("le", le.replace("_", ".").replace("inf", "+Inf")),)): n
            for le, n in counts.items()
        }

    # 100 observations: 50 at or below 0.1, 90 at or below 0.5, all at or below 1.
    increase = buckets(**{"0_1": 50, "0_5": 90, "1": 100, "inf": 100})
    assert _quantile(0.5, increase) == pytest.approx(0.1)
    assert _quantile(0.9, increase) == pytest.approx(0.5)
    assert _quantile(0.7, increase) == pytest.approx(0.1 + 0.4 * 20 / 40)
    assert _quantile(0.25, increase) == pytest.approx(0.05)
    # Past the last finite bucket: that bucket's bound.
    assert _quantile(0.99, buckets(**{"0_1": 50, "inf": 100})) == pytest.approx(0.1)
    assert _quantile(0.5, buckets(**{"0_1": 0, "inf": 0})) is None


def demo_command(version: str, port: int) -> list[str]:
    return app_command(
        version, port, latency_ms=1, error_pct=50 if version == "bad" else 0, python=sys.executable
    )


async def hit(instance: Any, times: int) -> None:
    for _ in range(times):
        await http_get(instance, "/")


def context(new: list[Any], old: list[Any] = []) -> MeasureContext:  # noqa: B006 - read only
    return MeasureContext(target="v2", new_instances=tuple(new), old_instances=tuple(old))


async def test_scrape_error_ratio_rate_and_quantile_between_scrapes() -> None:
    async with ProcessDriver(demo_command) as driver:
        good, bad = await driver.spawn(1, "good") + await driver.spawn(1, "bad")
        await wait_healthy([good, bad])
        ratio = Scrape("demo_requests_total", errors=lambda labels: labels["code"] >= "500")
        rate = Scrape("demo_requests_total")
        p50 = Scrape("demo_request_duration_seconds", quantile=0.5)
        old = Scrape("demo_requests_total", of="old")
        both = context([good, bad], [good])
        # First scrape: the baseline, no data; no traffic since: no data either.
        for provider in (ratio, rate, p50, old):
            assert await provider.measure(both) is None
        assert await ratio.measure(both) is None
        await hit(good, 10)
        await hit(bad, 10)
        assert await ratio.measure(both) == pytest.approx(5 / 20)
        assert await rate.measure(both) == 20
        quantile = await p50.measure(both)
        assert isinstance(quantile, float)
        assert 0 < quantile <= 0.025
        assert await old.measure(both) == 10  # the old set: only good's traffic
        # A restart resets the counters: the new value is the increase.
        restarted = await driver.replace(bad, "bad")
        await wait_healthy([restarted])
        await hit(restarted, 4)
        assert await ratio.measure(context([restarted])) == pytest.approx(2 / 4)
        assert await ratio.measure(context([])) is None


async def test_scrape_errors() -> None:
    class Down:
        id = "down"
        version = "v2"
        host = LOOPBACK
        port = free_port()

    with pytest.raises(MetricError, match="no instance could be scraped: down: cannot connect"):
        await Scrape("x_total").measure(context([Down()]))

    class Nowhere:
        id = "nowhere"
        version = "v2"

    with pytest.raises(MetricError, match="nowhere"):
        await Scrape("x_total").measure(context([Nowhere()]))


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"quantile": 1}, "Scrape.quantile"),
        ({"of": "both"}, "Scrape.of"),
        ({"path": "metrics"}, "Scrape.path"),
        ({"metric": ""}, "Scrape.metric"),
        ({"quantile": 0.5, "errors": always}, "Scrape.errors"),
    ],
)
def test_scrape_config(options: dict[str, Any], field: str) -> None:
    arguments: dict[str, Any] = {"metric": "x_total", **options}
    with pytest.raises(ConfigError, match=field):
        Scrape(**arguments)

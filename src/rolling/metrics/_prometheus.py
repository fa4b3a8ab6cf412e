"""PrometheusQuery and WebMetric: metrics read over HTTP from a server."""

from __future__ import annotations

import base64
import math
import ssl
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any, cast

import attrs

from rolling import ConfigError, RollingError
from rolling.analysis import MeasureContext, Value, check_template, fill_template
from rolling.validate import check_callable, check_seconds, validator

from ._http import HTTPError, Response, default_context, get, split_url

__all__ = ["MetricError", "PrometheusQuery", "WebMetric"]


class MetricError(RollingError):
    """A metric server could not be asked, or answered with an error.

    .. versionadded:: 0.3.0
    """


def _check_url(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    try:
        split_url(value if isinstance(value, str) else "")
    except ValueError:
        raise ConfigError(
            f"{type(instance).__name__}.{attribute.name}",
            f"expected an absolute http(s) URL, got {value!r}",
            'pass a URL such as "http://127.0.0.1:9090"',
        ) from None


def _check_query(_instance: object, _attribute: object, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            "PrometheusQuery.query", f"expected a PromQL query, got {value!r}", "pass a query"
        )
    check_template("PrometheusQuery.query", value)


def _check_tls(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None or isinstance(value, ssl.SSLContext):
        return
    raise ConfigError(
        f"{type(instance).__name__}.{attribute.name}",
        f"expected an ssl.SSLContext or None, got {value!r}",
        "pass None for the system's trusted certificates, or your own SSLContext",
    )


def _check_basic(_instance: object, _attribute: object, value: Any) -> None:
    if value is None:
        return
    pair = cast("tuple[object, ...]", value) if isinstance(value, tuple) else ()
    if len(pair) == 2 and all(isinstance(v, str) for v in pair):  # noqa: PLR2004 - (user, password)
        return
    raise ConfigError(
        "PrometheusQuery.basic_auth",
        "expected a (user, password) tuple of str",
        'pass ("user", "secret")',
    )


def _check_token(_instance: object, _attribute: object, value: Any) -> None:
    # Never echoed: it is a secret. A number or an empty str would be sent as "Bearer 1.5".
    if value is None or (isinstance(value, str) and value.strip()):
        return
    raise ConfigError(
        "PrometheusQuery.bearer_token",
        f"expected a non-empty str, got a {type(value).__name__}",
        "pass the token as a str, or None",
    )


def _check_headers(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if isinstance(value, Mapping) and all(
        isinstance(k, str) and isinstance(v, str)
        for k, v in value.items()  # pyright: ignore[reportUnknownVariableType]
    ):
        return
    raise ConfigError(
        f"{type(instance).__name__}.{attribute.name}",
        "expected a mapping of str to str",
        "pass {'X-Org': '1'}",
    )


def _labels(metric: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(metric.items()))


def parse_query_result(body: Any) -> Value | None:
    """The value of a ``/api/v1/query`` answer: a number, a vector, or None for no data.

    A vector whose one series has no labels (``sum(...)``) is a number.

    Raises:
        MetricError: The answer is an error, or of a shape this cannot read.
    """
    if not isinstance(body, dict):
        raise MetricError("Prometheus answered with something other than a JSON object")
    answer: dict[str, Any] = body  # pyright: ignore[reportUnknownVariableType]
    if answer.get("status") != "success":
        raise MetricError(
            f"Prometheus: {answer.get('errorType', 'error')}: {answer.get('error', answer)}"
        )
    data: dict[str, Any] = answer.get("data") or {}
    kind: Any = data.get("resultType")
    result: Any = data.get("result")
    try:
        if kind == "scalar":
            return float(result[1])
        if kind == "vector":
            vector = {_labels(item["metric"]): float(item["value"][1]) for item in result}
            if not vector:
                return None
            if len(vector) == 1 and () in vector:
                return vector[()]
            return vector
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise MetricError(f"Prometheus answered a malformed {kind}: {exc}") from None
    raise MetricError(f"Prometheus answered a {kind}; use a query with a scalar or vector result")


@attrs.frozen
class PrometheusQuery:
    """A PromQL query, asked of Prometheus's HTTP API (``/api/v1/query``) at each measurement.

    The query is a template: ``$target``, ``$rollout_id``, ``$old_versions``,
    ``$new_ids``, ``$old_ids``, ``$new_addresses`` and ``$old_addresses`` are
    filled with quoted PromQL literals (the last five are regex alternations
    for ``=~``), so quoting is never the user's job::

        PrometheusQuery(
            "http://127.0.0.1:9090",
            'sum(rate(http_requests_total{instance=~$new_addresses, code=~"5.."}[30s]))'
            ' / sum(rate(http_requests_total{instance=~$new_addresses}[30s]))',
        )

    A scalar result is a number; a vector is a mapping of label set to
    number, except that a vector whose one series has no labels (a
    ``sum(...)``) is a number; an empty vector or NaN is no data. Before
    the rollout changes anything, the query is asked once: a query that
    Prometheus rejects raises :class:`~rolling.ConfigError` from
    ``Rollout.run()``.

    Args:
        url: Prometheus's base URL, such as ``http://127.0.0.1:9090``.
        query: The PromQL template.
        timeout: Longest one query may take, in seconds (also sent to Prometheus).
        bearer_token: Sent as ``Authorization: Bearer ...``; a non-empty str.
        basic_auth: ``(user, password)`` for HTTP basic authentication (not
            with ``bearer_token``: one ``Authorization`` header).
        headers: More request headers.
        tls: For https: an :class:`ssl.SSLContext`; None: the system's trusted certificates.

    .. versionadded:: 0.3.0
    """

    url: str = attrs.field(validator=_check_url)
    query: str = attrs.field(validator=_check_query)
    timeout: float = attrs.field(
        default=10.0, kw_only=True, validator=validator(check_seconds, allow_zero=False)
    )
    bearer_token: str | None = attrs.field(
        default=None, kw_only=True, repr=False, validator=_check_token
    )
    basic_auth: tuple[str, str] | None = attrs.field(
        default=None, kw_only=True, repr=False, validator=_check_basic
    )
    headers: Mapping[str, str] = attrs.field(factory=dict, kw_only=True, validator=_check_headers)
    tls: ssl.SSLContext | None = attrs.field(default=None, kw_only=True, validator=_check_tls)
    _contexts: list[ssl.SSLContext] = attrs.field(
        init=False, factory=list[ssl.SSLContext], eq=False, repr=False, hash=False
    )

    def __attrs_post_init__(self) -> None:
        if self.bearer_token is not None and self.basic_auth is not None:  # one Authorization
            raise ConfigError(
                "PrometheusQuery.bearer_token",
                "bearer_token and basic_auth both set an Authorization header",
                "pass one of them",
            )

    def _headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        if self.bearer_token is not None:
            headers["Authorization"] = f"Bearer {self.bearer_token}"
        elif self.basic_auth is not None:
            token = base64.b64encode(":".join(self.basic_auth).encode()).decode("ascii")
            headers["Authorization"] = f"Basic {token}"
        return headers

    async def _ask(self, query: str) -> Response:
        params = urllib.parse.urlencode(
            {"query": query, "timeout": f"{max(1, round(self.timeout * 1000))}ms"}
        )
        url = f"{self.url.rstrip('/')}/api/v1/query?{params}"
        context = None
        if url.startswith("https:"):
            context = self.tls or await default_context(self._contexts)
        try:
            return await get(url, headers=self._headers(), context=context)
        except HTTPError as exc:
            raise MetricError(f"Prometheus at {self.url}: {exc}") from None

    async def measure(self, context: MeasureContext) -> Value | None:
        """Ask the query, filled from ``context``.

        Raises:
            MetricError: Prometheus could not be asked or answered an error.
        """
        response = await self._ask(fill_template(self.query, context))
        if response.status >= 500 or response.status in {401, 403, 404}:  # noqa: PLR2004
            raise MetricError(f"Prometheus answered HTTP {response.status}")
        return parse_query_result(_json(response))

    async def prepare(self, context: MeasureContext) -> None:
        """Ask the query once, before the rollout changes anything.

        Raises:
            ConfigError: Prometheus rejected the query.
            MetricError: Prometheus could not be asked.
        """
        query = fill_template(self.query, context)
        response = await self._ask(query)
        if response.status in {400, 422}:
            body = _json(response)
            error = body.get("error", body) if isinstance(body, dict) else body  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
            raise ConfigError(
                "PrometheusQuery.query",
                f"Prometheus rejected {query!r}: {error}",
                "fix the PromQL; try it in Prometheus's expression browser",
            )
        if response.status != 200:  # noqa: PLR2004
            raise MetricError(f"Prometheus at {self.url} answered HTTP {response.status}")
        parse_query_result(_json(response))


def _json(response: Response) -> Any:
    try:
        return response.json()
    except HTTPError as exc:
        raise MetricError(f"Prometheus: {exc}") from None


def _number_or_none(value: Any) -> Value | None:
    if value is None or isinstance(value, Mapping):
        return value  # pyright: ignore[reportUnknownVariableType]
    number = float(value)
    return None if math.isnan(number) else number


@attrs.frozen
class WebMetric:
    """A number read from a JSON endpoint, like Argo Rollouts' web provider.

    Args:
        url: The URL to ``GET``.
        extract: Picks the value from the decoded JSON body (a number, a
            mapping of label set to number, or None for no data), such as
            ``lambda body: body["data"]["error_rate"]``. What it raises is an
            error measurement.
        timeout: Longest one request may take, in seconds.
        headers: Request headers (for authentication, say).
        tls: For https: an :class:`ssl.SSLContext`; None: the system's trusted certificates.

    .. versionadded:: 0.3.0
    """

    url: str = attrs.field(validator=_check_url)
    extract: Callable[[Any], Any] = attrs.field(kw_only=True, validator=validator(check_callable))
    timeout: float = attrs.field(
        default=10.0, kw_only=True, validator=validator(check_seconds, allow_zero=False)
    )
    headers: Mapping[str, str] = attrs.field(factory=dict, kw_only=True, validator=_check_headers)
    tls: ssl.SSLContext | None = attrs.field(default=None, kw_only=True, validator=_check_tls)
    _contexts: list[ssl.SSLContext] = attrs.field(
        init=False, factory=list[ssl.SSLContext], eq=False, repr=False, hash=False
    )

    async def measure(self, context: MeasureContext) -> Value | None:  # noqa: ARG002 - the protocol's signature
        """``GET`` the URL and extract the value.

        Raises:
            MetricError: The request failed or did not answer 200 with JSON.
        """
        tls = None
        if self.url.startswith("https:"):
            tls = self.tls or await default_context(self._contexts)
        try:
            response = await get(self.url, headers=self.headers, context=tls)
            if response.status != 200:  # noqa: PLR2004
                raise MetricError(f"{self.url} answered HTTP {response.status}")
            body = response.json()
        except HTTPError as exc:
            raise MetricError(f"{self.url}: {exc}") from None
        return _number_or_none(self.extract(body))

"""The factories of rolling's own metric providers, for rollout files (``rolling.metrics`` group).

A file's values are plain TOML, so what the library takes as a callable is
written declaratively here: ``errors = {code = "5.."}`` (label name to a
regular expression that the whole label value must match) for
:class:`~rolling.metrics.Scrape`'s ``errors``; ``extract = "data.ratio"`` (a
dotted path into the JSON body) for :class:`~rolling.metrics.WebMetric`.
Providers are imported inside the factories (they need ``rolling[analysis]``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, cast

from rolling import ConfigError

__all__ = ["compare_metric", "prometheus_metric", "scrape_metric", "web_metric"]


def _given(**settings: Any) -> dict[str, Any]:
    """The settings the file gave (None: left to the provider's own default)."""
    return {k: v for k, v in settings.items() if v is not None}


def label_matcher(errors: object) -> Callable[[Mapping[str, str]], bool] | None:
    """``{label = "regex"}`` as a predicate on a sample's labels: every regex fully matches."""
    if errors is None:
        return None
    if not isinstance(errors, Mapping) or not errors:
        raise ConfigError(
            "errors",
            f"expected a table of label = regex, got {errors!r}",
            'write errors = {code = "5.."}',
        )
    patterns: dict[str, re.Pattern[str]] = {}
    for label, pattern in errors.items():  # pyright: ignore[reportUnknownVariableType]
        try:
            patterns[str(label)] = re.compile(str(pattern))  # pyright: ignore[reportUnknownArgumentType]
        except re.error as exc:
            raise ConfigError(
                f"errors.{label}", f"is not a regular expression: {exc}", 'write "5.."'
            ) from None

    def matches(labels: Mapping[str, str]) -> bool:
        return all(p.fullmatch(labels.get(name, "")) for name, p in patterns.items())

    return matches


def prometheus_metric(
    *,
    url: str,
    query: str,
    timeout: float | None = None,
    bearer_token: str | None = None,
    basic_auth: object = None,
    headers: Mapping[str, str] | None = None,
) -> Any:
    """``prometheus``: a PromQL query (:class:`~rolling.metrics.PrometheusQuery`)."""
    from rolling.metrics import PrometheusQuery  # noqa: PLC0415 - see the module docstring

    auth = None
    if basic_auth is not None:
        pair = cast("list[object]", basic_auth) if isinstance(basic_auth, list) else []
        if len(pair) != 2:  # noqa: PLR2004 - user, password
            raise ConfigError(
                "basic_auth", "expected [user, password]", 'write basic_auth = ["me", "${PW}"]'
            )
        auth = (str(pair[0]), str(pair[1]))
    return PrometheusQuery(
        url,
        query,
        **_given(timeout=timeout, bearer_token=bearer_token, basic_auth=auth, headers=headers),
    )


def scrape_metric(
    *,
    metric: str,
    errors: Mapping[str, str] | None = None,
    quantile: float | None = None,
    of: str | None = None,
    path: str | None = None,
    timeout: float | None = None,
) -> Any:
    """``scrape``: the instances' own ``/metrics`` (:class:`~rolling.metrics.Scrape`)."""
    from rolling.metrics import Scrape  # noqa: PLC0415 - see the module docstring

    return Scrape(
        metric,
        **_given(
            errors=label_matcher(errors), quantile=quantile, of=of, path=path, timeout=timeout
        ),
    )


def compare_metric(
    *,
    metric: str,
    errors: Mapping[str, str] | None = None,
    quantile: float | None = None,
    path: str | None = None,
    timeout: float | None = None,
    alpha: float | None = None,
    min_effect: float | None = None,
    higher_is_worse: bool | None = None,
    window: int | None = None,
    min_samples: int | None = None,
) -> Any:
    """``compare``: new version against old (:class:`~rolling.metrics.Compare`).

    Its metric's condition is written ``failure = "worse"``.
    """
    from rolling.metrics import Compare  # noqa: PLC0415 - see the module docstring

    return Compare(
        metric,
        **_given(
            errors=label_matcher(errors),
            quantile=quantile,
            path=path,
            timeout=timeout,
            alpha=alpha,
            min_effect=min_effect,
            higher_is_worse=higher_is_worse,
            window=window,
            min_samples=min_samples,
        ),
    )


def web_metric(
    *,
    url: str,
    extract: str = "",
    timeout: float | None = None,
    headers: Mapping[str, str] | None = None,
) -> Any:
    """``web``: a number in a JSON body (:class:`~rolling.metrics.WebMetric`).

    ``extract`` is a dotted path of keys (``"data.ratio"``; list indexes are
    numbers); empty: the whole body. A missing key is an error measurement.
    """
    from rolling.metrics import WebMetric  # noqa: PLC0415 - see the module docstring

    if not isinstance(extract, str):
        raise ConfigError("extract", f"expected a dotted path, got {extract!r}", 'write "data.x"')
    keys = [k for k in extract.split(".") if k]

    def pick(body: Any) -> Any:
        found: Any = body
        for key in keys:
            found = cast("Any", found[int(key)] if isinstance(found, list) else found[key])
        return found

    return WebMetric(url, extract=pick, **_given(timeout=timeout, headers=headers))

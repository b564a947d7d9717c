"""Prometheus HTTP API: instant (/api/v1/query) and range (/api/v1/query_range) queries."""

from __future__ import annotations

import math
import time

import httpx

from flows.metrics import MetricError
from models import NO_DATA


def render(query: str, *, service: str, version: str, interval_s: float) -> str:
    """Fill {service}, {version}, {interval} in a PromQL template ({interval} becomes a duration like 10s)."""
    window = f"{max(1, math.ceil(interval_s))}s"
    return query.replace("{service}", service).replace("{version}", version).replace("{interval}", window)


def _get(url: str, path: str, params: dict, timeout_s: float) -> list:
    try:
        response = httpx.get(f"{url.rstrip('/')}{path}", params=params, timeout=timeout_s)
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise MetricError(f"prometheus {type(exc).__name__}") from None
    if body.get("status") != "success":
        raise MetricError(f"prometheus: {body.get('errorType', 'error')}: {body.get('error', response.status_code)}")
    return body["data"]["result"]


def instant(url: str, query: str, *, timeout_s: float = 5) -> float:
    """The query's single value now; several series are an error (the query must aggregate)."""
    result = _get(url, "/api/v1/query", {"query": query}, timeout_s)
    if isinstance(result, list) and len(result) > 1:
        raise MetricError(f"prometheus: {len(result)} series, expected one (aggregate with sum/max)")
    if not result:
        raise MetricError(f"{NO_DATA}: prometheus returned no series")
    value = result[0]["value"][1] if isinstance(result, list) else result[1]
    return float(value)


def range_values(url: str, query: str, *, seconds: float, step_s: float = 1, timeout_s: float = 5) -> list[float]:
    """The query's values over the last `seconds`, one per `step_s` (NaN points dropped)."""
    end = time.time()
    result = _get(url, "/api/v1/query_range",
                  {"query": query, "start": end - seconds, "end": end, "step": max(step_s, 0.001)}, timeout_s)
    values = [float(v) for series in result for _, v in series["values"]]
    values = [v for v in values if not math.isnan(v)]
    if not values:
        raise MetricError(f"{NO_DATA}: prometheus returned no points in the range")
    return values

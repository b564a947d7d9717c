"""http_probe: send N requests to a URL and measure error rate and latency percentiles.

Requests go out concurrently (a few at a time) so one interval's probe fits in the interval even against a
slow canary; each is a fresh measurement, so a version that turns bad is seen at the next interval.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

from flows.metrics import MetricError


@dataclass
class ProbeResult:
    url: str
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0

    @property
    def count(self) -> int:
        return len(self.latencies_ms)

    def value(self, query: str) -> float:
        if not self.count:
            raise MetricError(f"http_probe: no answers from {self.url}")
        if query == "error_rate":
            return self.errors / self.count
        quantile = {"latency_p50_ms": 0.50, "latency_p95_ms": 0.95, "latency_p99_ms": 0.99}[query]
        return percentile(self.latencies_ms, quantile)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (the value a fraction q of requests were at or under)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def probe(client: httpx.Client, url: str, requests: int, *, concurrency: int = 8, timeout_s: float = 5) -> ProbeResult:
    """A request that fails to connect or times out counts as an error with the time it took."""

    def one(_: int) -> tuple[float, bool]:
        started = time.perf_counter()
        try:
            ok = client.get(url, timeout=timeout_s).status_code < 500
        except httpx.HTTPError:
            ok = False
        return (time.perf_counter() - started) * 1000, ok

    with ThreadPoolExecutor(max_workers=min(concurrency, requests)) as pool:
        answers = list(pool.map(one, range(requests)))
    return ProbeResult(url=url, latencies_ms=[ms for ms, _ in answers], errors=sum(1 for _, ok in answers if not ok))

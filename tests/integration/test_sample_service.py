"""The sample service the canary demos and tests route traffic to."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx

from cli.dev import free_port

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "sample_service.py"


def start(version, *args):
    port = free_port()
    process = subprocess.Popen([sys.executable, str(SCRIPT), "--port", str(port), "--version", version, *args])
    deadline = time.monotonic() + 15
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process, f"http://127.0.0.1:{port}"
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "sample service did not start"
        time.sleep(0.1)


def test_error_rate_and_latency_are_settable_and_exported_as_metrics():
    process, url = start("canary", "--error-rate", "0", "--latency-ms", "5")
    try:
        with httpx.Client(timeout=5) as client:
            assert {client.get(url + "/").status_code for _ in range(20)} == {200}
            assert client.post(url + "/admin", json={"error_rate": 1.0, "latency_ms": 60}).json()["error_rate"] == 1.0
            started = time.perf_counter()
            codes = [client.get(url + "/").status_code for _ in range(10)]
            assert set(codes) == {500} and (time.perf_counter() - started) / 10 >= 0.045
            metrics = client.get(url + "/metrics").text
        assert 'sample_requests_total{code="200",version="canary"} 20.0' in metrics
        assert 'sample_requests_total{code="500",version="canary"} 10.0' in metrics
        assert 'sample_request_seconds_count{version="canary"} 30.0' in metrics
    finally:
        process.terminate()
        process.wait(timeout=10)

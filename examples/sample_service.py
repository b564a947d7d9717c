"""A tiny HTTP service for canary demos and tests: run one process per version (stable, canary).

    python examples/sample_service.py --port 9101 --version stable
    python examples/sample_service.py --port 9102 --version canary --error-rate 0.2 --latency-ms 150

GET /         answers 200, or 500 with probability `error_rate`, after `latency_ms` (+-20 % jitter)
GET /health   always 200
GET /metrics  Prometheus metrics: sample_requests_total{version,code}, sample_request_seconds{version}
POST /admin   JSON {"error_rate": 0.5, "latency_ms": 300} changes behaviour at run time
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest


class Behaviour:
    def __init__(self, error_rate: float, latency_ms: float):
        self.lock = threading.Lock()
        self.error_rate = error_rate
        self.latency_ms = latency_ms


def make_server(port: int, version: str, behaviour: Behaviour) -> ThreadingHTTPServer:
    registry = CollectorRegistry()
    requests = Counter("sample_requests_total", "Requests served", ["version", "code"], registry=registry)
    seconds = Histogram("sample_request_seconds", "Request latency", ["version"], registry=registry,
                        buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
    rng = random.Random()

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Version", version)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):  # noqa: N802
            if self.path == "/metrics":
                return self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            if self.path == "/health":
                return self._send(200, b'{"status": "ok"}')
            started = time.perf_counter()
            with behaviour.lock:
                error_rate, latency_ms = behaviour.error_rate, behaviour.latency_ms
            time.sleep(max(latency_ms * rng.uniform(0.8, 1.2), 0) / 1000)
            code = 500 if rng.random() < error_rate else 200
            requests.labels(version, str(code)).inc()
            seconds.labels(version).observe(time.perf_counter() - started)
            self._send(code, json.dumps({"version": version, "ok": code == 200}).encode())

        def do_POST(self):  # noqa: N802
            if self.path != "/admin":
                return self._send(404, b"{}")
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            with behaviour.lock:
                behaviour.error_rate = float(body.get("error_rate", behaviour.error_rate))
                behaviour.latency_ms = float(body.get("latency_ms", behaviour.latency_ms))
            self._send(200, json.dumps({"error_rate": behaviour.error_rate,
                                        "latency_ms": behaviour.latency_ms}).encode())

        def log_message(self, *args):
            pass

    class Server(ThreadingHTTPServer):
        # The default listen backlog (5) overflows under a burst of probe connections, and a dropped SYN is
        # retried only after a second: that second would show up as latency the service never had.
        request_queue_size = 128
        daemon_threads = True

    return Server(("127.0.0.1", port), Handler)


def main() -> None:
    parser = argparse.ArgumentParser(description="changeflow's sample service for canary demos")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--version", default="stable")
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    args = parser.parse_args()
    make_server(args.port, args.version, Behaviour(args.error_rate, args.latency_ms)).serve_forever()


if __name__ == "__main__":
    main()

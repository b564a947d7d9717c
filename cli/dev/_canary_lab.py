"""A canary lab on 127.0.0.1: the sample service as two processes (stable, canary), nginx in front of them and
a Prometheus scraping them. Used by `changeflow demo`, the integration tests and the benchmarks.

Every process is started with its own files under one directory and stopped by `Lab.stop()`.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ._nginx import nginx_available, nginx_binary, write_nginx_conf
from ._stack import free_port
from flows.traffic.nginx import upstream_block

SAMPLE_SERVICE = Path(__file__).resolve().parents[2] / "examples" / "sample_service.py"

# Error ratio of one version over the last 3 s; `or vector(0)` makes "no errors yet" a 0, not "no data".
PROMQL_ERROR_RATE = ('(sum(rate(sample_requests_total{version="{version}",code="500"}[3s])) or vector(0)) / '
                     'sum(rate(sample_requests_total{version="{version}"}[3s]))')
PROMQL_P95_MS = ('histogram_quantile(0.95, sum by (le) (rate(sample_request_seconds_bucket{version="{version}"}[3s])))'
                 ' * 1000')


def prometheus_available() -> bool:
    return shutil.which("prometheus") is not None


def _wait_http(url: str, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout_s:g} s")


@dataclass
class SampleVersion:
    version: str
    port: int
    process: subprocess.Popen

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set(self, *, error_rate: float | None = None, latency_ms: float | None = None) -> None:
        body = {k: v for k, v in (("error_rate", error_rate), ("latency_ms", latency_ms)) if v is not None}
        httpx.post(f"{self.url}/admin", json=body, timeout=5).raise_for_status()


@dataclass
class Lab:
    root: Path
    service: str = "shop"
    stable: SampleVersion | None = None
    canary: SampleVersion | None = None
    nginx_port: int | None = None
    prometheus_port: int | None = None
    _processes: list[subprocess.Popen] = field(default_factory=list)
    _nginx_conf: Path | None = None

    def start(self, *, nginx: bool = True, prometheus: bool = False) -> "Lab":
        """Both versions, then nginx and Prometheus when asked for and installed (`nginx_port` and
        `prometheus_port` stay None otherwise)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.start_versions("v1", "v2")
        if nginx and nginx_available():
            self.start_nginx()
        if prometheus and prometheus_available():
            self.start_prometheus()
            self.wait_for_scrapes()
        return self

    # ---- sample service -------------------------------------------------------------------------------
    def start_versions(self, stable_version: str = "v1", canary_version: str = "v2", latency_ms: float = 10) -> None:
        self.stable = self._start_sample(stable_version, latency_ms)
        self.canary = self._start_sample(canary_version, latency_ms)

    def _start_sample(self, version: str, latency_ms: float) -> SampleVersion:
        port = free_port()
        log = open(self.root / f"sample-{version}.log", "ab")
        process = subprocess.Popen([sys.executable, str(SAMPLE_SERVICE), "--port", str(port), "--version", version,
                                    "--latency-ms", str(latency_ms)], stdout=log, stderr=subprocess.STDOUT)
        self._processes.append(process)
        _wait_http(f"http://127.0.0.1:{port}/health")
        return SampleVersion(version, port, process)

    # ---- nginx ---------------------------------------------------------------------------------------
    @property
    def include_file(self) -> Path:
        return self.root / "nginx" / f"upstream-{self.service}.conf"

    def start_nginx(self) -> None:
        base = self.root / "nginx"
        base.mkdir(parents=True, exist_ok=True)
        self.nginx_port = free_port()
        self.include_file.write_text(upstream_block(self.service, self._hostport(self.stable),
                                                    self._hostport(self.canary), 0))
        self._nginx_conf = write_nginx_conf(base, f"""
    include {self.include_file};
    server {{
        listen 127.0.0.1:{self.nginx_port};
        location / {{ proxy_pass http://{self.service}; proxy_next_upstream off; }}
    }}""", foreground=False, worker_connections=512)
        result = subprocess.run([nginx_binary(), "-c", str(self._nginx_conf), "-p", str(base), "-e",
                                 str(base / "error.log")], capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            raise RuntimeError(f"nginx did not start: {result.stderr.strip()}")
        _wait_http(f"{self.entry_url}/health")

    @property
    def entry_url(self) -> str:
        return f"http://127.0.0.1:{self.nginx_port}"

    def nginx_router(self, *, canary_address: str | None = None) -> dict:
        return {"kind": "nginx", "upstream": self.service, "include_file": str(self.include_file),
                "stable": self._hostport(self.stable), "canary": canary_address or self._hostport(self.canary),
                "nginx": nginx_binary(), "conf": str(self._nginx_conf), "prefix": str(self.root / "nginx")}

    def traffic_split(self, requests: int = 40) -> dict[str, int]:
        """Send requests through nginx (a new connection each) and count the versions that answered."""
        counts: dict[str, int] = {}
        for _ in range(requests):
            response = httpx.get(f"{self.entry_url}/health", timeout=5)
            version = response.headers.get("X-Version", "?")
            counts[version] = counts.get(version, 0) + 1
        return counts

    # ---- prometheus ----------------------------------------------------------------------------------
    def start_prometheus(self) -> None:
        base = self.root / "prometheus"
        base.mkdir(parents=True, exist_ok=True)
        self.prometheus_port = free_port()
        targets = ", ".join(f"'127.0.0.1:{v.port}'" for v in (self.stable, self.canary))
        (base / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"scrape_configs:\n  - job_name: sample\n    static_configs:\n      - targets: [{targets}]\n")
        log = open(base / "prometheus.log", "ab")
        process = subprocess.Popen(
            ["prometheus", f"--config.file={base / 'prometheus.yml'}", f"--storage.tsdb.path={base / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.prometheus_port}", "--storage.tsdb.retention.time=1h"],
            stdout=log, stderr=subprocess.STDOUT)
        self._processes.append(process)
        _wait_http(f"{self.prometheus_url}/-/ready", timeout_s=60)

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    def wait_for_scrapes(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            body = httpx.get(f"{self.prometheus_url}/api/v1/query", params={"query": "up"}, timeout=5).json()
            ups = [s for s in body["data"]["result"] if s["value"][1] == "1"]
            if len(ups) == 2:
                return
            time.sleep(0.3)
        raise RuntimeError("Prometheus is not scraping both sample versions")

    # ---- config --------------------------------------------------------------------------------------
    def canary_config(self, router: dict | None = None) -> dict:
        return {
            "prometheus_url": self.prometheus_url if self.prometheus_port else None,
            "services": {self.service: {"router": router or self.nginx_router(),
                                        "stable_url": f"{self.stable.url}/", "canary_url": f"{self.canary.url}/",
                                        **({"router_url": f"{self.entry_url}/"} if self.nginx_port else {})}},
        }

    @staticmethod
    def _hostport(version: SampleVersion) -> str:
        return f"127.0.0.1:{version.port}"

    def stop(self) -> None:
        if self._nginx_conf is not None and (self.root / "nginx" / "nginx.pid").exists():
            subprocess.run([nginx_binary(), "-c", str(self._nginx_conf), "-p", str(self.root / "nginx"), "-s",
                            "stop"], capture_output=True, timeout=30)
        for process in self._processes:
            process.terminate()
        for process in self._processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


class TrafficLoad:
    """Steady traffic through the router so Prometheus sees both versions (users would make it in production)."""

    def __init__(self, url: str, per_second: float = 40):
        import threading

        self.url, self.period = url, 1 / per_second
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "TrafficLoad":
        self._thread.start()
        return self

    def _run(self) -> None:
        with httpx.Client() as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    client.get(self.url, timeout=2)
                except httpx.HTTPError:
                    pass
                self._stop.wait(max(0.0, self.period - (time.monotonic() - started)))

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

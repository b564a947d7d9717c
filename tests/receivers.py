"""Real servers on 127.0.0.1 that notifications are sent to: an HTTP receiver with scripted answers and an
aiosmtpd SMTP server. Used by the notification tests and the delivery benchmark."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    path: str
    headers: dict
    body: bytes
    at: float
    status: int


@dataclass
class HttpReceiver:
    """Records every POST; answers from `script` (status, headers) in order, then 200."""

    server: ThreadingHTTPServer
    requests: list[Received] = field(default_factory=list)
    script: deque = field(default_factory=deque)
    lock: threading.Lock = field(default_factory=threading.Lock)
    arrived: list[bytes] = field(default_factory=list)  # the body of every POST that came in, answered or not
    hold_marker: bytes | None = None  # POSTs whose body holds it wait for `release()` (after a first 503)
    released: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def answer(self, *responses: tuple[int, dict]) -> None:
        self.script.extend(responses)

    def refuse_then_hold(self, marker: bytes) -> None:
        """The first POST whose body holds `marker` gets a 503 (Retry-After: 1); later ones are left unanswered
        until `release()`: a sender caught mid-send. Other POSTs are answered as usual."""
        self.released.clear()
        self.hold_marker = marker

    def release(self) -> None:
        self.hold_marker = None
        self.released.set()

    def arrivals_with(self, marker: bytes) -> int:
        with self.lock:
            return sum(marker in body for body in self.arrived)

    def delivered(self, path: str | None = None) -> list[Received]:
        return [r for r in self.requests if r.status < 300 and (path is None or r.path == path)]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_http_receiver(port: int = 0) -> HttpReceiver:
    holder: dict = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            receiver: HttpReceiver = holder["receiver"]
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with receiver.lock:
                receiver.arrived.append(body)
                marker = receiver.hold_marker
                marked = marker is not None and marker in body
                first = marked and sum(marker in b for b in receiver.arrived) == 1  # type: ignore[operator]
            if marked and not first:
                receiver.released.wait(timeout=300)
            with receiver.lock:
                if first:
                    status, headers = 503, {"Retry-After": "1"}
                else:
                    status, headers = receiver.script.popleft() if receiver.script else (200, {})
                receiver.requests.append(Received(self.path, dict(self.headers), body, time.monotonic(), status))
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            except OSError:
                pass  # the sender died while it waited (tests/e2e: a killed sweep)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    receiver = HttpReceiver(server)
    holder["receiver"] = receiver
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return receiver


class SmtpSink:
    """aiosmtpd server collecting messages."""

    def __init__(self, port: int):
        from aiosmtpd.controller import Controller

        self.messages: list = []
        sink = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's naming
                sink.messages.append((envelope.rcpt_tos, message_from_bytes(envelope.content, policy=policy.default)))
                return "250 OK"

        self.controller = Controller(Handler(), hostname="127.0.0.1", port=port)
        self.controller.start()
        self.port = port

    def stop(self) -> None:
        self.controller.stop()


def start_health_server() -> HttpReceiver:
    """GET /healthy -> 200 {"status": "ok"}, /slow -> 200 after 1.5 s, /failing -> 503."""
    holder: dict = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            if self.path.startswith("/slow"):
                time.sleep(1.5)
            status = 503 if self.path.startswith("/failing") else 200
            body = b'{"status": "ok", "db": {"connected": true}}' if status == 200 else b'{"status": "down"}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver = HttpReceiver(server)
    holder["receiver"] = receiver
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return receiver

"""Prefect's own server application, served by uvicorn as `prefect server start` serves it, behind one ASGI layer
that retries a request the server answered 503.

Why: on SQLite, Prefect's server answers `503 Service Unavailable` when a transaction that read first cannot take
the write lock (SQLITE_BUSY is returned at once then, SQLite's busy timeout does not apply). With 50 run-form
submissions at once, 49 were answered 503 (tests/e2e/test_load.py). Prefect's Python client retries a 503, but the
Prefect UI and plain HTTP callers do not: the UI shows "Something went wrong" and the change is never filed. The
503 means the transaction was rolled back, so sending the same request again is what Prefect's client does too;
here it happens once, in front of every caller. A PostgreSQL-backed Prefect server does not need it, and the layer
then never sees a 503 to retry.

Run as `python -m cli.dev._prefect_server --host 127.0.0.1 --port 4200` (cli.dev.start_server does)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Under uvicorn's logger: Prefect's logging setup leaves other loggers at WARNING.
logger = logging.getLogger("uvicorn.error.changeflow")

# Up to ~15 s in all: contention on SQLite clears in milliseconds to a few seconds at the loads we test.
MAX_ATTEMPTS = 12
FIRST_DELAY_S = 0.05
MAX_DELAY_S = 2.5


# Prefect's API reads with POST too (filters, counts, history): those never take SQLite's write lock.
READ_ONLY_SUFFIXES = ("/filter", "/count", "/paginate", "/history", "/validate")


def takes_the_write_lock(scope: Scope) -> bool:
    path = scope.get("path", "")
    if scope.get("method", "GET") in ("GET", "HEAD", "OPTIONS"):
        return False
    return "/ui/" not in path and not path.rstrip("/").endswith(READ_ONLY_SUFFIXES)


class RetryServiceUnavailable:
    """ASGI middleware: an HTTP request whose response starts with 503 is sent to the app again, with the same
    body, after a jittered exponential backoff; the caller sees only the last attempt's response. Websockets and
    lifespan pass through untouched.

    With `one_writer` (SQLite), requests that write go through the app one at a time: SQLite has one writer
    anyway, and 50 writers retrying against each other still lost 33 of 50 after 12 attempts each."""

    def __init__(self, app: ASGIApp, max_attempts: int = MAX_ATTEMPTS, one_writer: bool = False) -> None:
        self.app = app
        self.max_attempts = max_attempts
        self.write_lock = asyncio.Lock() if one_writer else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        delay = FIRST_DELAY_S
        for attempt in range(1, self.max_attempts + 1):
            last = attempt == self.max_attempts
            if self.write_lock is not None and takes_the_write_lock(scope):
                async with self.write_lock:
                    forwarded = await self._attempt(scope, body, receive, send, forward_503=last)
            else:
                forwarded = await self._attempt(scope, body, receive, send, forward_503=last)
            if forwarded:
                if attempt > 1:
                    logger.info("%s %s answered after %d attempts (503 retried)", scope["method"], scope["path"],
                                attempt)
                return
            await asyncio.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, MAX_DELAY_S)

    async def _attempt(self, scope: Scope, body: bytes, receive: Receive, send: Send, forward_503: bool) -> bool:
        """One call of the app; True when its response went to the caller, False when it was a 503 held back."""
        delivered = False
        state = {"forward": True}

        async def replay_body() -> Message:
            nonlocal delivered
            if delivered:
                return await receive()  # the body was read: what is left to hear is the client disconnecting
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def filtered_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["forward"] = message["status"] != 503 or forward_503
            if state["forward"]:
                await send(message)

        try:
            # A copy per attempt: Starlette's routing rewrites the scope (path, root_path) as it descends.
            await self.app(dict(scope), replay_body, filtered_send)
        except Exception:
            # Starlette's ServerErrorMiddleware re-raises after sending its error response (so servers can log it):
            # for a 503 held back here, that is the retryable error itself.
            if state["forward"]:
                raise
        return state["forward"]


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Prefect's server (API, UI and services) with 503 retries")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4200)
    args = parser.parse_args(argv)

    import uvicorn
    from prefect.server.api.server import create_app
    from prefect.settings import get_current_settings

    url = get_current_settings().server.database.connection_url
    on_sqlite = url is None or url.get_secret_value().startswith("sqlite")
    # What `prefect server start` runs in the foreground with one worker and its services (cli/_server_utils.py).
    app = RetryServiceUnavailable(create_app(final=True, webserver_only=False), one_writer=on_sqlite)
    uvicorn.run(app, host=args.host, port=args.port, timeout_keep_alive=5, log_level="info")


if __name__ == "__main__":
    main()

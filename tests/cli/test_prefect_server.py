"""The layer in front of Prefect's server application (cli/dev/_prefect_server.py): a 503 is retried with the same
body, on a Starlette application shaped like Prefect's (a mounted API, an exception handler that answers 503 and
a ServerErrorMiddleware that re-raises after answering). The load it exists for is tests/e2e/test_load.py."""

from __future__ import annotations

import asyncio
import logging

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from cli.dev._prefect_server import RetryServiceUnavailable, takes_the_write_lock


class DatabaseBusy(Exception):
    pass


def prefect_shaped_app(failures: int, seen: list[bytes]) -> Starlette:
    """POST /api/runs fails `failures` times with DatabaseBusy (answered 503, then re-raised), then answers 201."""

    async def create_run(request: Request) -> JSONResponse:
        seen.append(await request.body())
        if len(seen) <= failures:
            raise DatabaseBusy("database is locked")
        return JSONResponse({"id": len(seen)}, status_code=201)

    async def busy(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"exception_message": "Service Unavailable"}, status_code=503)

    # As in Prefect's create_app: the API is its own application, mounted, with the handler that answers 503.
    api = Starlette(routes=[Route("/runs", create_run, methods=["POST"])], exception_handlers={Exception: busy})
    return Starlette(routes=[Mount("/api", app=api)])


async def post(app, body: bytes) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://prefect") as client:
        return await client.post("/api/runs", content=body)


def test_a_busy_answer_is_retried_with_the_same_body_and_the_caller_sees_only_the_success(caplog):
    seen: list[bytes] = []
    caplog.set_level(logging.INFO, logger="uvicorn.error.changeflow")
    response = asyncio.run(post(RetryServiceUnavailable(prefect_shaped_app(3, seen), one_writer=True), b'{"a": 1}'))
    assert (response.status_code, response.json()) == (201, {"id": 4})
    assert seen == [b'{"a": 1}'] * 4
    assert "POST /api/runs answered after 4 attempts" in caplog.text


def test_after_the_last_attempt_the_503_reaches_the_caller():
    seen: list[bytes] = []
    response = asyncio.run(post(RetryServiceUnavailable(prefect_shaped_app(99, seen), max_attempts=3), b"x"))
    assert response.status_code == 503
    assert len(seen) == 3


def test_without_the_layer_the_caller_sees_the_503():
    seen: list[bytes] = []
    response = asyncio.run(post(prefect_shaped_app(1, seen), b"x"))
    assert response.status_code == 503


def test_reads_sent_as_post_do_not_wait_for_the_writer():
    def scope(method: str, path: str) -> dict:
        return {"type": "http", "method": method, "path": path}

    assert takes_the_write_lock(scope("POST", "/api/deployments/1/create_flow_run"))
    assert takes_the_write_lock(scope("POST", "/api/flow_runs/1/resume"))
    assert not takes_the_write_lock(scope("POST", "/api/flow_runs/filter"))
    assert not takes_the_write_lock(scope("POST", "/api/ui/flow_runs/history"))
    assert not takes_the_write_lock(scope("GET", "/api/flow_runs/1"))

"""The pipeline API (issue 32): a CI/CD pipeline that does not run the CLI files its change and waits on its
approval gate over HTTP, as `changeflow submit --wait` does. Every request carries the pipeline's token
(`Authorization: Bearer cfa_...`, issued by `changeflow token issue --service ...`): it names the automation, and
the token's services bound what it may file, read and wait on.

- `POST /api/v1/changes`: file a change (the body is the request, as `changeflow submit` reads it); 201.
- `GET /api/v1/changes/{key}`: where its gate stands.
- `GET /api/v1/changes/{key}/wait?timeout=S`: a long poll, answered as soon as the change may proceed or will
  not, or after S seconds with `pending` (ask again).
- `POST /api/v1/changes/{key}/cancel`: call the pipeline's own change off (its job was cancelled): withdrawn
  before implementation, aborted during it (its run stopped, the change rolled back).
- `GET /api/v1/openapi.json`: this API, described.

A refusal answers 4xx with `error` and, for bad input, `fields` naming each field and its problem; nothing is
written by a refused request, and a request without a valid token is on the audit trail (summed per source)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.schemas import SchemaGenerator

from models import (ChangeflowError, ChangeRequest, GateStatus, GateVerdict, InputError, NotFound, PolicyViolation,
                    Services, TokenHolder)

# services, the request's fields, the pipeline's token -> the change, recorded (its run started)
FileChange = Callable[[Services, dict, str], ChangeRequest]

# the change, whether it was aborted (else withdrawn), the message -> whether its run was reached
EndRun = Callable[[ChangeRequest, bool, str], bool]

PREFIX = "/api/v1"
_NO_STORE = {"Cache-Control": "no-store"}


def file_with_prefect(services: Services, data: dict, token: str) -> ChangeRequest:
    from flows import file_change

    return file_change(services, data, token=token)


def end_run_with_prefect(change: ChangeRequest, aborted: bool, message: str) -> bool:
    from flows import end_run_of

    return end_run_of(change, aborted=aborted, message=message)


@dataclass(frozen=True)
class PipelineApiLimits:
    max_body_bytes: int = 65_536
    wait_max_s: float = 50.0  # under the 60 s a reverse proxy commonly allows an idle request
    poll_s: float = 2.0
    refusal_summary: timedelta = timedelta(seconds=60)


class _Refused(Exception):
    def __init__(self, status: int, error: str, fields: list[tuple[str, str]] | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(error)
        self.response = JSONResponse(
            {"error": error, **({"fields": [{"field": f, "problem": p} for f, p in fields]} if fields else {})},
            status_code=status, headers={**_NO_STORE, **(headers or {})})


def _record(status: GateStatus) -> dict[str, Any]:
    change = status.change
    return {"key": change.key, "state": change.state, "verdict": status.verdict.value,
            "waiting_for": status.waiting_for or None, "reason": status.reason or None,
            "type": change.type, "service": change.service, "title": change.title, "requester": change.requester,
            "risk_level": change.risk_level, "flow_run_id": change.flow_run_id,
            "approved_at": change.approved_at.isoformat() if change.approved_at else None}


def pipeline_routes(services: Services, *, file_change: FileChange = file_with_prefect,
                    end_run: EndRun = end_run_with_prefect,
                    limits: PipelineApiLimits = PipelineApiLimits()) -> list[BaseRoute]:

    async def holder_of(request: Request) -> tuple[TokenHolder, str]:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _Refused(401, "authorization: send the pipeline's token as 'Authorization: Bearer cfa_...'",
                           [("authorization", "missing")], {"WWW-Authenticate": "Bearer"})
        holder = await run_in_threadpool(services.automation_tokens.holder, token)
        if holder is None:
            source = request.client.host if request.client else "unknown"
            await run_in_threadpool(services.links.record_unauthenticated, "a pipeline token forged or revoked",
                                    via="pipeline API", source=source, every=limits.refusal_summary)
            raise _Refused(401, "authorization: not a token changeflow issued, or it was revoked",
                           [("authorization", "not valid")], {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return holder, token.strip()

    async def status_in_scope(holder: TokenHolder, key: str) -> GateStatus:
        try:
            status = await run_in_threadpool(services.gate_status.status, key)
        except NotFound:
            status = None
        # Out of its scope reads as unknown: a token of one service learns nothing of another's changes.
        if status is None or not holder.covers(status.change.service):
            raise _Refused(404, f"no change {key} among the services of this token ({', '.join(holder.services)})")
        return status

    async def body_of(request: Request) -> dict:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limits.max_body_bytes:
            raise _Refused(413, f"the request is larger than {limits.max_body_bytes} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limits.max_body_bytes:
                raise _Refused(413, f"the request is larger than {limits.max_body_bytes} bytes")
        try:
            data = json.loads(bytes(body) or b"null")
        except (UnicodeDecodeError, ValueError):
            raise _Refused(400, "body: not JSON", [("body", "not JSON")]) from None
        if not isinstance(data, dict):
            raise _Refused(400, "body: a JSON object of the request's fields", [("body", "not an object")])
        return data

    async def submit(request: Request) -> Response:
        """File a change as the token's pipeline; it goes to its approvers at once (the token confirms the filing).
        ---
        summary: File a change request
        security: [{pipelineToken: []}]
        requestBody:
          required: true
          content: {application/json: {schema: {$ref: '#/components/schemas/ChangeRequest'}}}
        responses:
          201:
            description: Filed; the gate's status
            content: {application/json: {schema: {$ref: '#/components/schemas/GateStatus'}}}
          400:
            description: Bad input; each field and its problem
            content: {application/json: {schema: {$ref: '#/components/schemas/Refusal'}}}
          401:
            description: No token, or one forged or revoked
          403:
            description: Refused by policy (another requester, a service outside the token's scope, a lockdown)
          413:
            description: Body too large
          503:
            description: Prefect cannot start the change's run
        """
        holder, token = await holder_of(request)
        data = await body_of(request)
        requester = data.setdefault("requester", holder.automation)
        if requester != holder.automation:
            raise _Refused(403, f"requester: this token files for {holder.automation}, not {requester!r}",
                           [("requester", "not the token's automation")])
        try:
            change = await run_in_threadpool(file_change, services, data, token)
        except InputError as exc:
            raise _Refused(400, str(exc), [(p.field, p.message) for p in exc.problems]) from None
        except PolicyViolation as exc:
            raise _Refused(403, str(exc)) from None
        except ChangeflowError as exc:  # Prefect unreachable: nothing was filed
            raise _Refused(503, str(exc)) from None
        status = await run_in_threadpool(services.gate_status.status, change.key)
        return JSONResponse(_record(status), status_code=201, headers={
            **_NO_STORE, "Location": f"{PREFIX}/changes/{change.key}"})

    async def read(request: Request) -> Response:
        """Where a change's approval gate stands.
        ---
        summary: Read a change's gate
        security: [{pipelineToken: []}]
        parameters: [{name: key, in: path, required: true, schema: {type: string}, example: CHG-000042}]
        responses:
          200:
            description: The gate's status
            content: {application/json: {schema: {$ref: '#/components/schemas/GateStatus'}}}
          401:
            description: No token, or one forged or revoked
          404:
            description: No such change among the token's services
        """
        holder, _ = await holder_of(request)
        status = await status_in_scope(holder, request.path_params["key"])
        return JSONResponse(_record(status), headers=_NO_STORE)

    async def wait(request: Request) -> Response:
        """Hold the request until the change may proceed or will not, or `timeout` seconds pass (then `pending`:
        ask again). The verdicts are `changeflow wait`'s exit codes: proceed 0, refused 1, pending 3.
        ---
        summary: Wait on a change's gate (long poll)
        security: [{pipelineToken: []}]
        parameters:
          - {name: key, in: path, required: true, schema: {type: string}, example: CHG-000042}
          - name: timeout
            in: query
            required: false
            description: seconds to hold the request (at most the server's limit)
            schema: {type: number, default: 30}
        responses:
          200:
            description: The gate's status once decided, or pending at the timeout
            content: {application/json: {schema: {$ref: '#/components/schemas/GateStatus'}}}
          400:
            description: A timeout that is not a positive number of seconds
          401:
            description: No token, or one forged or revoked
          404:
            description: No such change among the token's services
        """
        holder, _ = await holder_of(request)
        given = request.query_params.get("timeout", "30")
        try:
            timeout = float(given)
        except ValueError:
            timeout = -1.0
        if not 0 < timeout < float("inf"):
            raise _Refused(400, f"timeout: {given!r} is not a positive number of seconds",
                           [("timeout", "not a positive number")])
        deadline = time.monotonic() + min(timeout, limits.wait_max_s)
        key = request.path_params["key"]
        while True:
            status = await status_in_scope(holder, key)
            remaining = deadline - time.monotonic()
            if status.verdict is not GateVerdict.pending or remaining <= 0 or await request.is_disconnected():
                return JSONResponse(_record(status), headers=_NO_STORE)
            await asyncio.sleep(min(limits.poll_s, remaining))

    async def call_off(request: Request) -> Response:
        """Call the pipeline's own change off, as when its job was cancelled: withdrawn before implementation (its
        run cancelled), aborted during it (its run stopped, then started again only to roll the change back).
        ---
        summary: Call a change off (withdraw or abort)
        security: [{pipelineToken: []}]
        parameters: [{name: key, in: path, required: true, schema: {type: string}, example: CHG-000042}]
        requestBody:
          required: true
          content:
            application/json:
              schema: {type: object, required: [reason], properties: {reason: {type: string}}}
        responses:
          200:
            description: Called off; the gate's status, with `aborted` and `run_stopped`
            content: {application/json: {schema: {$ref: '#/components/schemas/GateStatus'}}}
          400:
            description: No reason given
          401:
            description: No token, or one forged or revoked
          403:
            description: Refused (another automation's change, or one past calling off); recorded
          404:
            description: No such change among the token's services
        """
        holder, token = await holder_of(request)
        key = request.path_params["key"]
        await status_in_scope(holder, key)
        data = await body_of(request)
        reason = data.get("reason", "")
        if not isinstance(reason, str):
            raise _Refused(400, "reason: a text saying why", [("reason", "not a text")])

        def decide() -> tuple[ChangeRequest, bool]:
            return services.amendments.call_off(key, person=holder.automation, code=token, reason=reason)
        try:
            change, aborted = await run_in_threadpool(decide)
        except InputError as exc:
            raise _Refused(400, str(exc), [(p.field, p.message) for p in exc.problems]) from None
        except PolicyViolation as exc:
            raise _Refused(403, str(exc)) from None
        ended = await run_in_threadpool(end_run, change, aborted, f"{change.key} "
                                        f"{'aborted' if aborted else 'cancelled'} by {holder.automation}: {reason}")
        status = await run_in_threadpool(services.gate_status.status, key)
        return JSONResponse({**_record(status), "aborted": aborted, "run_stopped": ended}, headers=_NO_STORE)

    schemas = SchemaGenerator({
        "openapi": "3.0.3",
        "info": {"title": "changeflow pipeline API", "version": "1",
                 "description": "File a change from a pipeline and wait on its approval gate (docs/pipelines.md)."},
        "components": _COMPONENTS,
    })

    async def openapi(request: Request) -> Response:
        return JSONResponse(schemas.get_schema(routes=routes))

    def refusing(handler: Callable) -> Callable:
        async def answered(request: Request) -> Response:
            try:
                return await handler(request)
            except _Refused as refused:
                return refused.response
        answered.__doc__ = handler.__doc__  # the OpenAPI document is read from the handlers' docstrings
        return answered

    routes: list[BaseRoute] = [
        Route(f"{PREFIX}/changes", refusing(submit), methods=["POST"]),
        Route(f"{PREFIX}/changes/{{key}}", refusing(read), methods=["GET"]),
        Route(f"{PREFIX}/changes/{{key}}/wait", refusing(wait), methods=["GET"]),
        Route(f"{PREFIX}/changes/{{key}}/cancel", refusing(call_off), methods=["POST"]),
        Route(f"{PREFIX}/openapi.json", openapi, methods=["GET"], include_in_schema=False),
    ]
    return routes


_COMPONENTS: dict[str, Any] = {
    "securitySchemes": {"pipelineToken": {"type": "http", "scheme": "bearer",
                                          "description": "changeflow token issue PIPELINE --service S --as OPERATOR"}},
    "schemas": {
        "ChangeRequest": {
            "type": "object", "required": ["type", "title", "service"],
            "description": "The fields of `changeflow submit`'s request file (docs/cli.md); `requester` defaults to "
                           "the token's automation and may name no one else.",
            "properties": {"type": {"type": "string", "example": "standard"},
                           "title": {"type": "string"}, "service": {"type": "string"},
                           "template": {"type": "string"}, "requester": {"type": "string"},
                           "planned_start": {"type": "string", "format": "date-time"},
                           "rollback_plan": {"type": "string"}},
            "additionalProperties": True,
        },
        "GateStatus": {
            "type": "object",
            "properties": {"key": {"type": "string"}, "state": {"type": "string"},
                           "verdict": {"type": "string", "enum": [v.value for v in GateVerdict]},
                           "waiting_for": {"type": "string", "nullable": True},
                           "reason": {"type": "string", "nullable": True},
                           "type": {"type": "string"}, "service": {"type": "string"}, "title": {"type": "string"},
                           "requester": {"type": "string"}, "risk_level": {"type": "string"},
                           "flow_run_id": {"type": "string", "nullable": True},
                           "approved_at": {"type": "string", "format": "date-time", "nullable": True}},
        },
        "Refusal": {
            "type": "object", "required": ["error"],
            "properties": {"error": {"type": "string"},
                           "fields": {"type": "array", "items": {"type": "object", "properties": {
                               "field": {"type": "string"}, "problem": {"type": "string"}}}}},
        },
    },
}

"""The pipeline API (issue 32): a CI/CD pipeline that does not run the CLI files its change and waits on its
approval gate over HTTP, as `changeflow submit --wait` does. Every request carries the pipeline's token
(`Authorization: Bearer cfa_...`, issued by `changeflow token issue --service ...`): it names the automation, and
the token's services bound what it may file, read and wait on.

- `POST /api/v1/changes`: file a change (the body is the request, as `changeflow submit` reads it); 201.
- `GET /api/v1/changes/{key}`: where its gate stands.
- `GET /api/v1/changes/{key}/wait?timeout=S&until=approval|start`: a long poll, answered as soon as the change
  may proceed (approved; with `until=start`, its run began the implementation: deploy now) or will not, or after
  S seconds with `pending` (ask again).
- `POST /api/v1/changes/{key}/outcome`: what the pipeline's deployment did (`succeeded` / `failed`, evidence URL);
  the change's run carries on from there.
- `POST /api/v1/changes/{key}/cancel`: call the pipeline's own change off (its job was cancelled): withdrawn
  before implementation, aborted during it (its run stopped, the change rolled back).
- `GET /api/v1/openapi.json`: this API, described.

A refusal answers 4xx with `error` and, for bad input, `fields` naming each field and its problem; nothing is
written by a refused request, and a request without a valid token is on the audit trail (summed per source)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.schemas import SchemaGenerator

from models import (ChangeRequest, GateStatus, GateTarget, GateVerdict, NotFound,
                    Services, TokenHolder, WorkStage)

from ._pipeline_shapes import COMPONENTS, NO_STORE, Refused, decided, gate_record, json_body, refusing, until_of

# services, the request's fields, the pipeline's token -> the change, recorded (its run started)
FileChange = Callable[[Services, dict, str], ChangeRequest]

# the change, whether it was aborted (else withdrawn), the message -> whether its run was reached
EndRun = Callable[[ChangeRequest, bool, str], bool]
# the change whose implementation was reported -> whether its run, waiting at its work gate, was reached
NudgeWork = Callable[[ChangeRequest], bool]

PREFIX = "/api/v1"


def file_with_prefect(services: Services, data: dict, token: str) -> ChangeRequest:
    from flows import file_change

    return file_change(services, data, token=token)


def nudge_work_with_prefect(change: ChangeRequest) -> bool:
    if not change.flow_run_id:
        return False
    from flows import GateKind, nudge_suspended_run, work_gate

    return nudge_suspended_run(change.flow_run_id, GateKind.work, work_gate(WorkStage.implemented))


def end_run_with_prefect(change: ChangeRequest, aborted: bool, message: str) -> bool:
    from flows import end_run_of

    return end_run_of(change, aborted=aborted, message=message)


@dataclass(frozen=True)
class PipelineApiLimits:
    max_body_bytes: int = 65_536
    wait_max_s: float = 50.0  # under the 60 s a reverse proxy commonly allows an idle request
    poll_s: float = 2.0
    refusal_summary: timedelta = timedelta(seconds=60)


def pipeline_routes(services: Services, *, file_change: FileChange = file_with_prefect,
                    end_run: EndRun = end_run_with_prefect, nudge_work: NudgeWork = nudge_work_with_prefect,
                    limits: PipelineApiLimits = PipelineApiLimits()) -> list[BaseRoute]:

    async def holder_of(request: Request) -> tuple[TokenHolder, str]:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Refused(401, "authorization: send the pipeline's token as 'Authorization: Bearer cfa_...'",
                           [("authorization", "missing")], {"WWW-Authenticate": "Bearer"})
        holder = await run_in_threadpool(services.automation_tokens.holder, token)
        if holder is None:
            source = request.client.host if request.client else "unknown"
            await run_in_threadpool(services.links.record_unauthenticated, "a pipeline token forged or revoked",
                                    via="pipeline API", source=source, every=limits.refusal_summary)
            raise Refused(401, "authorization: not a token changeflow issued, or it was revoked",
                           [("authorization", "not valid")], {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return holder, token.strip()

    async def status_in_scope(holder: TokenHolder, key: str,
                              until: GateTarget = GateTarget.approval) -> GateStatus:
        try:
            status = await run_in_threadpool(services.gate_status.status, key, until)
        except NotFound:
            status = None
        # Out of its scope reads as unknown: a token of one service learns nothing of another's changes.
        if status is None or not holder.covers(status.change.service):
            raise Refused(404, f"no change {key} among the services of this token ({', '.join(holder.services)})")
        return status

    async def act_on(request: Request, *fields: str) -> tuple[TokenHolder, str, str, list[str]]:
        """An act of a pipeline on one of its changes: who (its token), which change (in its scope) and the text
        `fields` of its JSON body (each refused with a 400 naming it when it is not a text)."""
        holder, token = await holder_of(request)
        key = request.path_params["key"]
        await status_in_scope(holder, key)
        data = await json_body(request, limits.max_body_bytes)
        values = [data.get(field, "") for field in fields]
        for field, value in zip(fields, values):
            if not isinstance(value, str):
                raise Refused(400, f"{field}: a text", [(field, "not a text")])
        return holder, token, key, values

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
        data = await json_body(request, limits.max_body_bytes)
        requester = data.setdefault("requester", holder.automation)
        if requester != holder.automation:
            raise Refused(403, f"requester: this token files for {holder.automation}, not {requester!r}",
                           [("requester", "not the token's automation")])
        change = await decided(lambda: file_change(services, data, token))  # 503: Prefect unreachable, nothing filed
        status = await run_in_threadpool(services.gate_status.status, change.key)
        return JSONResponse(gate_record(status), status_code=201, headers={
            **NO_STORE, "Location": f"{PREFIX}/changes/{change.key}"})

    async def read(request: Request) -> Response:
        """Where a change's approval gate stands.
        ---
        summary: Read a change's gate
        security: [{pipelineToken: []}]
        parameters:
          - {name: key, in: path, required: true, schema: {type: string}, example: CHG-000042}
          - name: until
            in: query
            required: false
            schema: {type: string, enum: [approval, start], default: approval}
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
        status = await status_in_scope(holder, request.path_params["key"], until_of(request))
        return JSONResponse(gate_record(status), headers=NO_STORE)

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
          - name: until
            in: query
            required: false
            description: "approval: released once approved; start: once its run began the implementation"
            schema: {type: string, enum: [approval, start], default: approval}
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
            raise Refused(400, f"timeout: {given!r} is not a positive number of seconds",
                           [("timeout", "not a positive number")])
        deadline = time.monotonic() + min(timeout, limits.wait_max_s)
        key, until = request.path_params["key"], until_of(request)
        while True:
            status = await status_in_scope(holder, key, until)
            remaining = deadline - time.monotonic()
            if status.verdict is not GateVerdict.pending or remaining <= 0 or await request.is_disconnected():
                return JSONResponse(gate_record(status), headers=NO_STORE)
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
        holder, token, key, (reason,) = await act_on(request, "reason")

        change, aborted = await decided(lambda: services.amendments.call_off(
            key, person=holder.automation, code=token, reason=reason))
        ended = await run_in_threadpool(end_run, change, aborted, f"{change.key} "
                                        f"{'aborted' if aborted else 'cancelled'} by {holder.automation}: {reason}")
        status = await run_in_threadpool(services.gate_status.status, key)
        return JSONResponse({**gate_record(status), "aborted": aborted, "run_stopped": ended}, headers=NO_STORE)

    async def outcome(request: Request) -> Response:
        """What the pipeline's deployment did, once its change was released to start (`until=start`): recorded as
        the implementation's confirmation, so the change's run carries on (verification, or the rollback) and DORA
        counts the outcome.
        ---
        summary: Report the deployment's outcome
        security: [{pipelineToken: []}]
        parameters: [{name: key, in: path, required: true, schema: {type: string}, example: CHG-000042}]
        requestBody:
          required: true
          content:
            application/json:
              schema:
                type: object
                required: [result, evidence]
                properties:
                  result: {type: string, enum: [succeeded, failed]}
                  evidence: {type: string, format: uri, description: the URL of the pipeline's job}
        responses:
          200:
            description: Recorded; the gate's status, with `reported` (the outcome on record)
            content: {application/json: {schema: {$ref: '#/components/schemas/GateStatus'}}}
          400:
            description: A result or evidence that is missing or malformed
          401:
            description: No token, or one forged or revoked
          403:
            description: Refused and recorded (not being implemented, another automation's change, or a type whose
              work a person confirms)
          404:
            description: No such change among the token's services
        """
        holder, token, key, (result, evidence) = await act_on(request, "result", "evidence")

        reported = await decided(lambda: services.work.report_outcome(
            key, automation=holder.automation, token=token, result=result, evidence=evidence))
        status = await run_in_threadpool(services.gate_status.status, key, GateTarget.start)
        await run_in_threadpool(nudge_work, status.change)
        return JSONResponse({**gate_record(status), "reported": reported.outcome.value}, headers=NO_STORE)

    schemas = SchemaGenerator({
        "openapi": "3.0.3",
        "info": {"title": "changeflow pipeline API", "version": "1",
                 "description": "File a change from a pipeline and wait on its approval gate (docs/pipelines.md)."},
        "components": COMPONENTS,
    })

    async def openapi(request: Request) -> Response:
        return JSONResponse(schemas.get_schema(routes=routes))

    routes: list[BaseRoute] = [
        Route(f"{PREFIX}/changes", refusing(submit), methods=["POST"]),
        Route(f"{PREFIX}/changes/{{key}}", refusing(read), methods=["GET"]),
        Route(f"{PREFIX}/changes/{{key}}/wait", refusing(wait), methods=["GET"]),
        Route(f"{PREFIX}/changes/{{key}}/cancel", refusing(call_off), methods=["POST"]),
        Route(f"{PREFIX}/changes/{{key}}/outcome", refusing(outcome), methods=["POST"]),
        Route(f"{PREFIX}/openapi.json", openapi, methods=["GET"], include_in_schema=False),
    ]
    return routes

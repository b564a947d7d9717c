"""What the pipeline API reads and answers (endpoint/_pipeline_api.py): a refusal with the fields it names, the gate's
status as JSON, the request body read within its limit, the `until` parameter, and the OpenAPI components."""

from __future__ import annotations

import json
from typing import Any, Callable, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from models import ChangeflowError, GateStatus, GateTarget, GateVerdict, InputError, PolicyViolation

T = TypeVar("T")

NO_STORE = {"Cache-Control": "no-store"}


class Refused(Exception):
    """A 4xx answer: `error`, and for bad input each field with its problem."""

    def __init__(self, status: int, error: str, fields: list[tuple[str, str]] | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(error)
        self.response = JSONResponse(
            {"error": error, **({"fields": [{"field": f, "problem": p} for f, p in fields]} if fields else {})},
            status_code=status, headers={**NO_STORE, **(headers or {})})


def gate_record(status: GateStatus) -> dict[str, Any]:
    change = status.change
    return {"key": change.key, "state": change.state, "verdict": status.verdict.value,
            "waiting_for": status.waiting_for or None, "reason": status.reason or None,
            "type": change.type, "service": change.service, "title": change.title, "requester": change.requester,
            "environment": change.environment, "release": change.release, "risk_level": change.risk_level,
            "flow_run_id": change.flow_run_id,
            "approved_at": change.approved_at.isoformat() if change.approved_at else None}


async def json_body(request: Request, max_body_bytes: int) -> dict:
    """The body as a JSON object, refused past `max_body_bytes` before more is read (by its declared length at
    once, or while it streams in)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_body_bytes:
        raise Refused(413, f"the request is larger than {max_body_bytes} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_body_bytes:
            raise Refused(413, f"the request is larger than {max_body_bytes} bytes")
    try:
        data = json.loads(bytes(body) or b"null")
    except (UnicodeDecodeError, ValueError):
        raise Refused(400, "body: not JSON", [("body", "not JSON")]) from None
    if not isinstance(data, dict):
        raise Refused(400, "body: a JSON object of the request's fields", [("body", "not an object")])
    return data


async def decided(call: Callable[[], T]) -> T:
    """A service's decision, made in a worker thread: bad input is a 400 naming each field, a refusal of the
    policy a 403 (the service recorded it), anything else of changeflow's (Prefect unreachable) a 503."""
    try:
        return await run_in_threadpool(call)
    except InputError as exc:
        raise Refused(400, str(exc), [(p.field, p.message) for p in exc.problems]) from None
    except PolicyViolation as exc:
        raise Refused(403, str(exc)) from None
    except ChangeflowError as exc:
        raise Refused(503, str(exc)) from None


def until_of(request: Request) -> GateTarget:
    given = request.query_params.get("until", GateTarget.approval.value)
    try:
        return GateTarget(given)
    except ValueError:
        raise Refused(400, f"until: {given!r} is not one of {', '.join(t.value for t in GateTarget)}",
                       [("until", "unknown")]) from None


def refusing(handler: Callable) -> Callable:
    async def answered(request: Request) -> Response:
        try:
            return await handler(request)
        except Refused as refused:
            return refused.response
    answered.__doc__ = handler.__doc__  # the OpenAPI document is read from the handlers' docstrings
    return answered


COMPONENTS: dict[str, Any] = {
    "securitySchemes": {"pipelineToken": {"type": "http", "scheme": "bearer",
                                          "description": "changeflow token issue PIPELINE --service S --as OPERATOR"}},
    "schemas": {
        "ChangeRequest": {
            "type": "object", "required": ["type", "title", "service"],
            "description": "The fields of `changeflow submit`'s request file (docs/cli.md); `requester` defaults to "
                           "the token's automation and may name no one else.",
            "properties": {"type": {"type": "string", "example": "standard"},
                           "title": {"type": "string"}, "service": {"type": "string"},
                           "environment": {"type": "string", "example": "staging",
                                           "description": "policies.yaml environments; default: the first"},
                           "release": {"type": "string", "example": "1.8"},
                           "promoted_from": {"type": "string", "example": "CHG-000041",
                                             "description": "the closed change that shipped the release before"},
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
                           "environment": {"type": "string", "nullable": True},
                           "release": {"type": "string", "nullable": True},
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

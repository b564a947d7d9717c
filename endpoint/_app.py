"""The approval endpoint (issue 17): approvers act from the notification itself.

- `GET /a/{token}`: the change and the decision form of a signed e-mail link. Changes nothing (mail scanners
  follow links).
- `POST /a/{token}`: the decision, with the form's CSRF token; refused (and recorded) when the link is forged,
  used, expired, for another round, or the form token is wrong.
- `POST /slack/actions`: a click on a Slack approval message's button, signed by Slack; the Slack user is mapped
  to a person by `slack_user_id` in directory.yaml. Reject answers with the person's own link, to give a reason.
- `GET /healthz`: every dependency checked and named (200 / 503); `GET /livez`: the process answers.
- `/api/v1/...`: the pipeline API (endpoint/_pipeline_api.py): file a change and wait on its gate with a token.

Every decision goes through `ApprovalService.decide` (via `ApprovalLinks`), then the change's suspended run is
resumed, as after `changeflow approve`. Served by `changeflow up` beside the Prefect server, or alone by
`changeflow endpoint` behind a reverse proxy.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs
from typing import Callable

import httpx
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from models import (ChangeflowError, Decision, DecisionResult, HealthReport, HealthService, InputError, LinkRefused,
                    PolicyViolation, Services, utcnow)

from ._pipeline_api import FileChange, PipelineApiLimits, file_with_prefect, pipeline_routes
from ._slack import ButtonClick, SlackRequestRefused, check_signature, parse_click

_PAGES = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                     autoescape=select_autoescape(["html", "j2"]))
# The token is in the URL: no Referer may carry it elsewhere, no cache may keep the page, no frame may hold it.
_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"}

# flow run id -> whether the run, waiting at its approval gate, was resumed
Nudge = Callable[[str], bool]


def _nudge_with_prefect(flow_run_id: str) -> bool:
    from flows import GateKind, nudge_suspended_run

    return nudge_suspended_run(flow_run_id, GateKind.approval)


class BodyTooLarge(Exception):
    pass


async def _capped_body(request: Request, limit: int) -> bytes:
    """The body, refused past `limit` bytes before more is read: by its declared length at once, or while it
    streams in (issue 28: a 10 MB body was read whole before anything was refused)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    received = bytearray()
    async for chunk in request.stream():
        received += chunk
        if len(received) > limit:
            raise BodyTooLarge
    return bytes(received)


def _source(request: Request) -> str:
    """Who sent an unauthenticated request, as far as this process can tell (the proxy's address behind one)."""
    return request.client.host if request.client else "unknown"


async def _urlencoded_form(request: Request, limit: int) -> dict[str, str]:
    """The decision form (application/x-www-form-urlencoded, what the page's <form> posts): parsed here, as
    Starlette's own form parser needs python-multipart, which nothing else here uses."""
    body = await _capped_body(request, limit)
    try:
        fields = parse_qs(body.decode(), max_num_fields=10)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {name: values[0] for name, values in fields.items()}


def create_app(services: Services, *, slack_signing_secret: str | None, public_url: str,
               now: Callable[[], float] = time.time, nudge: Nudge = _nudge_with_prefect,
               http_timeout_s: float = 10.0, health: Callable[[], HealthReport] | None = None,
               max_body_bytes: int = 65_536, refusal_summary_s: float = 60.0,
               file_change: FileChange = file_with_prefect, api_wait_max_s: float = 50.0,
               api_poll_s: float = 2.0) -> Starlette:
    """`health`: the report `/healthz` answers with (`flows.health_report` under `changeflow endpoint`); without
    one, the database alone is checked. `max_body_bytes`: larger requests get 413 unread; `refusal_summary_s`:
    the period over which refusals of unauthenticated requests from one source are summed up in one event.
    `file_change`, `api_wait_max_s`, `api_poll_s`: the pipeline API's (endpoint/_pipeline_api.py)."""
    summary_every = timedelta(seconds=refusal_summary_s)
    if health is None:
        database = HealthService(services.db, None, utcnow)
        health = lambda: HealthReport((database.database(),))  # noqa: E731
    def page(name: str, status: int = 200, **context) -> HTMLResponse:
        return HTMLResponse(_PAGES.get_template(name).render(**context), status_code=status, headers=_HEADERS)

    def resume_run(result: DecisionResult) -> BackgroundTask | None:
        change = result.change
        if not change.flow_run_id:
            return None
        # The decision is recorded: the run is only asked to look again (no code reaches Prefect's storage).
        return BackgroundTask(nudge, change.flow_run_id)

    async def link_page(request: Request) -> Response:
        token = request.path_params["token"]
        try:
            shown = await run_in_threadpool(services.links.page, token)
        except LinkRefused as exc:
            return page("refused.html.j2", 403, reason=str(exc))
        return page("link.html.j2", change=shown.change, shown=shown, action=f"{public_url}/a/{token}")

    async def link_decision(request: Request) -> Response:
        token = request.path_params["token"]
        try:
            form = await _urlencoded_form(request, max_body_bytes)
        except BodyTooLarge:
            return page("refused.html.j2", 413, reason=f"the request is larger than {max_body_bytes} bytes")
        decision_text, comment = form.get("decision", ""), form.get("comment", "").strip()
        if decision_text not in (Decision.approve.value, Decision.reject.value):
            return page("refused.html.j2", 400, reason="decision: choose Approve or Reject")
        decision = Decision(decision_text)

        def decide() -> tuple[str, DecisionResult]:
            return services.links.decide_with_link(token, given_form_token=form.get("form_token", ""),
                                                   decision=decision, comment=comment, source=_source(request),
                                                   refusals_every=summary_every)
        try:
            person, result = await run_in_threadpool(decide)
        except LinkRefused as exc:
            return page("refused.html.j2", 403, reason=str(exc))
        except PolicyViolation as exc:  # recorded as approval_refused by the decision itself
            return page("refused.html.j2", 403, reason=str(exc))
        except InputError as exc:  # malformed (a comment past the limit): nothing was written
            return page("refused.html.j2", 400, reason=str(exc))
        response = page("decided.html.j2", change=result.change, decision=decision, result=result,
                        person=services.org.directory.people[person].name)
        response.background = resume_run(result)
        return response

    async def slack_actions(request: Request) -> Response:
        if not slack_signing_secret:
            return PlainTextResponse("Slack is not configured here (CHANGEFLOW_SLACK_SIGNING_SECRET)", 404)
        try:
            body = await _capped_body(request, max_body_bytes)
        except BodyTooLarge:
            return PlainTextResponse(f"the request is larger than {max_body_bytes} bytes", 413)
        given = request.headers.get("x-slack-signature")
        try:
            check_signature(slack_signing_secret, request.headers.get("x-slack-request-timestamp"), given, body,
                            now())
            click = parse_click(body, given or "")
        except SlackRequestRefused as exc:
            await run_in_threadpool(services.links.record_unauthenticated, str(exc), via="Slack",
                                    source=_source(request), every=summary_every)
            return PlainTextResponse(str(exc), 401)
        answer, task = await run_in_threadpool(_answer_click, click)
        return JSONResponse(answer, background=task)

    def _answer_click(click: ButtonClick) -> tuple[dict, BackgroundTask | None]:
        via = f"Slack {click.slack_user_id}"
        person = services.org.directory.person_with_slack_id(click.slack_user_id)
        if person is None:
            reason = f"Slack user {click.slack_user_id} is not in the approver directory (slack_user_id)"
            services.links.record_refusal(click.change_key, f"unknown ({via})", reason, via=via)
            return _reply(click, f":no_entry: {reason}", replace=False), None
        if click.action == Decision.reject.value:
            # A rejection needs its reason, which a button cannot carry: the person's own link, shown only to them.
            link = f"{public_url}/a/{services.links.link_for(click.change_key, person)}"
            return _reply(click, f"Say why you reject {click.change_key}: <{link}|open your rejection form>",
                          replace=False), None
        if click.action != Decision.approve.value:
            return _reply(click, f"unknown action {click.action!r}", replace=False), None
        try:
            result = services.links.decide_as(click.change_key, person, round_=click.round,
                                              decision=Decision.approve, comment="",
                                              attempt=f"slack:{click.request_id}", via=via)
        except ChangeflowError as exc:
            return _reply(click, f":no_entry: Not recorded: {exc}", replace=False), None
        name = services.org.directory.people[person].name
        text = (f":white_check_mark: Approved by {name} at {time.strftime('%H:%M', time.gmtime(now()))} UTC"
                f"{' (already on record)' if result.repeated else ''}; still needed: "
                f"{result.evaluation.describe_missing()}")
        return _reply(click, text, replace=True), resume_run(result)

    def _reply(click: ButtonClick, text: str, *, replace: bool) -> dict:
        """Slack updates the message through its response_url (the HTTP answer to a block action is not shown);
        a refusal goes to the clicking person only."""
        message = {"text": text, "replace_original": replace, "response_type": "in_channel" if replace else "ephemeral"}
        if click.response_url:
            try:
                httpx.post(click.response_url, json=message, timeout=http_timeout_s)
            except httpx.HTTPError:
                pass  # the decision is recorded either way; the message keeps its buttons
        return message

    async def healthz(_: Request) -> Response:
        """Every dependency, each named: 200 when all hold, 503 naming those that do not (issue 31)."""
        report = await run_in_threadpool(health)
        return JSONResponse({"ok": report.ok, "failing": report.failing,
                             "checks": [check.__dict__ for check in report.checks]},
                            status_code=200 if report.ok else 503, headers={"Cache-Control": "no-store"})

    async def livez(_: Request) -> Response:
        """The process answers (what a supervisor or `changeflow up` waits for before the rest is up)."""
        return PlainTextResponse("ok")

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        # The refusals still being counted go on the record as the endpoint stops.
        await run_in_threadpool(services.links.flush_refusals)

    return Starlette(lifespan=lifespan, routes=[
        Route("/a/{token}", link_page, methods=["GET"]),
        Route("/a/{token}", link_decision, methods=["POST"]),
        Route("/slack/actions", slack_actions, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/livez", livez, methods=["GET"]),
        *pipeline_routes(services, file_change=file_change, limits=PipelineApiLimits(
            max_body_bytes=max_body_bytes, wait_max_s=api_wait_max_s, poll_s=api_poll_s,
            refusal_summary=summary_every)),
    ])

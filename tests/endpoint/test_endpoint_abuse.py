"""The approval endpoint under abuse (issue 28), over real HTTP on 127.0.0.1: a flood of forged requests does not
flood the audit trail, a huge body is refused unread, a comment past the limit is refused on every path, and a
refused post of a link's form does not use the link up."""

from __future__ import annotations

import socket
import time

import httpx
import pytest
from sqlalchemy import func, select

from endpoint import signed_click
from models import TEXT_LIMIT, AuditAction, AuditEvent, InputError, Services, decode_data
from tests.endpoint.test_approval_endpoint import (  # noqa: F401 (fixtures)
    Endpoint,
    awaiting,
    clock,
    decisions,
    endpoint,
    form_token_of,
    open_link,
    services,
)
from tests.helpers import SECRET


def _refusal_events(services) -> list[dict]:
    with services.db.read() as session:
        rows = session.execute(select(AuditEvent).where(
            AuditEvent.action == AuditAction.endpoint_refused.value).order_by(AuditEvent.seq)).scalars()
        return [decode_data(e) for e in rows]


def test_a_flood_of_forged_requests_adds_a_handful_of_events_and_counts_every_one(sqlite_db, org):
    """On SQLite only: nothing of it depends on the database (the first refusal of each kind is one write)."""
    services = Services.build(sqlite_db, org, SECRET)
    served = Endpoint(services, time.time)
    change = awaiting(services)
    url, _ = open_link(served, services, change.key, "alice")
    forged = url.replace("/a/", "/a/x")
    body, headers = signed_click(change.key, 1, "U03CAROL", "not-the-signing-secret")
    with httpx.Client(timeout=10) as client:  # one connection, as a flood would keep
        for _ in range(500):
            assert client.post(forged, data={"decision": "approve", "form_token": "x"}).status_code == 403
            assert client.post(f"{served.url}/slack/actions", content=body, headers=headers).status_code == 401
    while_open = _refusal_events(services)
    served.stop()  # the periods still open are summed up as the endpoint stops
    recorded = _refusal_events(services)
    assert len(while_open) == 2, while_open  # the first of each kind at once
    assert len(recorded) <= 4, recorded
    for via in ("e-mail link", "Slack"):
        of_via = [r for r in recorded if r["via"] == via]
        assert sum(r.get("count", 0) for r in of_via) + 1 == 500, of_via  # each counted: one first, 499 summed
        assert all(r["source"] == "127.0.0.1" for r in of_via)
    assert decisions(services, change.key) == []


def _raw_post(port: int, path: str, headers: str, body: bytes = b"") -> str:
    """The status line the endpoint answers with: waits on the answer, never on the clock (a server that read
    the announced body would wait for it and the socket's timeout would fail the test)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode() + body)
        return raw.recv(4096).decode(errors="replace").split("\r\n")[0]


@pytest.mark.parametrize("path", ["/a/some-token", "/slack/actions"])
def test_a_body_past_the_limit_is_refused_413_unread(services, endpoint, path):
    # Announced: 10 MB declared, not one byte of it sent.
    status = _raw_post(endpoint.port, path, "Content-Type: application/x-www-form-urlencoded\r\n"
                                            "Content-Length: 10485760\r\n")
    assert " 413 " in status, status
    # Streamed without a length: refused once the limit is passed.
    chunk = b"a" * 70_000
    status = _raw_post(endpoint.port, path, "Content-Type: application/x-www-form-urlencoded\r\n"
                                            "Transfer-Encoding: chunked\r\n",
                       f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
    assert " 413 " in status, status
    assert _refusal_events(services) == []  # nothing was read, so nothing to record


def test_a_comment_past_the_limit_is_refused_on_every_path_and_nothing_is_written(services, endpoint):
    change = awaiting(services)
    long = "x" * (TEXT_LIMIT + 1)
    with services.db.read() as session:
        before = session.execute(select(func.count()).select_from(AuditEvent)).scalar_one()
    url, page = open_link(endpoint, services, change.key, "alice")
    answer = httpx.post(url, data={"form_token": form_token_of(page), "decision": "approve", "comment": long})
    assert answer.status_code == 400 and f"comment: longer than {TEXT_LIMIT} characters" in answer.text
    code = services.approvals.approval_code_for(change.key, "bob")
    for attempt in (lambda: services.approvals.decide(change.key, approver="bob", decision="reject", code=code,
                                                      comment=long),
                    lambda: services.amendments.withdraw(change.key, person="grace", code="X", reason=long)):
        with pytest.raises(InputError, match=f"longer than {TEXT_LIMIT} characters"):
            attempt()
    with services.db.read() as session:
        assert session.execute(select(func.count()).select_from(AuditEvent)).scalar_one() == before
    assert decisions(services, change.key) == []


def test_the_cli_refuses_a_comment_past_the_limit_with_exit_2(services, cli_env):
    change = awaiting(services)
    result = cli_env("approve", change.key, "--as", "bob", "--code",
                     services.approvals.approval_code_for(change.key, "bob"), "--comment", "x" * (TEXT_LIMIT + 1))
    assert result.exit_code == 2 and f"comment: longer than {TEXT_LIMIT} characters" in result.output, result.output
    assert decisions(services, change.key) == []


def test_a_refused_post_of_a_links_form_does_not_use_the_link_up(services, endpoint):
    change = awaiting(services)
    url, page = open_link(endpoint, services, change.key, "alice")
    token = form_token_of(page)
    refused = httpx.post(url, data={"form_token": token, "decision": "reject"})  # no reason given
    assert refused.status_code == 403 and "a rejection needs a comment saying why" in refused.text
    approved = httpx.post(url, data={"form_token": token, "decision": "approve"})
    assert approved.status_code == 200 and "approved by Alice Moreau" in approved.text, approved.text
    assert decisions(services, change.key) == [("alice", "approval")]
    again = httpx.post(url, data={"form_token": token, "decision": "approve"})
    assert again.status_code == 403 and "this link was already used" in again.text  # a decision still uses it


def test_the_page_after_a_rejection_says_the_change_will_not_run(services, endpoint):
    """Issue 30: it said "still needed: ..." of a change that was just rejected."""
    change = awaiting(services)
    url, page = open_link(endpoint, services, change.key, "alice")
    rejected = httpx.post(url, data={"form_token": form_token_of(page), "decision": "reject",
                                     "comment": "not during the sale"})
    assert rejected.status_code == 200 and "rejected by Alice Moreau" in rejected.text, rejected.text
    assert "it will not run" in rejected.text and "still needed" not in rejected.text

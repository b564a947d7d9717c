"""The approval endpoint as approvers and attackers meet it (issue 17), served by uvicorn on 127.0.0.1 and
reached over real HTTP: a Slack-like client that signs its clicks as Slack does, and e-mail links followed by a
browser-like client (GET, then POST the page's form). Every refusal is on the record and nothing is decided."""

from __future__ import annotations

import json
import re
import threading
import time
from datetime import timedelta

import httpx
import pytest
import uvicorn

from cli.dev import free_port
from endpoint import create_app, signed_click
from models import Act, AuditAction, Services, decode_data, events_for, utcnow
from tests.helpers import SECRET, standard_request
from tests.receivers import start_http_receiver

SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


class Endpoint:
    def __init__(self, services, clock):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = create_app(services, slack_signing_secret=SLACK_SECRET, public_url=self.url, now=clock)
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def clock():
    """changeflow's clock (links expire by it); Slack's signatures are checked against the real time."""
    return [utcnow()]


@pytest.fixture
def services(db, org, clock):
    return Services.build(db, org, SECRET, clock=lambda: clock[0])


@pytest.fixture
def endpoint(services):
    served = Endpoint(services, time.time)
    yield served
    served.stop()


@pytest.fixture
def slack_responses():
    receiver = start_http_receiver()
    yield receiver
    receiver.stop()


def click(endpoint, key: str, round_: int, user: str, *, action: str = "approve", response_url: str | None = None,
          timestamp: float | None = None, secret: str = SLACK_SECRET, tamper=None) -> httpx.Response:
    body, headers = signed_click(key, round_, user, secret, action=action, response_url=response_url,
                                 timestamp=timestamp)
    if tamper:
        body, headers = tamper(body, headers)
    return httpx.post(f"{endpoint.url}/slack/actions", content=body, headers=headers, timeout=10)


def awaiting(services):
    return services.approvals.request_approval(services.changes.submit(standard_request()).key)


def decisions(services, key: str) -> list[tuple[str, str]]:
    with services.db.read() as session:
        return [(e.actor, e.action) for e in events_for(session, key) if e.action in ("approval", "rejection")]


def refusals(services, key: str | None = None) -> list[dict]:
    from sqlalchemy import select

    from models import AuditEvent

    with services.db.read() as session:
        rows = session.execute(select(AuditEvent).where(
            AuditEvent.action.in_((AuditAction.endpoint_refused.value, AuditAction.approval_refused.value)))
        ).scalars()
        return [{"actor": e.actor, "change": e.change_key, **decode_data(e)} for e in rows
                if key is None or e.change_key in (key, None)]


# ---- Slack -----------------------------------------------------------------------------------------------

def test_a_signed_click_approves_as_the_person_slack_names_and_updates_the_message(services, endpoint,
                                                                                   slack_responses):
    change = awaiting(services)
    answer = click(endpoint, change.key, 1, "U01ALICE", response_url=f"{slack_responses.url}/hook/1")
    assert answer.status_code == 200, answer.text
    assert answer.json()["text"].startswith(":white_check_mark: Approved by Alice Moreau at ")
    assert decisions(services, change.key) == [("alice", "approval")]
    with services.db.read() as session:
        event = next(e for e in events_for(session, change.key) if e.action == "approval")
    assert decode_data(event)["via"] == "Slack U01ALICE"
    updated = json.loads(slack_responses.delivered("/hook/1")[0].body)
    assert updated["replace_original"] is True and "Alice Moreau" in updated["text"]
    assert click(endpoint, change.key, 1, "U02BOB").status_code == 200
    assert services.changes.get(change.key).state == "approved"


REFUSED_CLICKS = {
    "bad-signature": (dict(secret="not-the-signing-secret"), 401, "signature does not match"),
    "stale-timestamp": (dict(timestamp=time.time() - 301), 401, "more than 300 s"),
    "altered-after-signing": (dict(tamper=lambda body, headers: (body.replace(b"U03CAROL", b"U01ALICE"), headers)),
                              401, "signature does not match"),
    "no-signature": (dict(tamper=lambda body, headers: (body, {"Content-Type": headers["Content-Type"]})), 401,
                     "no Slack signature"),
}


@pytest.mark.parametrize("attack", list(REFUSED_CLICKS))
def test_a_click_slack_did_not_sign_just_now_is_refused_and_recorded(services, endpoint, attack):
    change = awaiting(services)
    options, status, reason = REFUSED_CLICKS[attack]
    answer = click(endpoint, change.key, 1, "U03CAROL", **options)
    assert answer.status_code == status and reason in answer.text, answer.text
    assert decisions(services, change.key) == []
    assert any(reason in r["reason"] and r["via"] == "Slack" for r in refusals(services)), refusals(services)


def test_a_replayed_click_is_refused_and_not_counted_twice(services, endpoint):
    change = awaiting(services)
    sent = {}

    def keep(body, headers):
        sent.update(body=body, headers=headers)
        return body, headers

    assert "Approved by Alice" in click(endpoint, change.key, 1, "U01ALICE", tamper=keep).json()["text"]
    replay = httpx.post(f"{endpoint.url}/slack/actions", content=sent["body"], headers=sent["headers"])
    assert "a replay" in replay.json()["text"]
    assert decisions(services, change.key) == [("alice", "approval")]
    assert any("a replay" in r["reason"] for r in refusals(services, change.key))


@pytest.mark.parametrize(("user", "reason"), [
    ("U99NOBODY", "Slack user U99NOBODY is not in the approver directory"),
    ("U07GRACE", "grace requested this change and cannot approve or reject it (self-approval)"),
    ("U04DAVE", "dave"),  # holds no role the standard policy still needs
])
def test_a_click_by_someone_who_may_not_approve_is_refused_and_recorded(services, endpoint, user, reason):
    change = awaiting(services)
    answer = click(endpoint, change.key, 1, user)
    assert answer.status_code == 200 and answer.json()["text"].startswith(":no_entry:")
    assert reason in answer.json()["text"]
    assert decisions(services, change.key) == []
    assert any(reason in r["reason"] for r in refusals(services, change.key)), refusals(services, change.key)


def test_a_click_on_a_message_of_an_earlier_round_is_refused(services, endpoint):
    change = awaiting(services)
    services.amendments.amend(change.key, {"implementation_plan": "deploy 2.5"}, person="grace",
                              code=services.approvals.approval_code_for(change.key, "grace",
                                                                        Act.amend), reason="2.4 withdrawn")
    answer = click(endpoint, change.key, 1, "U01ALICE")
    assert "this message is for approval round 1" in answer.json()["text"]
    assert decisions(services, change.key) == []


def test_reject_answers_with_the_persons_own_link_to_give_a_reason(services, endpoint, slack_responses):
    change = awaiting(services)
    answer = click(endpoint, change.key, 1, "U01ALICE", action="reject",
                   response_url=f"{slack_responses.url}/hook/2")
    assert answer.json()["response_type"] == "ephemeral"  # the link is for the person who clicked, only
    link = re.search(r"<(http[^|]+)\|", answer.json()["text"]).group(1)
    assert decisions(services, change.key) == []  # nothing recorded until the reason is given
    page = httpx.get(link)
    form_token = re.search(r'name="form_token" value="([^"]+)"', page.text).group(1)
    done = httpx.post(link, data={"form_token": form_token, "decision": "reject", "comment": "no load test yet"})
    assert done.status_code == 200, done.text
    assert decisions(services, change.key) == [("alice", "rejection")]
    assert services.changes.get(change.key).state == "rejected"


# ---- e-mail links ----------------------------------------------------------------------------------------

def open_link(endpoint, services, key: str, person: str) -> tuple[str, httpx.Response]:
    url = f"{endpoint.url}/a/{services.links.link_for(key, person)}"
    return url, httpx.get(url)


def form_token_of(page: httpx.Response) -> str:
    return re.search(r'name="form_token" value="([^"]+)"', page.text).group(1)


def test_a_link_approves_once_and_a_second_click_is_refused(services, endpoint):
    change = awaiting(services)
    url, page = open_link(endpoint, services, change.key, "alice")
    assert page.status_code == 200 and "Alice Moreau" in page.text and change.title in page.text
    assert page.headers["referrer-policy"] == "no-referrer" and page.headers["cache-control"] == "no-store"
    done = httpx.post(url, data={"form_token": form_token_of(page), "decision": "approve"})
    assert done.status_code == 200 and "approved by Alice Moreau" in done.text, done.text
    assert decisions(services, change.key) == [("alice", "approval")]
    again = httpx.post(url, data={"form_token": form_token_of(page), "decision": "approve"})
    assert again.status_code == 403 and "this link was already used" in again.text
    assert "this link was already used" in httpx.get(url).text  # the page says so too, and offers no form
    assert decisions(services, change.key) == [("alice", "approval")]
    assert any("already used" in r["reason"] for r in refusals(services, change.key))


def test_following_a_link_changes_nothing(services, endpoint):
    """What a mail scanner does: GET, GET again, HEAD."""
    change = awaiting(services)
    url, page = open_link(endpoint, services, change.key, "alice")
    for _ in range(3):
        assert httpx.get(url).status_code == 200
    httpx.head(url)
    with services.db.read() as session:
        before = len(events_for(session, change.key))
    assert decisions(services, change.key) == [] and services.changes.get(change.key).state == "awaiting_approval"
    with services.db.read() as session:
        assert len(events_for(session, change.key)) == before


@pytest.mark.parametrize("attack", ["no-form-token", "another-links-form-token", "forged-token", "expired",
                                    "earlier-round", "self-approval", "reject-without-reason"])
def test_a_link_that_may_not_act_is_refused_with_a_clear_page_and_recorded(services, endpoint, clock, attack):
    change = awaiting(services)
    url, page = open_link(endpoint, services, change.key, "alice")
    data = {"form_token": form_token_of(page), "decision": "approve"}
    expected = {
        "no-form-token": "its form token is missing or wrong",
        "another-links-form-token": "its form token is missing or wrong",
        "forged-token": "not one changeflow signed",
        "expired": "this link expired at",
        "earlier-round": "this link is for approval round 1",
        "self-approval": "(self-approval)",
        "reject-without-reason": "a rejection needs a comment saying why",
    }[attack]
    if attack == "no-form-token":
        data.pop("form_token")
    elif attack == "another-links-form-token":
        data["form_token"] = form_token_of(open_link(endpoint, services, change.key, "bob")[1])
    elif attack == "forged-token":
        url = url.replace("/a/", "/a/x")
    elif attack == "expired":
        clock[0] += timedelta(days=10)
    elif attack == "earlier-round":
        services.amendments.amend(change.key, {"implementation_plan": "deploy 2.5"}, person="grace",
                                  code=services.approvals.approval_code_for(change.key, "grace",
                                                                            Act.amend), reason="withdrawn")
    elif attack == "self-approval":
        url, page = open_link(endpoint, services, change.key, "grace")
        data["form_token"] = form_token_of(page) if "form_token" in page.text else ""
    elif attack == "reject-without-reason":
        data["decision"] = "reject"
    answer = httpx.post(url, data=data)
    assert answer.status_code == 403 and expected in answer.text, answer.text
    assert decisions(services, change.key) == []
    assert any(expected in r["reason"] for r in refusals(services, change.key)), refusals(services, change.key)

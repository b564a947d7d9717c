"""The pipeline API (issue 32) as a pipeline and an attacker meet it, served by uvicorn on 127.0.0.1 and reached
over real HTTP. Filing here records the change without a Prefect run (`file_change(..., local=True)`, the CLI's
`submit --local`); the flows suite files through the real run (tests/flows/test_pipeline_flows.py)."""

from __future__ import annotations

import threading

import httpx
import pytest
import uvicorn
from sqlalchemy import func, select

from cli.dev import free_port
from endpoint import create_app
from flows import file_change
from models import Act, AuditEvent, ChangeRequest, ChangeState, Services
from tests.helpers import ROUTINE_RISK, SECRET, wait_until

PIPELINE_REQUEST = {"type": "standard", "title": "deploy checkout 2.5", "service": "checkout",
                    "test_evidence": "staging run green",
                    "rollback_plan": "redeploy 2.4", "risk": ROUTINE_RISK}


class PipelineApi:
    def __init__(self, services: Services):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/api/v1"
        app = create_app(services, slack_signing_secret=None, public_url=f"http://127.0.0.1:{self.port}",
                         file_change=lambda s, data, token: file_change(s, data, token=token, local=True),
                         api_wait_max_s=5.0, api_poll_s=0.05, max_body_bytes=4096)
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_until(lambda: self.server.started, 10, "the endpoint to listen")

    def stop(self):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def services(db, org):
    return Services.build(db, org, SECRET)


@pytest.fixture
def api(services):
    served = PipelineApi(services)
    yield served
    served.stop()


@pytest.fixture
def token(services):
    return services.automation_tokens.issue("deploy-pipeline", operator="dave", services=["checkout"]).token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def filed(api, token: str, **overrides) -> dict:
    answer = httpx.post(f"{api.url}/changes", json={**PIPELINE_REQUEST, **overrides}, headers=bearer(token),
                        timeout=10)
    assert answer.status_code == 201, answer.text
    return answer.json()


def code(services, key: str, person: str, act: Act = Act.approve) -> str:
    return services.approvals.approval_code_for(key, person, act)


def changes_and_events(services) -> tuple[int, int]:
    with services.db.read() as session:
        return (session.execute(select(func.count()).select_from(ChangeRequest)).scalar_one(),
                session.execute(select(func.count()).select_from(AuditEvent)
                                .where(AuditEvent.action != "endpoint_refused")).scalar_one())


def test_a_pipeline_files_with_its_token_and_its_long_poll_answers_once_the_change_is_approved(api, services, token):
    record = filed(api, token)
    key = record["key"]
    assert (record["state"], record["verdict"], record["requester"]) == ("awaiting_approval", "pending",
                                                                          "deploy-pipeline")
    assert record["waiting_for"].startswith("approval: still needed")
    read = httpx.get(f"{api.url}/changes/{key}", headers=bearer(token), timeout=10)
    assert read.status_code == 200 and read.json()["key"] == key and read.headers["cache-control"] == "no-store"
    # Nobody decided: the poll answers pending at its timeout, and the pipeline asks again.
    pending = httpx.get(f"{api.url}/changes/{key}/wait", params={"timeout": "0.3"}, headers=bearer(token), timeout=10)
    assert pending.status_code == 200 and pending.json()["verdict"] == "pending"

    answers: list[httpx.Response] = []
    poll = threading.Thread(target=lambda: answers.append(httpx.get(
        f"{api.url}/changes/{key}/wait", params={"timeout": "60"}, headers=bearer(token), timeout=30)))
    poll.start()
    services.approvals.decide(key, approver="frank", decision="approve", code=code(services, key, "frank"))
    assert poll.is_alive(), "one of two approvals: the poll still waits"
    services.approvals.decide(key, approver="bob", decision="approve", code=code(services, key, "bob"))
    poll.join(30)
    assert [a.json()["verdict"] for a in answers] == ["proceed"]
    assert answers[0].json()["state"] == "approved" and answers[0].json()["approved_at"]


@pytest.mark.parametrize("stop", ["rejected", "expired", "cancelled"])
def test_a_rejection_an_expiry_or_a_cancel_answers_refused_with_the_reason(api, services, token, stop):
    key = filed(api, token)["key"]
    if stop == "rejected":
        services.approvals.decide(key, approver="bob", decision="reject", code=code(services, key, "bob"),
                                  comment="no load test for 2.5")
        reason = "no load test for 2.5"
    elif stop == "expired":
        services.changes.transition(key, ChangeState.expired, actor="approval-escalation",
                                    reason="No decision within the approval SLA.")
        reason = "No decision within the approval SLA."
    else:
        services.amendments.withdraw(key, person="alice", code=code(services, key, "alice", Act.withdraw),
                                     reason="superseded by 2.6")
        reason = "superseded by 2.6"
    answer = httpx.get(f"{api.url}/changes/{key}/wait", params={"timeout": "60"}, headers=bearer(token), timeout=30)
    assert answer.status_code == 200
    assert (answer.json()["verdict"], answer.json()["state"]) == ("refused", stop)
    assert reason in answer.json()["reason"]


def test_no_token_a_forged_or_revoked_one_or_a_persons_code_is_401_on_the_record_and_files_nothing(api, services,
                                                                                                  token):
    issued = services.automation_tokens.issue("deploy-pipeline", operator="dave", services=["checkout"])
    services.automation_tokens.revoke(issued.id, operator="dave")
    before = changes_and_events(services)
    for headers in ({}, {"Authorization": f"Basic {token}"}, {"Authorization": "Bearer"},
                    bearer("cfa_forged-" + token[-8:]), bearer(token[:-1]), bearer(issued.token),
                    bearer("AAAA-BBBB-CCCC")):
        for method, path in (("POST", "/changes"), ("GET", "/changes/CHG-000001"),
                             ("GET", "/changes/CHG-000001/wait")):
            answer = httpx.request(method, f"{api.url}{path}", json=PIPELINE_REQUEST, headers=headers, timeout=10)
            assert answer.status_code == 401, (headers, path, answer.text)
            assert answer.json()["fields"][0]["field"] == "authorization"
            assert answer.headers["www-authenticate"].startswith("Bearer")
    assert changes_and_events(services) == before, "nothing filed, nothing but the refusals recorded"
    with services.db.read() as session:
        refusals = session.execute(select(AuditEvent).where(AuditEvent.action == "endpoint_refused")).scalars().all()
    assert refusals and all(token not in str(e.data) and issued.token not in str(e.data) for e in refusals)
    assert any("pipeline token forged or revoked" in str(e.data) for e in refusals)


def test_a_token_files_reads_and_waits_only_for_its_own_automation_and_services(api, services, token):
    payments = services.automation_tokens.issue("deploy-pipeline", operator="dave", services=["payments"]).token
    theirs = filed(api, payments, service="payments")["key"]
    before = changes_and_events(services)
    elsewhere = httpx.post(f"{api.url}/changes", json={**PIPELINE_REQUEST, "service": "payments"},
                           headers=bearer(token), timeout=10)
    assert elsewhere.status_code == 403 and "is for the services checkout, not 'payments'" in elsewhere.json()["error"]
    for requester in ("maintenance", "grace"):
        posing = httpx.post(f"{api.url}/changes", json={**PIPELINE_REQUEST, "requester": requester},
                            headers=bearer(token), timeout=10)
        assert posing.status_code == 403 and posing.json()["fields"] == [
            {"field": "requester", "problem": "not the token's automation"}]
    for path in (f"/changes/{theirs}", f"/changes/{theirs}/wait", "/changes/CHG-999999"):
        unseen = httpx.get(f"{api.url}{path}", headers=bearer(token), timeout=10)
        assert unseen.status_code == 404 and "among the services of this token (checkout)" in unseen.json()["error"]
        assert "payments" not in unseen.text, "nothing of another service's change leaks"
    assert changes_and_events(services) == before


@pytest.mark.parametrize(("body", "field", "status"), [
    (b"not json", "body", 400),
    (b"[1, 2]", "body", 400),
    ({**PIPELINE_REQUEST, "title": ""}, "title", 400),
    ({k: v for k, v in PIPELINE_REQUEST.items() if k != "service"}, "service", 400),
    ({**PIPELINE_REQUEST, "type": "whenever"}, "type", 400),
    ({**PIPELINE_REQUEST, "environment": "prod"}, "environment", 400),
    ({**PIPELINE_REQUEST, "promoted_from": "the staging one"}, "promoted_from", 400),
    ({**PIPELINE_REQUEST, "title": "x" * 5000}, None, 413),
])
def test_bad_input_is_a_4xx_naming_the_field_and_files_nothing(api, services, token, body, field, status):
    before = changes_and_events(services)
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    answer = httpx.post(f"{api.url}/changes", headers=bearer(token), timeout=10, **kwargs)
    assert answer.status_code == status, answer.text
    if field is not None:
        assert field in [f["field"] for f in answer.json()["fields"]], answer.json()
    assert "Traceback" not in answer.text
    assert changes_and_events(services) == before


def test_a_wait_with_a_timeout_that_is_not_a_positive_number_is_400(api, services, token):
    key = filed(api, token)["key"]
    for given in ("soon", "0", "-1", "inf", "nan"):
        answer = httpx.get(f"{api.url}/changes/{key}/wait", params={"timeout": given}, headers=bearer(token),
                           timeout=10)
        assert answer.status_code == 400 and answer.json()["fields"][0]["field"] == "timeout", given
    # The server's limit bounds a longer one: the poll answers pending after api_wait_max_s (5 s here), well
    # before the client gives up (an hour's hold would raise ReadTimeout at 30 s).
    held = httpx.get(f"{api.url}/changes/{key}/wait", params={"timeout": "3600"}, headers=bearer(token), timeout=30)
    assert held.json()["verdict"] == "pending"


def test_the_openapi_document_describes_each_operation_and_its_token(api):
    document = httpx.get(f"{api.url}/openapi.json", timeout=10).json()
    assert document["openapi"].startswith("3.")
    assert set(document["paths"]) == {"/api/v1/changes", "/api/v1/changes/{key}", "/api/v1/changes/{key}/wait",
                                      "/api/v1/changes/{key}/cancel", "/api/v1/changes/{key}/outcome"}
    assert set(document["paths"]["/api/v1/changes"]) == {"post"}
    wait = document["paths"]["/api/v1/changes/{key}/wait"]["get"]
    assert {p["name"] for p in wait["parameters"]} == {"key", "timeout", "until"}
    assert wait["security"] == [{"pipelineToken": []}]
    assert document["components"]["securitySchemes"]["pipelineToken"]["scheme"] == "bearer"
    assert set(document["components"]["schemas"]["GateStatus"]["properties"]["verdict"]["enum"]) == {
        "proceed", "refused", "pending"}


def test_a_pipeline_calls_off_only_its_own_change_withdrawn_before_and_aborted_during_implementation(api, services,
                                                                                                   token):
    """A CI job cancelled mid-way calls its change off: before implementation the change is cancelled; during it
    the abort is recorded (the run is stopped and rolled back, tests/flows/test_abort_flows.py). Another
    pipeline's change, a missing reason or a change past calling off is refused, and the refusal recorded."""
    def call_off(key: str, reason: object = "job cancelled in CI", with_token: str = token) -> httpx.Response:
        return httpx.post(f"{api.url}/changes/{key}/cancel", json={"reason": reason}, headers=bearer(with_token),
                          timeout=10)

    key = filed(api, token)["key"]
    for reason in ("", "  ", 7):
        assert call_off(key, reason).json()["fields"][0]["field"] == "reason"
    maintenance = services.automation_tokens.issue("maintenance", operator="dave", services=["checkout"]).token
    theirs = filed(api, maintenance, title="maintenance of checkout")["key"]
    refused = call_off(theirs)
    assert refused.status_code == 403 and "deploy-pipeline did not file" in refused.json()["error"]
    assert services.changes.get(theirs).state == "awaiting_approval"

    withdrawn = call_off(key)
    assert withdrawn.status_code == 200, withdrawn.text
    assert (withdrawn.json()["state"], withdrawn.json()["verdict"], withdrawn.json()["aborted"]) == (
        "cancelled", "refused", False)
    assert "job cancelled in CI" in withdrawn.json()["reason"]
    again = call_off(key)
    assert again.status_code == 403 and "cancelled" in again.json()["error"]

    running = filed(api, token, title="deploy checkout 2.6")["key"]
    for person in ("frank", "bob"):
        services.approvals.decide(running, approver=person, decision="approve", code=code(services, running, person))
    for state in (ChangeState.scheduled, ChangeState.implementing):
        services.changes.transition(running, state, actor="changeflow", reason="its window opened")
    aborted = call_off(running, "smoke test failed in CI")
    assert aborted.status_code == 200 and aborted.json()["aborted"] is True
    assert services.recovery.abort_reason(running) == "aborted by deploy-pipeline: smoke test failed in CI"
    with services.db.read() as session:
        refusals = session.execute(select(AuditEvent).where(AuditEvent.action == "cancel_refused")).scalars().all()
    assert {e.change_key for e in refusals} >= {theirs, key}


def test_until_start_releases_the_pipeline_while_its_change_is_implemented_and_it_reports_the_outcome_once(
        api, services, token):
    """Approved is not "deploy now": a standard change waits for its window, and its run begins the implementation
    there; only then is the pipeline released (`until=start`), and what its deployment did is the implementation's
    record (the run carries on from it; DORA counts it). A report before that, another pipeline's, a bad result or
    evidence is refused; a second report changes nothing."""
    key = filed(api, token)["key"]

    def gate(until: str = "start") -> dict:
        return httpx.get(f"{api.url}/changes/{key}", params={"until": until}, headers=bearer(token), timeout=10).json()

    def report(result: object = "succeeded", evidence: object = "https://ci.example.com/jobs/42",
               with_token: str = token) -> httpx.Response:
        return httpx.post(f"{api.url}/changes/{key}/outcome", json={"result": result, "evidence": evidence},
                          headers=bearer(with_token), timeout=10)

    for person in ("frank", "bob"):
        services.approvals.decide(key, approver=person, decision="approve", code=code(services, key, person))
    assert gate("approval")["verdict"] == "proceed"
    assert gate()["verdict"] == "pending" and gate()["waiting_for"].startswith("its ")
    early = report()
    assert early.status_code == 403 and "there is no implemented work to confirm" in early.json()["error"]
    bad_until = httpx.get(f"{api.url}/changes/{key}/wait", params={"until": "soon"}, headers=bearer(token),
                          timeout=10)
    assert bad_until.status_code == 400 and bad_until.json()["fields"][0]["field"] == "until"

    for state in (ChangeState.scheduled, ChangeState.implementing):
        services.changes.transition(key, state, actor="changeflow", reason="its window opened")
    released = httpx.get(f"{api.url}/changes/{key}/wait", params={"until": "start", "timeout": "30"},
                         headers=bearer(token), timeout=30)
    assert released.json()["verdict"] == "proceed"
    for result, evidence, field in (("ok", "https://ci/1", "result"), ("succeeded", "", "evidence"),
                                    ("succeeded", "ftp://ci/1", "evidence"), ("failed", "see the log", "evidence"),
                                    ("succeeded", "https://ci/1\nx", "evidence"), (1, "https://ci/1", "result")):
        refused = report(result, evidence)
        assert refused.status_code == 400 and refused.json()["fields"][0]["field"] == field, (result, evidence)
    maintenance = services.automation_tokens.issue("maintenance", operator="dave", services=["checkout"]).token
    theirs = report(with_token=maintenance)
    assert theirs.status_code == 403 and "maintenance did not file this change" in theirs.json()["error"]
    assert services.work.confirmation(key, "implemented") is None, "nothing recorded by a refused report"

    recorded = report()
    assert recorded.status_code == 200 and recorded.json()["reported"] == "done"
    again = report("failed", "https://ci.example.com/jobs/43")
    assert again.status_code == 200 and again.json()["reported"] == "done", "the first report stands"
    confirmation = services.work.confirmation(key, "implemented")
    assert (confirmation.person, confirmation.note) == ("deploy-pipeline",
                                                        "pipeline succeeded: https://ci.example.com/jobs/42")
    for state in (ChangeState.verifying, ChangeState.completed):
        services.changes.transition(key, state, actor="changeflow", reason="verified")
    past = gate()
    assert past["verdict"] == "refused" and "past its implementation" in past["reason"]

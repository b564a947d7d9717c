"""Trying to walk around the controls through the service, as an insider with the CLI or a careless user would:
each attempt is refused (or has no effect), says why, and is on the audit trail. The same attempts through
Prefect's Resume (the REST call the UI makes) are in tests/flows/test_bypass_flows.py."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from models import Act, ChangeState, PolicyViolation, RiskAnswers, Services, decode_data, events_for
from tests.helpers import ROUTINE_RISK, SECRET, Clock, approve, major_request, standard_request

UTC = timezone.utc
T0 = datetime(2026, 12, 1, 12, tzinfo=UTC)  # a Tuesday, 12:00
WINDOW = datetime(2026, 12, 6, 2, tzinfo=UTC)  # the next Sunday maintenance window


def scheduled(services: Services, request: dict | None = None):
    """A standard change approved by alice and bob, waiting for its window on Sunday 02:00."""
    request = request or standard_request(planned_start=WINDOW.isoformat(),
                                          planned_end=(WINDOW + timedelta(hours=1)).isoformat())
    change = services.approvals.request_approval(services.changes.submit(request).key)
    for person in {"standard": ("alice", "bob"), "major": ("alice", "carol", "dave")}[change.type]:
        approve(services, change.key, person)
    return services.changes.transition(change.key, ChangeState.scheduled, actor="changeflow", reason="waiting")


def actions(services: Services, key: str) -> list[tuple[str, str]]:
    with services.db.read() as session:
        return [(e.actor, e.action) for e in events_for(session, key)]


def code(services: Services, key: str, person: str, act: Act) -> str:
    return services.approvals.approval_code_for(key, person, act)


def implementing(services: Services, clock: Clock):
    change = scheduled(services)
    clock.at = WINDOW + timedelta(minutes=1)
    return services.scheduling.begin_implementation(change.key)


# ---- the window gate -------------------------------------------------------------------------------------

def test_a_scheduled_change_may_not_start_before_its_window(at_t0):
    change = scheduled(at_t0)
    check = at_t0.scheduling.start_check(change.key)
    assert not check.may_start and check.opens_at == WINDOW
    with pytest.raises(PolicyViolation, match="its window opens at 2026-12-06 02:00 UTC"):
        at_t0.scheduling.begin_implementation(change.key)
    assert at_t0.changes.get(change.key).state == ChangeState.scheduled.value


@pytest.mark.parametrize(("person", "who_code", "message"), [
    ("", "", "resumed without a name and code"),
    ("nobody-at-all", "alice", "'nobody-at-all' is not in the approver directory"),
    ("alice", "bob", "wrong approval code for alice"),
    ("grace", "grace", "grace requested this change"),
    ("bob", "bob", "bob does not hold a role that may start a standard change early (team_lead)"),
], ids=["empty-resume", "invented-name", "someone-elses-code", "requester", "role-without-authority"])
def test_an_early_start_without_authority_is_refused_and_recorded(at_t0, person, who_code, message):
    change = scheduled(at_t0)
    refusal = at_t0.scheduling.answer_window_gate(change.key, person=person,
                                                  code=code(at_t0, change.key, who_code, Act.start_early)
                                                  if who_code else "", reason="please", attempt_id="window-1")
    assert refusal is not None and message in refusal
    assert actions(at_t0, change.key)[-1] == (person or "unknown (Prefect UI)", "window_gate_refused")
    assert not at_t0.scheduling.start_check(change.key).may_start


def test_an_authorised_early_start_is_recorded_and_lets_the_change_begin(at_t0):
    change = scheduled(at_t0)
    assert at_t0.scheduling.answer_window_gate(change.key, person="alice",
                                               code=code(at_t0, change.key, "alice", Act.start_early),
                                               reason="customer outage", attempt_id="window-1") is None
    assert actions(at_t0, change.key)[-1] == ("alice", "early_start")
    assert at_t0.scheduling.start_check(change.key).may_start
    assert at_t0.scheduling.begin_implementation(change.key).state == ChangeState.implementing.value
    # The compliance report names it for what it is, not as a change outside its window (issue 30).
    findings = {(f["kind"], f["change"]): f["detail"] for f in at_t0.reports.run(
        "compliance", T0 - timedelta(days=1), T0 + timedelta(days=1)).rows}
    assert ("outside_window", change.key) not in findings, findings
    assert findings[("authorised_early_start", change.key)].endswith("started early by alice: customer outage")


def test_a_replayed_gate_answer_is_not_recorded_twice(at_t0):
    change = scheduled(at_t0)
    first = at_t0.scheduling.answer_window_gate(change.key, person="", code="", reason="", attempt_id="window-1")
    again = at_t0.scheduling.answer_window_gate(change.key, person="", code="", reason="", attempt_id="window-1")
    assert first == again and first is not None
    assert [a for _, a in actions(at_t0, change.key)].count("window_gate_refused") == 1


def test_a_policy_without_early_start_refuses_even_an_approver(at_t0):
    change = scheduled(at_t0, major_request(planned_start=(WINDOW + timedelta(days=14)).isoformat()))
    refusal = at_t0.scheduling.answer_window_gate(change.key, person="alice",
                                                  code=code(at_t0, change.key, "alice", Act.start_early),
                                                  reason="eager", attempt_id="window-1")
    assert "the major policy does not allow starting before the window" in refusal
    assert not at_t0.scheduling.start_check(change.key).may_start


def test_an_empty_resume_after_the_window_opened_lets_it_start(at_t0, clock):
    change = scheduled(at_t0)
    clock.at = WINDOW + timedelta(minutes=1)
    assert at_t0.scheduling.answer_window_gate(change.key, person="", code="", reason="", attempt_id="w") is None
    assert at_t0.scheduling.begin_implementation(change.key).state == ChangeState.implementing.value


def test_a_freeze_declared_after_scheduling_holds_the_change_when_its_window_opens(at_t0, clock):
    change = scheduled(at_t0)
    at_t0.scheduling.add_window(starts_at=WINDOW - timedelta(hours=1), ends_at=WINDOW + timedelta(days=2),
                                title="Incident freeze", freeze=True, actor="carol")
    clock.at = WINDOW + timedelta(minutes=1)
    check = at_t0.scheduling.start_check(change.key)
    assert not check.may_start and "Incident freeze" in check.reason
    with pytest.raises(PolicyViolation, match="Incident freeze"):
        at_t0.scheduling.begin_implementation(change.key)
    # An early start does not lift a freeze either.
    refusal = at_t0.scheduling.answer_window_gate(change.key, person="alice",
                                                  code=code(at_t0, change.key, "alice", Act.start_early),
                                                  reason="now", attempt_id="window-2")
    assert "Incident freeze" in refusal
    assert at_t0.changes.get(change.key).state == ChangeState.scheduled.value


# ---- pre-approved templates ------------------------------------------------------------------------------

def test_a_plain_pre_approved_template_skips_the_gate(at_t0, org):
    change = at_t0.changes.submit(standard_request(template="restart-service", rollback_plan="", implementation_plan="",
                                                   risk=None))
    assert change.risk_answers == org.templates["restart-service"].risk.model_dump(mode="json")
    assert at_t0.approvals.request_approval(change.key).state == ChangeState.approved.value


def test_a_request_whose_template_has_no_risk_answers_must_give_its_own(db, org):
    """Issue 30: no risk answer is ever assumed, not even for a template's change."""
    from models import InputError

    bare = org.templates["restart-service"].model_copy(update={"risk": None})
    services = Services.build(db, org.model_copy(update={"templates": {**org.templates, "restart-service": bare}}),
                              SECRET)
    with pytest.raises(InputError) as caught:
        services.changes.submit(standard_request(template="restart-service", risk=None))
    assert [p.field for p in caught.value.problems] == ["risk"]
    assert "none is assumed" in str(caught.value)
    assert services.changes.list_changes() == []
    filed = services.changes.submit(standard_request(template="restart-service"))
    assert filed.risk_answers == RiskAnswers.model_validate(ROUTINE_RISK).model_dump(mode="json")


@pytest.mark.parametrize(("extra", "smuggled"), [
    ({"implementation_plan": "also drop the orders table"}, "implementation_plan"),
    ({"risk": {**ROUTINE_RISK, "users_affected": "all", "complexity": "high"}}, "risk"),
    ({"canary": {"canary_version": "v9"}}, "canary"),
    ({"checklist": "maintenance"}, "checklist"),
], ids=["own-plan", "own-risk-answers", "own-canary", "own-checklist"])
def test_a_pre_approved_template_carrying_more_goes_through_the_normal_gate(db, org, extra, smuggled):
    from models import CanaryConfig

    if "canary" in extra:  # the service needs a router for the plan to be accepted at all
        org = org.model_copy(update={"canary": CanaryConfig.model_validate(
            {"services": {"payments": {"router": {"kind": "http", "url": "http://127.0.0.1:1/w"},
                                       "canary_url": "http://127.0.0.1:1"}}})})
    services = Services.build(db, org, SECRET)
    change = services.changes.submit(standard_request(**{"template": "restart-service", "rollback_plan": "",
                                                         "implementation_plan": "", **extra}))
    change = services.approvals.request_approval(change.key)
    assert change.state == ChangeState.awaiting_approval.value
    missing = services.approvals.evaluation(change.key).missing
    assert {"team_lead": 1, "peer_reviewer": 1}.items() <= missing.items()
    with services.db.read() as session:
        decision = [e for e in events_for(session, change.key) if e.action == "policy_decision"][-1]
        assert decode_data(decision)["pre_approval_dropped"] == [smuggled]


# ---- decisions -------------------------------------------------------------------------------------------

def test_a_rejection_without_a_comment_is_refused_and_recorded(at_t0):
    change = at_t0.approvals.request_approval(at_t0.changes.submit(standard_request()).key)
    with pytest.raises(PolicyViolation, match="a rejection needs a comment"):
        at_t0.approvals.decide(change.key, approver="alice", decision="reject",
                               code=code(at_t0, change.key, "alice", Act.approve),
                               comment="  ")
    assert at_t0.changes.get(change.key).state == ChangeState.awaiting_approval.value
    assert actions(at_t0, change.key)[-1] == ("alice", "approval_refused")


# ---- identities ------------------------------------------------------------------------------------------

def test_a_change_filed_under_an_invented_name_is_refused_and_nothing_is_written(at_t0):
    from models import InputError

    with pytest.raises(InputError) as caught:
        at_t0.changes.submit(standard_request(requester="zoe"))
    assert [p.field for p in caught.value.problems] == ["requester"]
    assert "'zoe' is not in the approver directory" in str(caught.value)
    assert at_t0.changes.list_changes() == []


def test_an_automation_may_file_a_change_but_never_approve_one(at_t0):
    change = at_t0.approvals.request_approval(at_t0.changes.submit(standard_request(requester="maintenance")).key)
    with pytest.raises(PolicyViolation):
        at_t0.approvals.decide(change.key, approver="maintenance", decision="approve", code="", comment="")
    assert actions(at_t0, change.key)[-1] == ("maintenance", "approval_refused")


def test_a_review_needs_a_person_of_the_directory_with_their_code(at_t0):
    from tests.helpers import awaiting_review

    change = awaiting_review(at_t0, by="erin")
    for person, who_code in (("nobody-at-all", "erin"), ("erin", "bob")):
        with pytest.raises(PolicyViolation, match="review: "):
            at_t0.reviews.record(change.key, actor=person, code=code(at_t0, change.key, who_code, Act.review),
                                        summary="all fine")
    assert at_t0.changes.get(change.key).state == ChangeState.review_pending.value
    assert [a for _, a in actions(at_t0, change.key)][-2:] == ["confirmation_refused", "confirmation_refused"]
    closed = at_t0.reviews.record(change.key, actor="erin", code=code(at_t0, change.key, "erin", Act.review),
                                         summary="root cause found")
    assert closed.state == ChangeState.closed.value


def test_a_manual_item_is_confirmed_only_with_the_persons_code_and_a_replay_records_nothing_twice(db, org):
    from models import ManualItem

    services = Services.build(db, org, SECRET)
    change = services.approvals.request_approval(services.changes.submit(standard_request()).key)
    item = ManualItem(id="oncall-ready", title="On-call coordinated", kind="manual")
    for _ in range(2):  # the same answer replayed by a resumed run
        with pytest.raises(PolicyViolation, match="oncall-ready: 'nobody-at-all' is not in the approver directory"):
            services.checklists.confirm_item(change.key, person="nobody-at-all", code="", phase="pre", step=0,
                                             item=item, attempt_id="checklist-pre-0-1")
    assert [a for _, a in actions(services, change.key)].count("confirmation_refused") == 1
    assert services.checklists.check_results(change.key) == []
    assert services.checklists.confirm_item(change.key, person="alice",
                                            code=code(services, change.key, "alice", Act.confirm_check),
                                            phase="pre", step=0, item=item, note="bob is on call")
    assert [(r.item_id, r.actor, r.passed) for r in services.checklists.check_results(change.key)] == [
        ("oncall-ready", "alice", True)]


# ---- withdrawing a change --------------------------------------------------------------------------------

@pytest.mark.parametrize(("person", "who_code", "message"), [
    ("dave", "dave", "dave neither requested"),
    ("nobody-at-all", "grace", "not in the approver directory"),
    ("grace", "alice", "wrong approval code for grace"),
], ids=["no-authority", "invented-name", "someone-elses-code"])
def test_only_the_requester_or_an_approver_may_withdraw_a_change(at_t0, person, who_code, message):
    change = scheduled(at_t0)
    with pytest.raises(PolicyViolation, match=message):
        at_t0.amendments.withdraw(change.key, person=person,
                                  code=code(at_t0, change.key, who_code, Act.withdraw), reason="no")
    assert at_t0.changes.get(change.key).state == ChangeState.scheduled.value
    assert actions(at_t0, change.key)[-1] == (person, "cancel_refused")


def test_a_withdrawn_change_frees_its_slot_and_one_being_implemented_cannot_be_withdrawn(at_t0, clock):
    change = scheduled(at_t0)
    done = at_t0.amendments.withdraw(change.key, person="grace", code=code(at_t0, change.key, "grace", Act.withdraw),
                                  reason="superseded by CHG-9")
    assert done.state == ChangeState.cancelled.value
    again = scheduled(at_t0)  # the same slot on the same service no longer clashes
    clock.at = WINDOW + timedelta(minutes=1)
    at_t0.scheduling.begin_implementation(again.key)
    # Refused, and on the record as every refused withdrawal is (issue 28).
    with pytest.raises(PolicyViolation, match="cannot move from implementing to cancelled"):
        at_t0.amendments.withdraw(again.key, person="grace",
                                  code=code(at_t0, again.key, "grace", Act.withdraw), reason="too late")
    assert [e.action for e in at_t0.changes.view(again.key).events][-1] == "cancel_refused"
    assert at_t0.amendments.cancel_for_cancelled_run(again.key, "CANCELLED") is None


# ---- windows and notice, checked when the change would start ----------------------------------------------

def test_a_change_without_a_date_waits_for_the_next_maintenance_window(at_t0, clock):
    change = scheduled(at_t0, standard_request())  # no planned_start: omitting a date skips nothing
    check = at_t0.scheduling.start_check(change.key)
    # 6 December is the first Sunday: the monthly window (01:00-06:00) opens before the weekly one.
    assert not check.may_start and check.opens_at == WINDOW - timedelta(hours=1)
    assert check.reason == ("its notice period runs until 2026-12-03 12:00 UTC, and the first window after it opens "
                            "at 2026-12-06 01:00 UTC")
    with pytest.raises(PolicyViolation, match="its notice period runs until"):
        at_t0.scheduling.begin_implementation(change.key)
    # An ad hoc window for its service, once its 48 h notice has run (issue 31: one open now would not do).
    at_t0.scheduling.add_window(starts_at=T0 - timedelta(hours=1), ends_at=T0 + timedelta(days=2, hours=1),
                                title="Ad hoc release window", service="payments", actor="alice")
    assert not at_t0.scheduling.start_check(change.key).may_start
    clock.at = T0 + timedelta(days=2, minutes=1)
    assert at_t0.scheduling.start_check(change.key).may_start


def test_a_run_that_wakes_after_its_window_closed_waits_for_the_next(at_t0, clock):
    change = scheduled(at_t0)
    clock.at = WINDOW + timedelta(hours=5)  # Sunday 07:00: the weekly (02-04) and monthly (01-06) windows are over
    check = at_t0.scheduling.start_check(change.key)
    assert not check.may_start and check.opens_at == WINDOW + timedelta(days=7)


def test_a_change_without_a_date_still_serves_its_notice(at_t0, clock):
    at_t0.scheduling.add_window(starts_at=T0 - timedelta(days=1), ends_at=T0 + timedelta(days=30),
                                title="Long release window", actor="alice")
    change = scheduled(at_t0, major_request())
    check = at_t0.scheduling.start_check(change.key)
    assert not check.may_start and check.reason == "its notice period runs until 2026-12-15 12:00 UTC"
    clock.at = T0 + timedelta(days=14, minutes=1)
    assert at_t0.scheduling.start_check(change.key).may_start


@pytest.mark.parametrize(("request_", "message"), [
    (standard_request(planned_start=(T0 + timedelta(days=3)).isoformat()), "planned_start: a standard change runs "
     "in a maintenance window: Fri 2026-12-04 12:00 to 14:00 UTC is outside every window; the next is Monthly "
     "maintenance Sun 2026-12-06 01:00-06:00 UTC"),
    (major_request(planned_start=(T0 + timedelta(days=1)).isoformat()), "planned_start: a major change needs 14 d "
     "notice: earliest 2026-12-15 12:00 UTC; the next maintenance window after that is Weekly maintenance "
     "Sun 2026-12-20 02:00-04:00 UTC"),
    (standard_request(planned_start=(T0 - timedelta(days=3)).isoformat()), "planned_start: a standard change needs "
     "48 h notice: earliest 2026-12-03 12:00 UTC"),
    # Issue 31, the specification's "notify stakeholders 48 hours in advance": Sunday's window is 38 h away.
    (standard_request(planned_start=(WINDOW - timedelta(hours=1)).isoformat(),
                      planned_end=WINDOW.isoformat()) | {"_at": WINDOW - timedelta(hours=38)},
     "planned_start: a standard change needs 48 h notice: earliest 2026-12-06 12:00 UTC; the next maintenance "
     "window after that is Weekly maintenance Sun 2026-12-13 02:00-04:00 UTC"),
], ids=["outside-every-window", "short-notice", "in-the-past", "standard-inside-48h"])
def test_a_dated_change_outside_its_policy_is_refused_at_submit_naming_the_next_slot(at_t0, clock, request_,
                                                                                       message):
    from models import InputError

    request_ = dict(request_)
    clock.at = request_.pop("_at", T0)
    with pytest.raises(InputError) as caught:
        at_t0.changes.submit(request_)
    assert message in str(caught.value)
    assert [p.field for p in caught.value.problems] == ["planned_start"]
    assert at_t0.changes.list_changes() == []

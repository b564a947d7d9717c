"""Lockdown (issue 32), the incident button: while it is on, no change starts and only the types policies.yaml
`lockdown.admits` names are filed; turning it on or off takes a person of a `lockdown.declared_by` role with their
code for the next lockdown act, and every refusal is recorded; the lockdown in force is what the audit trail last
says, so removing it from the database fails `audit verify`."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from models import (Act, AuditEvent, CanaryConfig, ChangeRequest, ChangeState, InputError, PolicyViolation, Services,
                    verify_chain)
from tests.helpers import ROUTINE_RISK, SECRET, approve, emergency_request, standard_request
from tests.integration.test_audit import _tamper
from tests.integration.test_bypass import T0, WINDOW, code, scheduled  # noqa: F401 (T0: clock)

INCIDENT = "INC-7: payments database down"


def declare(services: Services, person: str = "erin", reason: str = INCIDENT):
    return services.lockdown.declare(person=person, code=services.lockdown.code_for(person), reason=reason)


def lift(services: Services, person: str = "erin", reason: str = "INC-7 resolved"):
    return services.lockdown.lift(person=person, code=services.lockdown.code_for(person), reason=reason)


def lockdown_trail(services: Services) -> list[tuple[str, str]]:
    with services.db.read() as session:
        return [(e.actor, e.action) for e in session.execute(select(AuditEvent).where(
            AuditEvent.action.like("lockdown%")).order_by(AuditEvent.seq)).scalars()]


def change_count(services: Services) -> int:
    with services.db.read() as session:
        return session.execute(select(func.count()).select_from(ChangeRequest)).scalar_one()


def test_a_lockdown_stops_every_filing_and_start_but_the_admitted_types_until_it_is_lifted(at_t0, clock):
    waiting = scheduled(at_t0)  # approved, waiting for Sunday's window
    declared = declare(at_t0)
    assert (declared.lockdown.on, declared.lockdown.by, declared.lockdown.reason) == (True, "erin", INCIDENT)
    assert at_t0.lockdown.status() == declared.lockdown

    # Filing: refused naming the lockdown, in the run form's check and in the filing itself; nothing written.
    before = change_count(at_t0)
    assert "standard changes may not be filed until it is lifted (admitted: emergency)" in str(
        at_t0.changes.refusal(standard_request()))
    with pytest.raises(PolicyViolation, match=f"declared by erin: {INCIDENT}: standard changes may not be filed"):
        at_t0.changes.submit(standard_request())
    assert change_count(at_t0) == before

    # Starting: the window opens, and the change still may not start; an authorised early start does not lift it.
    clock.at = WINDOW + timedelta(minutes=1)
    check = at_t0.scheduling.start_check(waiting.key)
    assert not check.may_start and check.frozen and "standard changes may not start" in check.reason
    with pytest.raises(PolicyViolation, match="cannot start: lockdown since"):
        at_t0.scheduling.begin_implementation(waiting.key)
    refusal = at_t0.scheduling.answer_window_gate(waiting.key, person="alice", reason="it is urgent",
                                                  code=code(at_t0, waiting.key, "alice", Act.start_early),
                                                  attempt_id="window-1")
    assert refusal is not None and "an early start does not lift a freeze: lockdown since" in refusal
    assert at_t0.changes.get(waiting.key).state == ChangeState.scheduled.value

    # The incident's own fix is filed and starts.
    fix = at_t0.approvals.request_approval(at_t0.changes.submit(emergency_request()).key)
    approve(at_t0, fix.key, "erin")
    assert at_t0.scheduling.begin_implementation(fix.key).state == ChangeState.implementing.value

    lifted = lift(at_t0)
    assert not lifted.lockdown.on and lifted.lockdown.by == "erin"
    assert at_t0.scheduling.begin_implementation(waiting.key).state == ChangeState.implementing.value
    assert at_t0.changes.submit(standard_request(service="checkout")).state == ChangeState.submitted.value
    assert lockdown_trail(at_t0) == [("erin", "lockdown_declared"), ("erin", "lockdown_lifted")]


def _someone_elses(services, person):
    return services.lockdown.code_for("erin")


def _another_acts(services, person):
    change = services.changes.submit(emergency_request())  # (admitted during a lockdown)
    return code(services, change.key, person, Act.approve)


def _used(services, person):
    """erin's code for a lockdown act she then made: each act needs a new code (the state is left as it was)."""
    spent = services.lockdown.code_for(person)
    for press in ((lift, declare) if services.lockdown.status().on else (declare, lift)):
        press(services)
    return spent


@pytest.mark.parametrize(("person", "code_of", "message"), [
    ("bob", lambda s, p: s.lockdown.code_for(p),
     "bob holds none of the roles that may turn a lockdown on or off (incident_commander)"),
    ("alice", _someone_elses, "wrong lockdown code for alice"),
    ("erin", _another_acts, "wrong lockdown code for erin"),
    ("erin", _used, "wrong lockdown code for erin"),
    ("", lambda s, p: "", "no name given"),
    ("mallory", lambda s, p: s.lockdown.code_for("erin"), "'mallory' is not in the approver directory"),
], ids=["own-code-without-the-role", "someone-elses-code", "code-for-another-act", "code-already-used",
        "empty-name", "invented-name"])
@pytest.mark.parametrize("on", [True, False], ids=["declare", "lift"])
def test_only_a_declarer_with_their_code_for_the_next_act_turns_it_on_or_off(services, person, code_of, message, on):
    if not on:
        declare(services)  # a lockdown to lift
    given = code_of(services, person)
    before = services.lockdown.status()
    press = services.lockdown.declare if on else services.lockdown.lift
    with pytest.raises(PolicyViolation) as refused:
        press(person=person, code=given, reason="walking around it")
    assert message in str(refused.value)
    assert services.lockdown.status() == before, "a refusal changes nothing"
    assert lockdown_trail(services)[-1] == (person, "lockdown_refused")


@pytest.mark.parametrize("reason", ["", "   "], ids=["empty", "blank"])
def test_a_lockdown_without_a_reason_is_bad_input_and_writes_nothing(services, reason):
    with pytest.raises(InputError, match="reason: say why"):
        declare(services, reason=reason)
    assert lockdown_trail(services) == [] and not services.lockdown.status().on


def test_a_lockdown_removed_from_the_database_lets_changes_start_but_fails_audit_verify(services, insider):
    declare(services)
    with services.db.read() as session:
        assert verify_chain(session).ok
        seq = session.execute(select(AuditEvent.seq).where(AuditEvent.action == "lockdown_declared")).scalar_one()
    _tamper(insider, f"DELETE FROM audit_events WHERE seq = {seq}")
    assert not services.lockdown.status().on, "the attack works at the gate ..."
    with services.db.read() as session:
        result = verify_chain(session)
    assert not result.ok, "... and the trail shows it"


def test_canaries_being_rolled_out_are_aborted_when_the_policy_sends_them_back_to_stable(db, org, clock):
    org = org.model_copy(update={"canary": CanaryConfig.model_validate({"services": {"shop": {"router": {
        "kind": "http", "url": "http://127.0.0.1:1/weights"}, "stable_url": "http://127.0.0.1:1/v1",
        "canary_url": "http://127.0.0.1:1/v2"}}})})
    services = Services.build(db, org, SECRET, clock=clock)
    canary = services.changes.submit({"type": "emergency", "title": "canary fix", "service": "shop",
                                      "requester": "bob", "incident_id": "INC-7", "incident_severity": "P1",
                                      "risk": ROUTINE_RISK, "canary": {"canary_version": "v2"}})
    plain = services.changes.submit(emergency_request())
    for change in (canary, plain):
        services.approvals.request_approval(change.key)
        approve(services, change.key, "erin")
        services.scheduling.begin_implementation(change.key)
    declared = declare(services)
    assert [c.key for c in declared.aborted] == [canary.key], "a canary is aborted; other work carries on"
    assert services.recovery.abort_reason(canary.key) == f"lockdown declared by erin: {INCIDENT}"
    assert services.recovery.abort_reason(plain.key) is None

"""Trying to walk around the controls of manual work and of amendments through the service (the rest of
tests/integration/test_bypass.py, split off at 400 lines): each attempt is refused (or has no effect), says why,
and is on the audit trail."""

from __future__ import annotations

from datetime import timedelta

import pytest

from models import Act, ChangeState, PolicyViolation, decode_data, events_for
from tests.helpers import approve
from tests.integration.test_bypass import (  # noqa: F401 (T0: clock)
    T0,
    WINDOW,
    actions,
    code,
    implementing,
    scheduled,
)


# ---- honest outcomes: manual work is done when a person the policy names says so ------------------------

@pytest.mark.parametrize(("person", "who_code", "outcome", "note", "message"), [
    ("", "grace", "done", "", "no name given"),
    ("nobody-at-all", "grace", "done", "", "not in the approver directory"),
    ("grace", "alice", "done", "", "wrong approval code for grace"),
    ("alice", "alice", "done", "", "alice approved this change and its policy separates approving from implementing"),
    ("dave", "dave", "done", "",
     r"dave may not confirm the work on this standard change \(its implementers: alice, grace\)"),
    ("grace", "grace", "failed", "", "a failed stage needs a note"),
], ids=["empty-resume", "invented-name", "someone-elses-code", "approver-implements", "not-an-implementer",
        "failure-without-a-note"])
def test_manual_work_is_confirmed_only_by_an_implementer_with_their_code(at_t0, clock, person, who_code, outcome,
                                                                         note, message):
    change = implementing(at_t0, clock)
    with pytest.raises(PolicyViolation, match=message):
        at_t0.work.confirm(change.key, stage="implemented", person=person,
                           code=code(at_t0, change.key, who_code, Act.confirm_work),
                           outcome=outcome, note=note, attempt_id="work-implemented-1")
    assert at_t0.work.confirmation(change.key, "implemented") is None
    assert actions(at_t0, change.key)[-1] == (person or "unknown (Prefect UI)", "confirmation_refused")
    # The same attempt replayed by a resumed run is refused again, but recorded once.
    with pytest.raises(PolicyViolation):
        at_t0.work.confirm(change.key, stage="implemented", person=person,
                           code=code(at_t0, change.key, who_code, Act.confirm_work),
                           outcome=outcome, note=note, attempt_id="work-implemented-1")
    assert [a for _, a in actions(at_t0, change.key)].count("confirmation_refused") == 1


def test_manual_work_is_confirmed_once_and_only_at_its_stage(at_t0, clock):
    change = implementing(at_t0, clock)
    grace = code(at_t0, change.key, "grace", Act.confirm_work)
    with pytest.raises(PolicyViolation, match="is implementing: there is no verified work to confirm"):
        at_t0.work.confirm(change.key, stage="verified", person="grace", code=grace)
    first = at_t0.work.confirm(change.key, stage="implemented", person="grace", code=grace, note="restarted by hand")
    again = at_t0.work.confirm(change.key, stage="implemented", person="grace", code=grace, outcome="failed",
                               note="changed my mind")
    assert again == first and first.done and first.person == "grace"
    assert [a for _, a in actions(at_t0, change.key)].count("work_confirmed") == 1


def test_a_scheduled_change_is_not_confirmed_as_implemented(at_t0):
    change = scheduled(at_t0)
    with pytest.raises(PolicyViolation, match="is scheduled: there is no implemented work to confirm"):
        at_t0.work.confirm(change.key, stage="implemented", person="grace",
                           code=code(at_t0, change.key, "grace", Act.confirm_work))


# ---- amend and reschedule: a new approval round ----------------------------------------------------------

def test_an_amended_change_is_approved_again_and_the_old_codes_stop_working(at_t0):
    change = scheduled(at_t0)
    old_bob = code(at_t0, change.key, "bob", Act.approve)
    amended = at_t0.amendments.amend(change.key, {"implementation_plan": "restart, then clear the cache"},
                                     person="grace", code=code(at_t0, change.key, "grace", Act.amend),
                                     reason="cache step added")
    assert (amended.state, amended.approval_round) == (ChangeState.awaiting_approval.value, 2)
    assert amended.implementation_plan == "restart, then clear the cache"
    assert not at_t0.approvals.evaluation(change.key).satisfied
    with pytest.raises(PolicyViolation, match=r"wrong approval code for bob on .* \(round 2\)"):
        at_t0.approvals.decide(change.key, approver="bob", decision="approve", code=old_bob)
    from models import IllegalTransition

    with pytest.raises(IllegalTransition, match="cannot move from awaiting_approval to implementing"):
        at_t0.scheduling.begin_implementation(change.key)
    approve(at_t0, change.key, "alice")
    approve(at_t0, change.key, "bob")
    assert at_t0.changes.get(change.key).state == ChangeState.approved.value
    with at_t0.db.read() as session:
        amendment = next(decode_data(e) for e in events_for(session, change.key) if e.action == "change_amended")
    assert amendment["round"] == 2 and amendment["after"] == {"implementation_plan": "restart, then clear the cache"}
    assert amendment["before"]["implementation_plan"] != amendment["after"]["implementation_plan"]


@pytest.mark.parametrize(("person", "who_code", "message"), [
    ("bob", "bob", "bob neither requested"),
    ("nobody-at-all", "grace", "not in the approver directory"),
    ("grace", "bob", "wrong approval code for grace"),
], ids=["an-approver", "invented-name", "someone-elses-code"])
def test_only_the_requester_or_an_owner_may_amend(at_t0, person, who_code, message):
    change = scheduled(at_t0)
    with pytest.raises(PolicyViolation, match=message):
        at_t0.amendments.amend(change.key, {"title": "something else"}, person=person,
                            code=code(at_t0, change.key, who_code, Act.amend), reason="mine now")
    after = at_t0.changes.get(change.key)
    assert (after.state, after.approval_round, after.title) == (ChangeState.scheduled.value, 1, change.title)
    assert actions(at_t0, change.key)[-1] == (person, "amend_refused")


@pytest.mark.parametrize(("amendment", "field"), [
    ({"service": "checkout"}, "service"),
    ({"type": "emergency"}, "type"),
    ({"rollback_plan": ""}, "rollback_plan"),
    ({"planned_start": T0.replace(hour=13).isoformat()}, "planned_start"),
    ({}, "amendment"),
], ids=["service", "type", "drops-the-rollback-plan", "out-of-window", "nothing"])
def test_a_bad_amendment_names_the_field_and_writes_nothing(at_t0, amendment, field):
    from models import InputError

    change = scheduled(at_t0)
    before = actions(at_t0, change.key)
    with pytest.raises(InputError) as caught:
        at_t0.amendments.amend(change.key, amendment, person="grace", code=code(at_t0, change.key, "grace", Act.amend),
                            reason="try")
    assert field in [p.field for p in caught.value.problems]
    assert actions(at_t0, change.key) == before
    assert at_t0.changes.get(change.key).approval_round == 1


def test_a_reschedule_into_a_freeze_is_refused_and_one_into_the_next_window_is_approved_again(at_t0):
    change = scheduled(at_t0)
    next_week = WINDOW + timedelta(days=7)
    at_t0.scheduling.add_window(starts_at=next_week - timedelta(hours=3), ends_at=next_week + timedelta(hours=3),
                                title="Year-end freeze", freeze=True, actor="carol")
    from models import InputError

    grace = code(at_t0, change.key, "grace", Act.amend)
    with pytest.raises(InputError, match="Year-end freeze"):
        at_t0.amendments.amend(change.key, {"planned_start": next_week.isoformat(),
                                         "planned_end": (next_week + timedelta(hours=1)).isoformat()},
                            person="grace", code=grace, reason="moved a week")
    moved = at_t0.amendments.amend(change.key, {"planned_start": (WINDOW + timedelta(minutes=30)).isoformat(),
                                             "planned_end": (WINDOW + timedelta(minutes=90)).isoformat()},
                                person="grace", code=grace, reason="half an hour later")
    assert moved.state == ChangeState.awaiting_approval.value
    assert moved.planned_start == WINDOW + timedelta(minutes=30)


# ---- abort: stopping a change while it is implemented (issue 32) -------------------------------------------

@pytest.mark.parametrize(("person", "who_code", "act", "message"), [
    ("dave", "dave", Act.withdraw, "dave neither requested .* nor may approve it"),
    ("grace", "grace", Act.approve, "wrong approval code for grace"),
    ("grace", "alice", Act.withdraw, "wrong approval code for grace"),
    ("", "grace", Act.withdraw, "no name given"),
], ids=["neither-requester-nor-approver", "a-code-for-another-act", "someone-elses-code", "no-name"])
def test_an_abort_is_taken_only_from_the_requester_or_an_approver_with_their_code(at_t0, clock, person, who_code,
                                                                                  act, message):
    change = implementing(at_t0, clock)
    with pytest.raises(PolicyViolation, match=message):
        at_t0.amendments.abort(change.key, person=person, code=code(at_t0, change.key, who_code, act),
                               reason="stop it")
    assert at_t0.recovery.abort_reason(change.key) is None, "a refused abort undoes nothing"
    assert actions(at_t0, change.key)[-1][1] == "cancel_refused"


def test_an_abort_is_recorded_with_who_and_why_and_refused_before_implementation(at_t0, clock):
    waiting = scheduled(at_t0)
    with pytest.raises(PolicyViolation, match="is scheduled: only a change being implemented can be aborted; call "
                                              "it off with `changeflow cancel`"):
        at_t0.amendments.abort(waiting.key, person="grace", code=code(at_t0, waiting.key, "grace", Act.withdraw),
                               reason="too early")
    clock.at = WINDOW + timedelta(minutes=1)
    change = at_t0.scheduling.begin_implementation(waiting.key)
    at_t0.amendments.abort(change.key, person="grace", code=code(at_t0, change.key, "grace", Act.withdraw),
                           reason="error rate climbing")
    assert at_t0.recovery.abort_reason(change.key) == "aborted by grace: error rate climbing"
    assert at_t0.changes.get(change.key).state == ChangeState.implementing.value, "the run rolls it back, not this"

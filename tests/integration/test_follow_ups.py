"""Reviews that lead somewhere (issue 33): the specification's review fields and action items, each owned by a
person of the directory and due after now; bad input refused naming the field with nothing written; an item closed
by its owner with their code for it and nobody else; an open item reminded when due and escalated up policies.yaml
`follow_ups.escalation`, by the sweep's own function, once per rung; overdue items in `pending` and the compliance
report."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from models import (Act, ActionItemRecord, AuditEvent, ChangeState, InputError, Notification, PolicyViolation,
                    decode_data, parse_action_items)
from tests.helpers import awaiting_review
from tests.integration.test_bypass import code
from tests.integration.test_reviews import rolled_back

T0 = datetime(2026, 11, 1, 12, tzinfo=timezone.utc)
ITEMS = "Alert on pool exhaustion | alice | 2026-11-10\nLoad-test the retry policy | carol | 2026-11-20T12:00"
DUE = datetime(2026, 11, 11, tzinfo=timezone.utc)  # the end of 2026-11-10


def _reviewed(services, **fields):
    change = awaiting_review(services)  # bob's emergency, approved by erin, fixed by bob
    return services.reviews.record(change.key, actor="bob", code=code(services, change.key, "bob", Act.review),
                                   summary="pool exhausted by a retry storm", **fields)


def test_a_review_records_the_specifications_fields_and_its_action_items(at_t0, db):
    closed = _reviewed(at_t0, timeline="10:02 alerts; 10:15 fix deployed", root_cause="unbounded retries",
                       went_well="paged within a minute", went_wrong="no alert on the pool",
                       action_items=parse_action_items(ITEMS))
    assert closed.state == ChangeState.closed.value
    with db.read() as session:
        (event,) = session.query(AuditEvent).filter_by(change_key=closed.key, action="review_recorded").all()
    data = decode_data(event)
    assert (data["root_cause"], data["went_wrong"]) == ("unbounded retries", "no alert on the pool")
    assert data["action_items"] == [
        {"number": 1, "what": "Alert on pool exhaustion", "owner": "alice", "due": DUE.isoformat()},
        {"number": 2, "what": "Load-test the retry policy", "owner": "carol", "due": "2026-11-20T12:00:00+00:00"}]
    assert [(i.number, i.owner, i.due_at) for i in at_t0.reviews.items_of(closed.key)] == [
        (1, "alice", DUE), (2, "carol", datetime(2026, 11, 20, 12, tzinfo=timezone.utc))]


@pytest.mark.parametrize(("fields", "field"), [
    ({"action_items": "Alert on pool exhaustion | mallory | 2026-11-10"}, "action_items.1.owner"),
    ({"action_items": "Alert on pool exhaustion | alice | 2026-10-01"}, "action_items.1.due"),
    ({"action_items": "alert on pool exhaustion, alice, soon"}, "action_items.1"),
    ({"action_items": "ok | alice | 2026-11-10\nx | alice | next week"}, "action_items.2.due"),
    ({"summary": " "}, "summary"),
    ({"rolled_back": True}, "root_cause"),
], ids=["owner-outside-the-directory", "due-in-the-past", "not-three-parts", "not-a-date", "no-summary",
        "a-rollback-without-root-cause"])
def test_a_review_that_does_not_hold_is_refused_naming_the_field_and_nothing_is_written(at_t0, clock, db, fields,
                                                                                       field):
    change = rolled_back(at_t0, clock) if fields.get("rolled_back") else awaiting_review(at_t0)
    reviewer = "alice" if fields.get("rolled_back") else "bob"
    with db.read() as session:
        before = session.query(AuditEvent).count()
    with pytest.raises(InputError) as refused:
        at_t0.reviews.record(change.key, actor=reviewer, code=code(at_t0, change.key, reviewer, Act.review),
                             summary=fields.get("summary", "what happened"),
                             action_items=parse_action_items(fields.get("action_items", "")))
    assert [p.field for p in refused.value.problems] == [field], refused.value
    assert at_t0.changes.get(change.key).state == ChangeState.review_pending.value
    with db.read() as session:
        assert session.query(AuditEvent).count() == before and session.query(ActionItemRecord).count() == 0


def test_an_action_item_is_closed_by_its_owner_with_their_code_for_it_only(at_t0, clock):
    key = _reviewed(at_t0, root_cause="retries", action_items=parse_action_items(ITEMS)).key
    for person, act, why in (("carol", Act.follow_up, "carol does not own action item 1"),
                             ("alice", Act.review, "code")):
        with pytest.raises(PolicyViolation, match=why):
            at_t0.reviews.close_item(key, 1, actor=person, code=code(at_t0, key, person, act), note="done")
    assert at_t0.reviews.open_items(owner="alice")[0].number == 1, "still open"
    clock.at = DUE + timedelta(days=1)
    item = at_t0.reviews.close_item(key, 1, actor="alice", code=code(at_t0, key, "alice", Act.follow_up),
                                    note="alert added")
    assert (item.done_by, item.note) == ("alice", "alert added")
    with pytest.raises(PolicyViolation, match="closed by alice"):
        at_t0.reviews.close_item(key, 1, actor="alice", code=code(at_t0, key, "alice", Act.follow_up))
    findings = at_t0.reviews.open_items(owner="alice")
    assert findings == [], "closed"
    report = at_t0.reports.run("compliance", since=T0, until=DUE + timedelta(days=2)).rows
    assert [r["detail"] for r in report if r["kind"] == "overdue_action_item"] == [
        "action item 1 (alice, due 2026-11-11 00:00 UTC, done late by alice 2026-11-12 00:00): Alert on pool "
        "exhaustion"]


def test_an_open_item_climbs_the_ladder_once_per_rung(at_t0, clock):
    key = _reviewed(at_t0, root_cause="retries", action_items=parse_action_items(ITEMS)).key
    clock.at = DUE - timedelta(hours=1)
    assert at_t0.reviews.reminders_due() == []
    steps = [(DUE, 0, ("alice",)), (DUE + timedelta(days=3), 1, ("alice", "frank")),
             (DUE + timedelta(days=7), 2, ("alice", "dave"))]
    for at, level, people in steps:
        clock.at = at
        reminders = at_t0.reviews.reminders_due()
        assert [(r.item.change_key, r.item.number, r.rung.level, r.rung.people) for r in reminders] == [
            (key, 1, level, people)]
        at_t0.reviews.reminded(reminders[0].item.id, level)
        assert at_t0.reviews.reminders_due() == [], "each rung once"


def test_the_sweep_reminds_and_escalates_and_pending_and_compliance_show_it(at_t0, cli_env, db):
    """The sweep's own functions (flows/sweep.py) on the real clock: the item fell due weeks ago, so every rung is
    due at once; a second sweep sends nothing more. The review overdue since T0 climbs the same ladder."""
    from flows._wiring import wiring
    from flows.sweep import remind_action_items, remind_reviews

    key = _reviewed(at_t0, root_cause="retries", action_items=parse_action_items(ITEMS)).key
    waiting = awaiting_review(at_t0)  # its review due 48 h after T0: overdue now
    wiring.cache_clear()
    try:
        # Both items are weeks overdue on the real clock: each owner thrice, then the team leads (alice, frank)
        # and management (dave): 5 messages for alice's item, 6 for carol's.
        assert remind_action_items() == 11
        assert remind_action_items() == 0
        assert remind_reviews() >= 3
    finally:
        wiring.cache_clear()
    with db.read() as session:
        sent = {(n.change_key, n.event, n.recipient) for n in session.query(Notification).all()}
    assert {(key, "action_item_due", p) for p in ("alice", "carol", "frank", "dave")} <= sent
    assert (key, "action_item_due", "bob") not in sent, "neither an owner nor on the ladder"
    # Its reviewers (bob, checkout's owner frank) are told it is due; the ladder's others that it is overdue.
    assert {(waiting.key, "review_due", "bob"), (waiting.key, "review_due", "frank"),
            (waiting.key, "review_overdue", "alice"), (waiting.key, "review_overdue", "dave")} <= sent
    assert (waiting.key, "review_overdue", "frank") not in sent
    pending = json.loads(cli_env("pending", "--json").stdout)
    assert any(r["key"] == key and r["waiting_on"] == ["alice"] and r["waiting_for"].startswith("action item 1")
               for r in pending), pending
    report = json.loads(cli_env("report", "compliance", "--since", "2026-11-01", "--format", "json").stdout)
    assert any(r["kind"] == "overdue_action_item" and r["change"] == key for r in report)
    done = cli_env("action-done", key, "1", "--as", "alice", "--code", code(at_t0, key, "alice", Act.follow_up),
                   "--note", "alert added")
    assert done.exit_code == 0 and "(late)" in done.output, done.output


def test_manual_work_nobody_confirms_climbs_its_ladder_once_a_rung(at_t0, clock, cli_env, db):
    """A manual work gate with no answer (issue 33): asked once (a resumed gate asks again, the record stands);
    past policies.yaml `manual_work.escalation` its implementers are told again with their code, on-call after
    1 h and management after 4 h told it waits, by the sweep's own function, once a rung; confirmed, nothing more."""
    from flows._wiring import wiring
    from flows.sweep import escalate_manual_work
    from models import WorkStage
    from tests.integration.test_bypass import implementing

    key = implementing(at_t0, clock).key
    for _ in range(2):
        at_t0.work.requested(key, WorkStage.implemented)
    with db.read() as session:
        assert session.query(AuditEvent).filter_by(change_key=key, action="work_requested").count() == 1
    doers = at_t0.work.implementers(key)
    wiring.cache_clear()
    try:
        assert escalate_manual_work() == 2 * len(doers) + 2, "weeks later on the real clock: both rungs at once"
        assert escalate_manual_work() == 0
    finally:
        wiring.cache_clear()
    with db.read() as session:
        sent = {(n.recipient, n.idempotency_key.rsplit(":", 1)[-1]): n for n in session.query(Notification).filter_by(
            change_key=key, event="work_overdue")}
    assert set(sent) == {*((p, f"rung{r}") for p in doers for r in (1, 2)), ("bob", "rung1"), ("dave", "rung2")}
    assert f"changeflow work {key} implemented --as {doers[0]} --code" in sent[(doers[0], "rung1")].body_text
    assert "--code" not in sent[("dave", "rung2")].body_text, "the ladder is told, not given a code to act"
    at_t0.work.confirm(key, stage=WorkStage.implemented, person="grace",  # (alice approved it: not her)
                       code=code(at_t0, key, "grace", Act.confirm_work))
    assert at_t0.work.unanswered() == []

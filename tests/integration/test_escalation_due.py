"""The escalation sweep's schedule (issue 15): a change awaiting approval carries the next moment the sweep has
anything to do for it, so the sweep reads only the changes due, through an index, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from models import ChangeState
from tests.helpers import approve, standard_request


def waiting(services, n: int) -> list:
    changes = []
    for i in range(n):
        change = services.changes.submit(standard_request(title=f"waits {i}"))
        changes.append(services.approvals.request_approval(change.key))
    return changes


def test_nothing_is_due_before_the_first_rung_and_each_change_is_due_at_it(services):
    changes = waiting(services, 3)
    requested = changes[0].approval_requested_at
    rules = services.rules(changes[0])
    first = min(step.after for step in rules.ladder if not step.severities)
    assert services.approvals.due_for_escalation(requested + first - timedelta(seconds=1)) == []
    due = services.approvals.due_for_escalation(changes[-1].approval_requested_at + first)
    assert [c.key for c in due] == [c.key for c in changes]


def test_a_handled_change_is_not_read_again_until_its_next_moment(services):
    (change,) = waiting(services, 1)
    first_rung = change.escalation_due_at
    services.approvals.escalation_handled(change, first_rung)
    following = services.changes.get(change.key).escalation_due_at
    assert following > first_rung
    assert services.approvals.due_for_escalation(following - timedelta(seconds=1)) == []
    assert [c.key for c in services.approvals.due_for_escalation(following)] == [change.key]


def test_the_sla_end_is_the_last_moment_then_nothing(services):
    (change,) = waiting(services, 1)
    sla_end = change.approval_requested_at + services.approvals.approval_sla(change)
    services.approvals.escalation_handled(change, sla_end - timedelta(seconds=1))
    assert services.changes.get(change.key).escalation_due_at == sla_end
    services.approvals.escalation_handled(services.changes.get(change.key), sla_end)
    assert services.changes.get(change.key).escalation_due_at is None


def test_a_decided_change_is_never_due_even_past_its_moment(services):
    (change,) = waiting(services, 1)
    approve(services, change.key, "alice")
    approve(services, change.key, "bob")
    assert services.changes.get(change.key).state == ChangeState.approved
    far = change.approval_requested_at + timedelta(days=30)
    assert services.approvals.due_for_escalation(far) == []

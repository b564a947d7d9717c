"""Undated changes hold a window (issue 32): two undated changes and a dated one on one service were all accepted
for the same Sunday window and would all have started when it opened. Now an undated change holds the whole of the
first allowed window that nobody related holds before it; a dated change is refused there; the window gate starts
an undated change only in the window it holds, and a queue moves up when the change ahead of it ends."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from models import Act, ChangeState, PolicyViolation, Services, decode_data, events_for
from tests.helpers import approve, emergency_request, standard_request

UTC = timezone.utc
T0 = datetime(2026, 12, 8, 12, tzinfo=UTC)  # a Tuesday after the first Sunday: only weekly windows ahead
SUNDAY_13 = datetime(2026, 12, 13, 2, tzinfo=UTC)  # weekly maintenance, 02:00-04:00
SUNDAY_20 = SUNDAY_13 + timedelta(days=7)


@pytest.fixture
def services(at_t0):
    return at_t0  # every test here on the module's clock (tests/conftest.py: `clock` starts at T0)


def scheduled(services: Services, **overrides):
    """An undated standard change approved by alice and bob, waiting for its window."""
    change = services.approvals.request_approval(services.changes.submit(standard_request(**overrides)).key)
    for person in ("alice", "bob"):
        approve(services, change.key, person)
    return services.changes.transition(change.key, ChangeState.scheduled, actor="changeflow", reason="waiting")


def held(services: Services, key: str) -> datetime | None:
    slot = services.scheduling.slot_held_by(services.changes.get(key))
    return slot.starts_at if slot is not None else None


def test_two_undated_changes_on_one_service_take_two_windows_and_the_second_starts_only_in_its_own(services, clock):
    first = scheduled(services, title="first")
    second = scheduled(services, title="second")
    assert (held(services, first.key), held(services, second.key)) == (SUNDAY_13, SUNDAY_20)
    clock.at = SUNDAY_13 + timedelta(minutes=1)
    check = services.scheduling.start_check(second.key)
    assert not check.may_start and check.opens_at == SUNDAY_20, check
    # Walking around the queue: an empty Resume of its window gate and a direct start are both refused.
    refusal = services.scheduling.answer_window_gate(second.key, person="", code="", reason="", attempt_id="w-1")
    assert refusal is not None and "resumed without a name and code" in refusal
    with pytest.raises(PolicyViolation, match=f"{second.key} cannot start: the window open now is held by "
                                              rf"{first.key} on payments, ahead of it \(the next opens at 2026-12-20"):
        services.scheduling.begin_implementation(second.key)
    assert services.changes.get(second.key).state == ChangeState.scheduled.value
    with services.db.read() as session:
        assert [decode_data(e)["refusal"] for e in events_for(session, second.key)
                if e.action == "window_gate_refused"] == [refusal]
    services.scheduling.begin_implementation(first.key)
    # While the first runs, the second still waits; once it has ended, the window is free and the queue moves up.
    assert not services.scheduling.start_check(second.key).may_start
    for state in (ChangeState.verifying, ChangeState.completed):
        services.changes.transition(first.key, state, actor="alice", reason="done")
    assert held(services, second.key) == SUNDAY_13
    assert services.scheduling.begin_implementation(second.key).state == ChangeState.implementing.value


def test_a_dated_change_is_refused_in_the_window_an_approved_undated_one_holds_and_moves_an_unapproved_one(
        services):
    """Approval entitles an undated change to its window: a dated change planned into it is refused naming it. One
    not approved yet goes around the dated change to the next window instead (a stale filing blocks nothing)."""
    undated = scheduled(services, title="undated")
    dated = standard_request(title="dated", planned_start=(SUNDAY_13 + timedelta(hours=1)).isoformat(),
                             planned_end=(SUNDAY_13 + timedelta(hours=2)).isoformat())
    with pytest.raises(PolicyViolation, match=rf"conflicts with {undated.key} \(undated\) on payments, undated, so "
                                              r"taking the window Weekly maintenance Sun 2026-12-13 02:00-04:00 UTC"):
        services.changes.submit(dated)
    assert [c.key for c in services.changes.list_changes()] == [undated.key], "a refused change writes nothing"
    services.amendments.withdraw(undated.key, person="grace", reason="not needed",
                                 code=services.approvals.approval_code_for(undated.key, "grace", Act.withdraw))
    waiting = services.changes.submit(standard_request(title="filed, not approved"))
    assert held(services, waiting.key) == SUNDAY_13
    assert services.changes.submit(dated).state == ChangeState.submitted.value
    assert held(services, waiting.key) == SUNDAY_20


def test_undated_changes_queue_across_services_that_depend_on_each_other_and_share_with_unrelated_ones(services):
    """directory.yaml: payments depends on platform (one step: policies.yaml `conflict_depth`); reporting is in
    no dependency. An emergency holds no window: it runs when approved."""
    platform = services.changes.submit(standard_request(service="platform", title="platform"))
    emergency = services.changes.submit(emergency_request(service="payments"))
    payments = services.changes.submit(standard_request(service="payments", title="payments"))
    reporting = services.changes.submit(standard_request(service="reporting", title="reporting"))
    assert [held(services, c.key) for c in (platform, emergency, payments, reporting)] == [
        SUNDAY_13, None, SUNDAY_20, SUNDAY_13]
    brief = services.briefs.of(services.changes.get(payments.key))
    assert brief.text("When") == ("no date given: the first window nobody related holds, Weekly maintenance "
                                  "Sun 2026-12-20 02:00-04:00 UTC")


def test_the_queue_goes_by_approval_so_an_approved_change_is_never_pushed_back_by_a_later_approval(services, clock):
    """A filing nobody has approved holds up no approved change; approved the day after, it queues behind it."""
    filed_first = services.approvals.request_approval(services.changes.submit(standard_request(title="first")).key)
    approved = scheduled(services, title="approved first")
    assert (held(services, approved.key), held(services, filed_first.key)) == (SUNDAY_13, SUNDAY_20)
    clock.at = T0 + timedelta(days=1)
    for person in ("alice", "bob"):
        approve(services, filed_first.key, person)
    assert (held(services, approved.key), held(services, filed_first.key)) == (SUNDAY_13, SUNDAY_20)


def test_a_running_undated_change_keeps_the_window_it_runs_in_ahead_of_one_approved_before_it(services):
    """Started early by a team lead, a change runs now: it holds the window it runs in, ahead of the queue."""
    ahead = scheduled(services, title="approved first")
    running = scheduled(services, title="started early")
    assert (held(services, ahead.key), held(services, running.key)) == (SUNDAY_13, SUNDAY_20)
    early = services.approvals.approval_code_for(running.key, "alice", Act.start_early)
    assert services.scheduling.answer_window_gate(running.key, person="alice", reason="hotfix window", code=early,
                                                  attempt_id="early-1") is None
    services.scheduling.begin_implementation(running.key)
    assert (held(services, running.key), held(services, ahead.key)) == (SUNDAY_13, SUNDAY_20)


def test_an_early_start_lifts_the_window_never_the_queue(services, clock):
    """A team lead's early start of a change queued behind one being implemented on the same service is recorded,
    and takes effect only once that one has ended: two related changes never run at once."""
    ahead = scheduled(services, title="ahead")
    queued = scheduled(services, title="queued")
    clock.at = SUNDAY_13 + timedelta(minutes=1)
    services.scheduling.begin_implementation(ahead.key)
    early = services.approvals.approval_code_for(queued.key, "alice", Act.start_early)
    assert services.scheduling.answer_window_gate(queued.key, person="alice", reason="go now", code=early,
                                                  attempt_id="early-1") is None
    check = services.scheduling.start_check(queued.key)
    assert not check.may_start and f"{ahead.key} on payments is being implemented now" in check.reason, check
    with pytest.raises(PolicyViolation, match="an early start never runs two related changes at once"):
        services.scheduling.begin_implementation(queued.key)
    for state in (ChangeState.verifying, ChangeState.completed):
        services.changes.transition(ahead.key, state, actor="alice", reason="done")
    assert services.scheduling.begin_implementation(queued.key).state == ChangeState.implementing.value

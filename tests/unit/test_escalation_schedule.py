"""The escalation sweep's schedule (issue 15): the next moment it has anything to do for a waiting change."""

from datetime import datetime, timedelta, timezone

from models import EscalationStep, next_escalation_at

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=timezone.utc)
LADDER = [EscalationStep(after=timedelta(minutes=15), role="oncall_primary"),
          EscalationStep(after=timedelta(minutes=30), role="oncall_secondary"),
          EscalationStep(after=timedelta(hours=2), role="executive", severities=["P1"])]


def test_the_first_moment_is_the_first_rung():
    assert next_escalation_at(T0, None, LADDER, None, timedelta(hours=1)) == T0 + timedelta(minutes=15)


def test_each_handled_moment_moves_to_the_next_rung_then_the_sla_then_nothing():
    sla = timedelta(hours=1)
    assert next_escalation_at(T0, T0 + timedelta(minutes=15), LADDER, None, sla) == T0 + timedelta(minutes=30)
    assert next_escalation_at(T0, T0 + timedelta(minutes=30), LADDER, None, sla) == T0 + sla
    assert next_escalation_at(T0, T0 + sla, LADDER, None, sla) is None


def test_a_rung_for_other_severities_is_not_a_moment():
    sla = timedelta(hours=4)
    assert next_escalation_at(T0, T0 + timedelta(minutes=30), LADDER, "P2", sla) == T0 + sla
    assert next_escalation_at(T0, T0 + timedelta(minutes=30), LADDER, "P1", sla) == T0 + timedelta(hours=2)


def test_a_sweep_that_was_down_lands_past_several_moments_and_takes_the_next_one_after_now():
    assert next_escalation_at(T0, T0 + timedelta(minutes=45), LADDER, None,
                              timedelta(hours=1)) == T0 + timedelta(hours=1)

"""The delegation rules on their own (models.domain._delegation): the period is half-open, authority is not
passed on twice, and the requester's authority never reaches their delegate."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from models import DEFAULTS_DIR, Delegation, acting_for, load_org, with_delegates

T0 = datetime(2026, 12, 1, 12, tzinfo=timezone.utc)
DIRECTORY = load_org(DEFAULTS_DIR).directory
ALICE_TO_ERIN = Delegation("alice", "erin", T0, T0 + timedelta(days=1), "leave")
ERIN_TO_GRACE = Delegation("erin", "grace", T0, T0 + timedelta(days=1), "leave")


def test_the_period_is_half_open():
    assert not ALICE_TO_ERIN.active_at(T0 - timedelta(seconds=1))
    assert ALICE_TO_ERIN.active_at(T0)
    assert not ALICE_TO_ERIN.active_at(T0 + timedelta(days=1))


def test_a_delegate_holds_the_delegators_roles_and_services_in_the_period_only():
    during = with_delegates(DIRECTORY, [ALICE_TO_ERIN], T0, requester="grace")
    assert during.holds("erin", "team_lead") and during.holds("erin", "incident_commander")
    assert "erin" in during.services["payments"].owners
    assert acting_for("erin", "team_lead", DIRECTORY, [ALICE_TO_ERIN], T0) == "alice"
    assert acting_for("erin", "incident_commander", DIRECTORY, [ALICE_TO_ERIN], T0) is None  # her own role
    after = with_delegates(DIRECTORY, [ALICE_TO_ERIN], T0 + timedelta(days=1), requester="grace")
    assert not after.holds("erin", "team_lead") and "erin" not in after.services["payments"].owners
    assert DIRECTORY.holds("erin", "team_lead") is False, "the shipped directory itself is never changed"


def test_authority_is_not_passed_on_twice_nor_taken_from_the_requester():
    chained = with_delegates(DIRECTORY, [ALICE_TO_ERIN, ERIN_TO_GRACE], T0, requester="bob")
    assert chained.holds("grace", "incident_commander") and not chained.holds("grace", "team_lead")
    own_change = with_delegates(DIRECTORY, [ALICE_TO_ERIN], T0, requester="alice")
    assert not own_change.holds("erin", "team_lead")
    assert acting_for("erin", "team_lead", DIRECTORY, [ALICE_TO_ERIN], T0, requester="alice") is None

"""The change lifecycle: allowed moves as data, illegal ones refused with nothing written."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from models import ChangeState as S, IllegalTransition, allowed_targets, plan_transition
from tests.helpers import SHIPPED_RULES

NOW = datetime(2026, 11, 27, tzinfo=timezone.utc)


def test_standard_change_follows_the_documented_path():
    path = [S.submitted, S.awaiting_approval, S.approved, S.scheduled, S.implementing, S.verifying, S.completed,
            S.closed]
    for source, target in zip(path, path[1:]):
        plan_transition(SHIPPED_RULES["standard"], source, target, actor="ops", reason="", at=NOW)


def test_emergency_change_skips_scheduling_and_cannot_close_without_review():
    assert S.implementing in allowed_targets(SHIPPED_RULES["emergency"], S.approved)
    assert S.scheduled not in allowed_targets(SHIPPED_RULES["emergency"], S.approved)
    with pytest.raises(IllegalTransition, match="emergency change cannot move from completed to closed"):
        plan_transition(SHIPPED_RULES["emergency"], S.completed, S.closed, actor="ops", reason="", at=NOW)


def test_terminal_states_allow_nothing():
    for rules in SHIPPED_RULES.values():
        for state in (S.closed, S.rejected, S.expired, S.cancelled):
            assert allowed_targets(rules, state) == frozenset()


def test_transition_needs_an_actor():
    with pytest.raises(IllegalTransition, match="actor"):
        plan_transition(SHIPPED_RULES["standard"], S.submitted, S.awaiting_approval, actor=" ", reason="", at=NOW)

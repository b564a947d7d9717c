"""Risk scoring: the questionnaire, raised by the service's own recent failures."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from models import RiskAnswers, RiskLevel, ServiceHistory, assess_risk
from models import RiskPolicy

POLICY = RiskPolicy()


def answers(**overrides) -> RiskAnswers:
    """A small tested change's answers, with `overrides`: every question must be answered (no defaults)."""
    return RiskAnswers.model_validate({"users_affected": "few", "complexity": "low", "backout_difficulty": "easy",
                                       "tested_in_staging": True, "touches_data": False, **overrides})


def test_a_small_tested_change_is_low_risk():
    result = assess_risk(answers(), ServiceHistory(0, 0), POLICY)
    assert result.level is RiskLevel.low and result.score == 1


def test_score_boundaries_map_to_levels():
    medium = answers(users_affected="many", complexity="medium", backout_difficulty="moderate")
    assert assess_risk(medium, ServiceHistory(0, 0), POLICY).score == 4
    assert assess_risk(medium, ServiceHistory(0, 0), POLICY).level is RiskLevel.medium
    high = answers(users_affected="all", complexity="medium", backout_difficulty="hard")
    assert assess_risk(high, ServiceHistory(0, 0), POLICY).score == 7
    assert assess_risk(high, ServiceHistory(0, 0), POLICY).level is RiskLevel.high


def test_untested_data_changes_carry_their_reasons():
    result = assess_risk(answers(tested_in_staging=False, touches_data=True), ServiceHistory(0, 0), POLICY)
    assert result.score == 5
    assert "+2 not tested in staging" in result.reasons and "+2 modifies stored data" in result.reasons


def test_failure_rate_counts_only_with_enough_history():
    assert assess_risk(answers(), ServiceHistory(4, 4), POLICY).score == 1
    assert assess_risk(answers(), ServiceHistory(10, 2), POLICY).score == 3
    assert assess_risk(answers(), ServiceHistory(10, 3), POLICY).score == 4


def test_no_question_has_a_default_answer():
    """Issue 30: a default filed an unanswered change as low risk, tested in staging."""
    with pytest.raises(ValidationError) as caught:
        RiskAnswers.model_validate({})
    missing = {".".join(map(str, error["loc"])) for error in caught.value.errors() if error["type"] == "missing"}
    assert missing == {"users_affected", "complexity", "backout_difficulty", "tested_in_staging", "touches_data"}

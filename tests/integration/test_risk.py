"""Risk scoring: the questionnaire, raised by the service's own recent failures."""

from __future__ import annotations

from datetime import timedelta

from models import RiskPolicy
from tests.helpers import approve, standard_request

POLICY = RiskPolicy()


def test_recent_failures_of_the_service_raise_the_risk_of_its_next_change(services):
    # Five implemented changes on payments, two rolled back: 40 % failure rate adds 3 points.
    for outcome in ("completed", "completed", "completed", "rolled_back", "rolled_back"):
        change = services.approvals.request_approval(services.changes.submit(standard_request()).key)
        approve(services, change.key, "alice")
        approve(services, change.key, "bob")
        for target in ("scheduled", "implementing", outcome if outcome == "rolled_back" else "verifying"):
            services.changes.transition(change.key, target, actor="ops", reason="test")
        if outcome == "completed":
            services.changes.transition(change.key, "completed", actor="ops", reason="test")
    change = services.changes.submit(standard_request())
    assert change.risk_score == 4 and change.risk_level == "medium"
    assert any("failure rate 40% (2/5" in reason for reason in change.risk_reasons)
    other = services.changes.submit(standard_request(service="checkout"))
    assert other.risk_level == "low"
    assert timedelta(days=90) == services.org.policies.risk.failure_rate_window

"""Canary evidence in the change database, on SQLite and PostgreSQL: measurements are append-only, decisions are
audit events recorded once per bake, gate answers need a person's valid code."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import DBAPIError

from models import Act, PolicyViolation
from models import verify_chain
from models import utcnow
from tests.helpers import standard_request


def _row(step: int, value: float | None, error: str | None = None) -> dict:
    return {"step": step, "weight": 10 * step, "bake": f"b{step}", "metric": "error_rate", "version": "canary",
            "value": value, "error": error, "threshold": 0.05, "operator": ">", "taken_at": utcnow()}


def test_measurements_are_stored_in_order_and_cannot_be_changed(services, insider):
    key = services.changes.submit(standard_request()).key
    services.canary.record_measurements(key, [_row(1, 0.0), _row(1, None, "prometheus: no data"), _row(2, 0.4)])
    stored = services.canary.measurements(key)
    assert [(m.step, m.value, m.error) for m in stored] == [(1, 0.0, None), (1, None, "prometheus: no data"),
                                                           (2, 0.4, None)]
    assert [m.value for m in services.canary.measurements(key, step=2)] == [0.4]
    for statement in ("UPDATE canary_measurements SET value = 0", "DELETE FROM canary_measurements"):
        with pytest.raises(DBAPIError, match="append-only"):
            with insider.write_engine.begin() as conn:
                conn.exec_driver_sql(statement)
    assert len(services.canary.measurements(key)) == 3


def test_a_step_decision_is_recorded_once_per_bake_and_the_last_one_counts(services):
    key = services.changes.submit(standard_request()).key
    first = services.canary.record_decision(key, step=1, bake="a", decision={"action": "pause", "reasons": ["x"]})
    again = services.canary.record_decision(key, step=1, bake="a", decision={"action": "continue", "reasons": []})
    assert first == again and again["action"] == "pause"  # a replay returns the first record
    services.canary.record_decision(key, step=1, bake="a-confirmed", decision={"action": "proceed", "reasons": []})
    assert services.canary.decisions(key)[1]["action"] == "proceed"
    assert [s["action"] for s in services.changes.view(key).canary_steps] == ["pause", "proceed"]
    with services.db.read() as session:
        assert verify_chain(session).ok


def test_a_gate_answer_needs_someone_in_the_directory_with_their_code(services):
    key = services.changes.submit(standard_request()).key
    with pytest.raises(PolicyViolation, match="not in the approver directory"):
        services.canary.confirm(key, person="mallory", code="x", action="proceed", comment="", gate="g")
    with pytest.raises(PolicyViolation, match="wrong approval code for alice"):
        services.canary.confirm(key, person="alice", code="AAAA-BBBB-CCCC", action="proceed", comment="", gate="g")
    answer = services.canary.confirm(key, person="alice", code=services.approvals.approval_code_for(key, "alice",
                                                                                                    Act.answer_canary),
                                    action="roll_back", comment="latency looks off", gate="g")
    assert answer["answer"] == "roll_back"
    confirmations = [e for e in services.changes.view(key).events if e.action == "canary_confirmation"]
    assert [(e.actor, e.data["answer"]) for e in confirmations] == [("alice", "roll_back")]

"""Eight writers at once on one change: exactly one wins each conflict, nobody sees `database is locked`,
and the audit chain never forks."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from models import ChangeState, ConflictError, DatabaseBusy, verify_chain
from tests.helpers import approve, major_request, standard_request

THREADS = 8
TRIALS = int(os.environ.get("CHANGEFLOW_CONCURRENCY_TRIALS", "1000"))
TRANSITION_TARGETS = [ChangeState.rejected, ChangeState.expired, ChangeState.cancelled]
# Standard changes need a team lead and a peer: four people who may each take one open slot.
APPROVERS = [("alice", "team_lead"), ("frank", "team_lead"), ("bob", "peer_reviewer"), ("carol", "peer_reviewer")]


def _race(pool: ThreadPoolExecutor, attempts):
    barrier = threading.Barrier(len(attempts))

    def run(attempt):
        barrier.wait()
        try:
            return ("won", attempt())
        except ConflictError as exc:
            return ("conflict", exc)

    return [f.result() for f in [pool.submit(run, a) for a in attempts]]


@pytest.mark.slow
def test_conflicting_writers_exactly_one_wins(services):
    codes = {}
    won = {"transition": 0, "approval": 0}
    with ThreadPoolExecutor(THREADS) as pool:
        for trial in range(TRIALS):
            filed = services.changes.submit(standard_request(title=f"trial {trial}"))
            change = services.approvals.request_approval(filed.key)
            version = change.version
            if trial % 2 == 0:
                kind = "transition"
                attempts = [
                    (lambda target=TRANSITION_TARGETS[i % 3], i=i: services.changes.transition(
                        change.key, target, actor=f"ops{i}", reason="race", expected_version=version))
                    for i in range(THREADS)
                ]
            else:
                kind = "approval"
                for person, _ in APPROVERS:
                    codes[person] = services.approvals.approval_code_for(change.key, person)
                attempts = [
                    (lambda person=APPROVERS[i % 4][0]: services.approvals.decide(
                        change.key, approver=person, decision="approve", code=codes[person],
                        expected_version=version))
                    for i in range(THREADS)
                ]
            outcomes = _race(pool, attempts)
            winners = [o for o in outcomes if o[0] == "won"]
            losers = [o[1] for o in outcomes if o[0] == "conflict"]
            assert len(winners) == 1, f"trial {trial}: {len(winners)} winners"
            assert len(losers) == THREADS - 1
            for loser in losers:
                assert not isinstance(loser, DatabaseBusy), f"trial {trial}: {loser}"
                assert "re-read" in str(loser)
            won[kind] += 1
            after = services.changes.get(change.key)
            assert after.version == version + 1
    with services.db.read() as session:
        result = verify_chain(session)
    # Per trial: submitted, policy decision, awaiting transition, and the one winning write.
    assert result.ok and result.count == 4 * TRIALS, result
    assert won == {"transition": (TRIALS + 1) // 2, "approval": TRIALS // 2}


@pytest.mark.slow
def test_simultaneous_approvals_without_a_version_are_both_recorded(services):
    """The CLI path: two approvers acting at the same moment; neither decision is lost."""
    with ThreadPoolExecutor(4) as pool:
        for trial in range(max(TRIALS // 10, 10)):
            filed = services.changes.submit(major_request(title=f"cab {trial}"))
            change = services.approvals.request_approval(filed.key)
            codes = {p: services.approvals.approval_code_for(change.key, p) for p in ("alice", "carol", "dave")}
            outcomes = _race(pool, [
                (lambda p=p: services.approvals.decide(change.key, approver=p, decision="approve", code=codes[p]))
                for p in codes
            ])
            assert [o[0] for o in outcomes] == ["won"] * 3
            final = services.changes.get(change.key)
            assert final.state == ChangeState.approved.value
            assert services.approvals.evaluation(change.key).satisfied
    with services.db.read() as session:
        assert verify_chain(session).ok


def test_stale_version_is_a_clear_conflict(services):
    change = services.approvals.request_approval(services.changes.submit(standard_request()).key)
    approve(services, change.key, "alice")
    with pytest.raises(ConflictError, match=r"changed since you read it \(version 2, now 3\)"):
        services.changes.transition(change.key, ChangeState.cancelled, actor="ops", expected_version=change.version)

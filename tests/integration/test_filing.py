"""Nobody files a change under another's name (issue 27): the run form and a request file carry no identity, so a
change goes to its approvers only once the person it names as requester confirms, with the code sent to them for
that act on that change. Every refusal is recorded; a confirmation counts once."""

from __future__ import annotations

import re

import pytest

from models import Act, ChangeState, InputError, PolicyViolation
from tests.helpers import standard_request
from tests.integration.test_bypass import T0, actions, code  # noqa: F401 (T0: clock)


def filed(services, **overrides):
    change = services.changes.submit(standard_request(**overrides))
    assert change.state == ChangeState.submitted.value
    return change


@pytest.mark.parametrize(("person", "whose_code", "act", "message"), [
    ("bob", "bob", Act.file, "only the requester of CHG-000001 (grace) confirms that they filed it"),
    ("", "grace", Act.file, "no name given"),
    ("grace", "bob", Act.file, "wrong approval code for grace"),
    ("grace", "grace", Act.approve, "this needs the one sent to confirm that you filed it"),
], ids=["someone-else", "no-name", "another-persons-code", "a-code-for-another-act"])
def test_a_filing_is_confirmed_only_by_its_requester_with_their_filing_code(at_t0, person, whose_code, act,
                                                                            message):
    change = filed(at_t0)
    with pytest.raises(PolicyViolation, match=re.escape(message)):
        at_t0.approvals.confirm_filing(change.key, person=person, code=code(at_t0, change.key, whose_code, act))
    assert at_t0.changes.get(change.key).state == ChangeState.submitted.value
    assert actions(at_t0, change.key)[-1] == (person or "unknown (Prefect UI)", "filing_refused")
    # Nothing was asked of the approvers, and an approval before the confirmation counts for nothing.
    with pytest.raises(PolicyViolation, match="not awaiting approval"):
        at_t0.approvals.decide(change.key, approver="alice", decision="approve",
                               code=code(at_t0, change.key, "alice", Act.approve))
    confirmed = at_t0.approvals.confirm_filing(change.key, person="grace",
                                               code=code(at_t0, change.key, "grace", Act.file))
    assert confirmed.state == ChangeState.awaiting_approval.value
    assert ("grace", "filing_confirmed") in actions(at_t0, change.key)


def test_a_confirmation_counts_once_and_a_replayed_attempt_records_nothing_twice(at_t0):
    change = filed(at_t0)
    grace = code(at_t0, change.key, "grace", Act.file)
    for _ in range(2):
        with pytest.raises(PolicyViolation):
            at_t0.approvals.confirm_filing(change.key, person="bob", code="AAAA-BBBB-CCCC", attempt_id="filing-1")
    at_t0.approvals.confirm_filing(change.key, person="grace", code=grace, attempt_id="filing-2")
    again = at_t0.approvals.confirm_filing(change.key, person="grace", code=grace, attempt_id="filing-3")
    assert again.state == ChangeState.awaiting_approval.value
    recorded = [action for _, action in actions(at_t0, change.key)]
    assert recorded.count("filing_refused") == 1 and recorded.count("filing_confirmed") == 1
    assert recorded.count("policy_decision") == 1


def test_a_code_seen_in_the_confirmation_is_worth_nothing_else(at_t0):
    """The filing code is the one code a requester types into the run's Resume form: it approves nothing, starts
    nothing early, and does not confirm another of their changes."""
    change, other = filed(at_t0), filed(at_t0, title="another change")
    grace = code(at_t0, change.key, "grace", Act.file)
    with pytest.raises(PolicyViolation, match="wrong approval code for grace on CHG-000002"):
        at_t0.approvals.confirm_filing(other.key, person="grace", code=grace)
    at_t0.approvals.confirm_filing(change.key, person="grace", code=grace)
    with pytest.raises(PolicyViolation, match="requested this change and cannot approve"):
        at_t0.approvals.decide(change.key, approver="grace", decision="approve", code=grace)


def test_a_pipeline_confirms_its_own_filing_with_the_token_an_operator_issued_for_it(at_t0):
    with pytest.raises(PolicyViolation, match="'alice' holds none of the roles that may issue a token"):
        at_t0.automation_tokens.issue("deploy-pipeline", operator="alice", services=["payments"])
    with pytest.raises(PolicyViolation, match="'grace' is not an automation of the directory"):
        at_t0.automation_tokens.issue("grace", operator="dave", services=["payments"])
    for scope, problem in (([], "missing"), ([" "], "missing"), (["*"], "not a name"), (["a,b"], "not a name")):
        with pytest.raises(InputError) as unscoped:
            at_t0.automation_tokens.issue("deploy-pipeline", operator="dave", services=scope)
        assert tuple(unscoped.value.problems[0]) == ("services", problem)
    issued = at_t0.automation_tokens.issue("deploy-pipeline", operator="dave", services=["payments"])
    other = at_t0.automation_tokens.issue("maintenance", operator="dave", services=["payments"])
    elsewhere = at_t0.automation_tokens.issue("deploy-pipeline", operator="dave", services=["checkout", "search"])
    change = filed(at_t0, requester="deploy-pipeline")
    for token, why in ((other.token, "not a token issued for deploy-pipeline"),
                       (code(at_t0, change.key, "grace", Act.file), "not a token issued for deploy-pipeline"),
                       (elsewhere.token, f"token {elsewhere.id} of deploy-pipeline is for the services checkout, "
                                         "search, not 'payments'")):
        with pytest.raises(PolicyViolation, match=why):
            at_t0.approvals.confirm_filing(change.key, person="deploy-pipeline", code=token)
    # A person's filing is never confirmed with a token, nor a pipeline's by a person.
    with pytest.raises(PolicyViolation, match=re.escape(f"only the requester of {change.key} (deploy-pipeline)")):
        at_t0.approvals.confirm_filing(change.key, person="grace", code=issued.token)
    confirmed = at_t0.approvals.confirm_filing(change.key, person="deploy-pipeline", code=issued.token)
    assert confirmed.state == ChangeState.awaiting_approval.value
    # Revoked, it proves nothing any more; only its digest was ever stored.
    at_t0.automation_tokens.revoke(issued.id, operator="dave")
    later = filed(at_t0, requester="deploy-pipeline", title="after the revocation")
    with pytest.raises(PolicyViolation, match="or it was revoked"):
        at_t0.approvals.confirm_filing(later.key, person="deploy-pipeline", code=issued.token)
    with at_t0.db.read() as session:
        from sqlalchemy import text
        stored = " ".join(str(v) for row in session.execute(text("SELECT * FROM automation_tokens")) for v in row)
        events = " ".join(row[0] for row in session.execute(text("SELECT data FROM audit_events")))
    assert issued.token not in stored and issued.token not in events

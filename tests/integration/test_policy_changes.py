"""Policy changes are changes (issue 34): with policies.yaml `policy_changes` set in the version in force, a changed
file takes effect only once an approved change request of that type ships it (`release: policy-<version>`); until
then every process governs with the version in force, read back exactly from the audit trail. Each way around it
(an unapproved request, a cheaper type, another version's approval, a pre-approved template, switching the rule
off in the new file) leaves the change pending; the approved one makes it take effect and the log names it."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from models import DEFAULTS_DIR, InputError, Services, parse_policies
from tests.helpers import SECRET, approve, emergency_request, standard_request

T0 = datetime(2026, 11, 1, 12, tzinfo=timezone.utc)  # a Sunday
SUNDAY = datetime(2026, 11, 8, 2, tzinfo=timezone.utc)  # weekly maintenance, 158 h after T0

SHIPPED = (DEFAULTS_DIR / "policies.yaml").read_text()
GATED = SHIPPED + "\npolicy_changes: {type: standard, service: platform}\n"
WEEK_NOTICE = GATED.replace("notice: 48h", "notice: 7d", 1)  # the proposal: a week's notice for standard changes


def _org(org, text: str):
    return org.model_copy(update={"policies": parse_policies(text.encode(), "policies.yaml")})


def _ships(version: str, **overrides) -> dict:
    return standard_request(**{"service": "platform", "title": "Policy change", "release": f"policy-{version}",
                               **overrides})


def _approved(services, request: dict, *approvers: str) -> str:
    key = services.approvals.request_approval(services.changes.submit(request).key).key
    for person in approvers:
        approve(services, key, person)
    return key


def _governed(db, org, clock) -> Services:
    return Services.governed(db, org, SECRET, clock=clock)


def test_a_new_policy_version_waits_for_its_approved_change_request_and_nothing_else_ships_it(db, org, clock):
    gated, proposed = _org(org, GATED), _org(org, WEEK_NOTICE)
    first = _governed(db, gated, clock)
    assert first.policy_log.record_loaded("worker") is not None, "the first version is recorded as it loads"
    services = _governed(db, proposed, clock)
    in_force = services.policy_log.in_force()
    assert in_force.pending and in_force.configured == proposed.policies.version
    assert services.org.policies.version == gated.policies.version, "the version in force governs"
    assert services.policy_log.record_loaded("worker") is None, "a pending version is not recorded"
    # The week's notice does not hold yet: a change planned 158 h out is filed under the 48 h in force.
    sunday = {"planned_start": SUNDAY.isoformat(), "planned_end": (SUNDAY + timedelta(hours=1)).isoformat()}
    assert services.changes.submit(standard_request(**sunday)).state == "submitted"

    version = proposed.policies.version
    services.changes.submit(_ships(version))  # filed, never approved
    _approved(services, emergency_request(service="platform", release=f"policy-{version}"), "erin")  # cheaper type
    _approved(services, _ships("f" * 64), "alice", "bob")  # another version's approval
    _approved(services, _ships(version, service="payments"), "alice", "bob")  # another service's change
    template = _approved(services, _ships(version, template="restart-service", rollback_plan="",
                                          implementation_plan="", risk=None))  # a pre-approved recipe: nobody
    assert services.changes.get(template).state == "approved", "the template's own gate let it through"
    rejected = _approved(services, _ships(version), "alice")
    services.approvals.decide(rejected, approver="bob", decision="reject", comment="not this quarter",
                              code=services.approvals.approval_code_for(rejected, "bob"))
    assert services.changes.get(rejected).state == "rejected"
    withdrawn = _approved(services, _ships(version), "alice", "bob")
    assert _governed(db, proposed, clock).policy_log.in_force().approved_by == withdrawn, "(the check can pass)"
    services.changes.transition(withdrawn, "cancelled", actor="grace", reason="withdrawn after approval")
    assert _governed(db, proposed, clock).policy_log.in_force().pending

    switched_off = _org(org, WEEK_NOTICE.replace("policy_changes: {type: standard, service: platform}", ""))
    assert _governed(db, switched_off, clock).policy_log.in_force().pending, \
        "the rule of the version in force decides: switching it off is a policy change too"

    key = _approved(services, _ships(version), "alice", "bob")
    shipped = _governed(db, proposed, clock)
    assert not shipped.policy_log.in_force().pending and shipped.policy_log.in_force().approved_by == key
    assert shipped.org.policies.version == version
    with pytest.raises(InputError, match="a standard change needs 7 d notice"):
        shipped.changes.submit(standard_request(**sunday))
    recorded = shipped.policy_log.record_loaded("worker")
    assert recorded is not None and recorded.change == key
    log = shipped.policy_log.log()
    assert [(c.version, c.change) for c in log] == [(gated.policies.version, None), (version, key)]
    assert '-   "notice": "P2D",' in log[1].diff and '+   "notice": "P7D",' in log[1].diff, log[1].diff


def test_policy_propose_files_the_change_a_policy_change_needs_and_the_file_waits_for_it(cli_env, db, tmp_path):
    """`changeflow policy propose DIR --as ...` files the request: its release names the version, its description
    the diff, its test evidence the what-if; refused (exit 2, nothing filed) where the policy in force has no rule,
    or for the version already in force. Installed before its approval, the new file does not govern."""
    config = tmp_path / "home" / "config" / "policies.yaml"
    proposal = tmp_path / "proposal"
    proposal.mkdir()
    (proposal / "policies.yaml").write_text(WEEK_NOTICE)
    refused = cli_env("policy", "propose", str(proposal), "--as", "grace", "--local")
    assert refused.exit_code == 2 and "no `policy_changes` rule" in refused.output, refused.output
    config.write_text(GATED)
    assert cli_env("policy", "log").exit_code == 0, "records the version in force"
    same = tmp_path / "same"
    same.mkdir()
    (same / "policies.yaml").write_text(GATED)
    assert "is the one in force" in cli_env("policy", "propose", str(same), "--as", "grace", "--local").output
    assert Services.build(db, _loaded(GATED), SECRET).changes.list_changes() == [], "nothing filed when refused"

    filed = cli_env("policy", "propose", str(proposal), "--as", "grace", "--local", "--json")
    assert filed.exit_code == 0, filed.output
    version = parse_policies(WEEK_NOTICE.encode(), "policies.yaml").version
    change = Services.build(db, _loaded(GATED), SECRET).changes.get(json.loads(filed.stdout)["key"])
    assert (change.type, change.service, change.release, change.requester) == (
        "standard", "platform", f"policy-{version}", "grace")
    assert '-   "notice": "P2D",' in change.description and '+   "notice": "P7D",' in change.description
    assert change.test_evidence.startswith("changeflow policy what-if over the 0 changes filed since")

    config.write_text(WEEK_NOTICE)  # installed ahead of its approval
    shown = json.loads(cli_env("policy", "show", "--json").stdout)
    assert (shown["pending"], shown["configured_version"]) == (True, version)
    assert shown["policy_version"] == parse_policies(GATED.encode(), "policies.yaml").version
    assert "is not in force: policy changes need an approved standard change request" in \
        cli_env("policy", "log").output


def _loaded(text: str):
    from models import load_org

    org = load_org(DEFAULTS_DIR)
    return _org(org, text)

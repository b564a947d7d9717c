"""The `changeflow` command line: bad input exits 2 naming the field, and nothing is written."""

from __future__ import annotations

import json

import pytest
import yaml

from models import verify_chain
from tests.helpers import ROUTINE_RISK


def _write(tmp_path, data, name="request.yaml"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


GOOD = {
    "type": "standard",
    "test_evidence": "staging run green",
    "title": "Rotate TLS certificates on checkout",
    "service": "checkout",
    "requester": "grace",
    "rollback_plan": "restore the previous certificate bundle",
    "risk": ROUTINE_RISK,
}


def _count_changes(cli_env) -> int:
    result = cli_env("log", "--json", "--limit", "10000")
    assert result.exit_code == 0, result.output
    return len(json.loads(result.stdout))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("type: standard\ntitle: [unclosed\n", "not valid YAML"),
        ({**GOOD, "colour": "blue"}, "colour: unknown field"),
        ({**GOOD, "type": "urgent"}, "type: unknown change type 'urgent' (known: emergency, standard, major)"),
        ({k: v for k, v in GOOD.items() if k != "rollback_plan"},
         "rollback_plan: a standard change needs a rollback plan"),
        ({**GOOD, "type": "emergency", "incident_severity": "P1"},
         "incident_id: an emergency change must name the incident"),
        ({**GOOD, "type": "emergency", "incident_id": "INC-9"},
         "incident_severity: an emergency change needs the incident severity"),
        ({**GOOD, "type": "emergency", "incident_id": "INC-9", "incident_severity": "P4"},
         "incident_severity: an emergency change is only for P1 or P2 incidents, not P4: file the fix of a P4 incident "
         "as a standard change"),
        ({**GOOD, "title": "x" * 1_000_000}, "title: String should have at most 200 characters"),
        ({**GOOD, "planned_start": "2026-12-01T02:00:00Z", "planned_end": "2026-12-01T01:00:00Z"},
         "planned_end: must be after planned_start"),
        ({**GOOD, "planned_start": "2026-12-01T02:00:00"}, "planned_start: Input should have timezone info"),
        ({**GOOD, "planned_start": "2030-01-01T12:00:00Z"}, "planned_start: a standard change runs in a maintenance "
         "window: Tue 2030-01-01 12:00 to 14:00 UTC is outside every window; the next is"),
        ({**GOOD, "risk": {"users_affected": "everyone"}}, "risk.users_affected: Input should be"),
        ({**GOOD, "service": "pay ments; drop"}, "service: String should match pattern"),
        ("- just\n- a list\n", "expected a mapping"),
        # Issue 30: no risk answer is assumed; each missing one is named.
        ({k: v for k, v in GOOD.items() if k != "risk"}, "risk: answer every risk question (users_affected, "
         "complexity, backout_difficulty, tested_in_staging, touches_data): none is assumed"),
        *(({**GOOD, "risk": {k: v for k, v in ROUTINE_RISK.items() if k != question}},
           f"risk.{question}: Field required") for question in ROUTINE_RISK),
    ],
    ids=["malformed", "unknown-field", "unknown-type", "no-rollback", "emergency-no-incident", "emergency-no-severity",
         "emergency-for-a-P4", "1MB-title", "end-before-start", "naive-time", "outside-every-window", "nested-enum",
         "bad-service", "not-a-mapping",
         "no-risk", *(f"no-{question}" for question in ROUTINE_RISK)],
)
def test_bad_request_exits_2_naming_the_field_and_writes_nothing(cli_env, db, tmp_path, content, message):
    result = cli_env("submit", "--local", _write(tmp_path, content))
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert len(result.stderr) < 2000, "the error must stay readable (no echo of a 1 MB value)"
    assert _count_changes(cli_env) == 0
    with db.read() as session:
        assert verify_chain(session).count == 0


def test_missing_file_exits_2(cli_env, tmp_path):
    result = cli_env("submit", "--local", tmp_path / "nope.yaml")
    assert result.exit_code == 2 and "file not found" in result.stderr


def _grace_confirms(cli_env, key: str):
    """grace, the requester, confirms her filing with the code sent to her (her inbox: computed here)."""
    from models import Act, approval_code
    from tests.helpers import SECRET

    return cli_env("confirm-filing", key, "--as", "grace", "--code", approval_code(SECRET, key, "grace", 1, Act.file))


def _filed(cli_env, tmp_path, data) -> str:
    """A change filed with `submit --local` and confirmed by its requester, grace: awaiting its approvals."""
    key = json.loads(cli_env("submit", "--local", _write(tmp_path, data), "--json").stdout)["key"]
    assert _grace_confirms(cli_env, key).exit_code == 0
    return key


def test_submit_approve_show_round_trip(cli_env, tmp_path):
    result = cli_env("submit", "--local", _write(tmp_path, GOOD), "--json")
    assert result.exit_code == 0, result.output
    submitted = json.loads(result.stdout)
    key = submitted["key"]
    assert submitted["state"] == "submitted"
    assert {r["role"] for r in submitted["required"]} == {"team_lead", "peer_reviewer"}
    # Anyone could have typed "grace" into the request: it waits for grace herself to confirm it.
    waiting = [(r["key"], r["waiting_for"], r["waiting_on"]) for r in json.loads(cli_env("pending", "--json").stdout)]
    assert waiting == [(key, "the requester's confirmation of the filing", ["grace"])]
    someone_else = cli_env("confirm-filing", key, "--as", "bob", "--code", "AAAA-BBBB-CCCC")
    assert someone_else.exit_code == 1 and f"only the requester of {key} (grace)" in someone_else.stderr
    assert cli_env("approve", key, "--as", "frank", "--code", "AAAA-BBBB-CCCC").exit_code == 1
    confirmed = _grace_confirms(cli_env, key)
    assert confirmed.exit_code == 0 and "awaiting_approval" in confirmed.stdout, confirmed.output

    refused = cli_env("approve", key, "--as", "grace", "--code", "AAAA-BBBB-CCCC")
    assert refused.exit_code == 1 and "self-approval" in refused.stderr

    for person in ("frank", "carol"):
        code = cli_env("approval-code", key, "--for", person, "--as", "dave").stdout.strip()
        approved = cli_env("approve", key, "--as", person, "--code", code, "--comment", "looks good")
        assert approved.exit_code == 0, approved.output

    shown = json.loads(cli_env("show", key, "--json").stdout)
    assert shown["state"] == "approved"
    assert [(a["approver"], a["role"]) for a in shown["approvals"]] == [("frank", "team_lead"), ("carol",
                                                                                                 "peer_reviewer")]
    actions = [e["action"] for e in shown["events"]]
    assert actions == ["submitted", "filing_refused", "approval_refused", "filing_confirmed", "policy_decision",
                       "transition", "approval_refused", "code_issued", "approval", "code_issued", "approval",
                       "transition"]
    text = cli_env("show", key)
    assert text.exit_code == 0 and "self-approval" in text.stdout and "needs 1 x team_lead" in text.stdout
    # The number alone, or the key in lower case, is the same change (issue 30).
    number = str(int(key.removeprefix("CHG-")))
    for typed in (number, key.lower(), f"chg-{number}"):
        assert json.loads(cli_env("show", typed, "--json").stdout)["key"] == key


def test_approval_code_is_an_operator_act_recorded_with_who_for_whom_and_which_act(cli_env, tmp_path):
    key = _filed(cli_env, tmp_path, GOOD)
    # Not an operator (a team lead, the requester): refused, recorded, nothing printed.
    for person in ("alice", "grace"):
        refused = cli_env("approval-code", key, "--for", "frank", "--as", person)
        assert refused.exit_code == 1 and "holds none of the roles that may print a code (operator)" in refused.stderr
        assert refused.stdout.strip() == ""
    missing = cli_env("approval-code", key, "--for", "frank")
    assert missing.exit_code == 2 and "--as" in missing.output
    work = cli_env("approval-code", key, "--for", "frank", "--act", "confirm_work", "--as", "dave").stdout.strip()
    approve_code = cli_env("approval-code", key, "--for", "frank", "--as", "dave").stdout.strip()
    assert work != approve_code
    # The code printed for confirming work does not approve.
    wrong_act = cli_env("approve", key, "--as", "frank", "--code", work)
    assert wrong_act.exit_code == 1 and "this needs the one sent to approve or reject" in wrong_act.stderr
    assert cli_env("approve", key, "--as", "frank", "--code", approve_code).exit_code == 0
    events = json.loads(cli_env("show", key, "--json").stdout)["events"]
    issued = [(e["actor"], e["action"], e["data"].get("for"), e["data"].get("act")) for e in events
              if e["action"].startswith("code_issue")]
    assert issued == [("alice", "code_issue_refused", "frank", "approve"), ("grace", "code_issue_refused", "frank",
                                                                              "approve"),
                      ("dave", "code_issued", "frank", "confirm_work"), ("dave", "code_issued", "frank", "approve")]


def test_log_filters(cli_env, tmp_path):
    cli_env("submit", "--local", _write(tmp_path, GOOD))
    cli_env("submit", "--local", _write(tmp_path, {**GOOD, "type": "emergency", "service": "payments",
                                                   "incident_id": "INC-1",
                                        "incident_severity": "P2"}, "e.yaml"))
    rows = json.loads(cli_env("log", "--json", "--type", "emergency").stdout)
    assert [r["service"] for r in rows] == ["payments"]
    assert len(json.loads(cli_env("log", "--json", "--service", "checkout").stdout)) == 1
    assert len(json.loads(cli_env("log", "--json", "--since", "2099-01-01").stdout)) == 0
    assert cli_env("log", "--since", "2999-01-01").exit_code == 2  # beyond 2100: out of range, not a crash
    bad = cli_env("log", "--since", "yesterday")
    assert bad.exit_code == 2 and "--since" in bad.stderr
    assert cli_env("log", "--state", "nonsense").exit_code == 2


def test_show_unknown_change_exits_2(cli_env):
    result = cli_env("show", "CHG-999999")
    assert result.exit_code == 2 and "no change 'CHG-999999'" in result.stderr


def test_policy_show_lists_who_must_approve(cli_env):
    data = json.loads(cli_env("policy", "show", "--json").stdout)
    rules = {(r["type"], r["risk"]): r for r in data["rules"]}
    assert [a["role"] for a in rules[("emergency", "low")]["approvals"]] == ["incident_commander"]
    assert rules[("major", "low")]["approvals"][0]["count"] == 3
    assert rules[("major", "low")]["approval_sla_hours"] == 168
    assert "cab_member" in [a["role"] for a in rules[("standard", "high")]["approvals"]]


@pytest.mark.parametrize(("variable", "value", "message"), [
    ("CHANGEFLOW_ZOMBIE_AFTER_S", "12",
     "zombie_after_s (12) must be at least three heartbeats (3 x run_heartbeat_s = 15 s)"),
    ("CHANGEFLOW_SWEEP_INTERVAL_S", "soon", "CHANGEFLOW_SWEEP_INTERVAL_S: Input should be a valid integer"),
    ("CHANGEFLOW_HEARTBEAT_S", "5", "CHANGEFLOW_HEARTBEAT_S: Input should be greater than or equal to 30"),
    ("CHANGEFLOW_SERVER_START_TIMEOUT_S", "1", "CHANGEFLOW_SERVER_START_TIMEOUT_S: Input should be greater than or "
                                               "equal to 10"),
    ("CHANGEFLOW_DEMO_STEP_TIMEOUT_S", "0", "CHANGEFLOW_DEMO_STEP_TIMEOUT_S: Input should be greater than or equal "
                                            "to 10"),
], ids=["zombie-window", "sweep-interval", "heartbeat", "server-start", "demo-step"])
def test_a_bad_setting_exits_2_naming_it_before_any_command_runs(cli_env, monkeypatch, variable, value, message):
    before = _count_changes(cli_env)
    monkeypatch.setenv(variable, value)
    for command in (["pending"], ["up", "--port", "1"], ["submit", "nothing.yaml"]):
        result = cli_env(*command)
        assert result.exit_code == 2, (command, result.output)
        assert message in result.output and "Traceback" not in result.output
    monkeypatch.delenv(variable)
    assert _count_changes(cli_env) == before


def test_delegate_records_an_operators_delegation_that_the_approval_gate_honours_until_it_ends(cli_env, tmp_path):
    from datetime import datetime, timedelta, timezone

    until = (datetime.now(timezone.utc) + timedelta(days=3)).isoformat()
    for args, exit_code, says in (
            (("--to", "erin", "--until", "2020-01-01", "--reason", "leave", "--as", "dave"), 2, "until: the period"),
            (("--to", "zoe", "--until", until, "--reason", "leave", "--as", "dave"), 2, "delegate: 'zoe' is not"),
            (("--to", "erin", "--until", "someday", "--reason", "leave", "--as", "dave"), 2, "--until: 'someday'"),
            (("--to", "erin", "--until", until, "--reason", "leave", "--as", "alice"), 1, "may record a delegation"),
    ):
        refused = cli_env("delegate", "alice", *args)
        assert refused.exit_code == exit_code and says in refused.stderr, refused.output
    assert json.loads(cli_env("delegations", "--json").stdout) == []
    recorded = cli_env("delegate", "alice", "--to", "erin", "--until", until, "--reason", "leave", "--as", "dave",
                       "--json")
    assert recorded.exit_code == 0, recorded.output
    delegation = json.loads(recorded.stdout)
    assert [d["id"] for d in json.loads(cli_env("delegations", "--json").stdout)] == [delegation["id"]]

    key = _filed(cli_env, tmp_path, GOOD)
    erin = cli_env("approval-code", key, "--for", "erin", "--as", "dave").stdout.strip()
    assert cli_env("approve", key, "--as", "erin", "--code", erin).exit_code == 0
    shown = json.loads(cli_env("show", key, "--json").stdout)
    assert [(a["approver"], a["role"], a["on_behalf_of"]) for a in shown["approvals"]] == [("erin", "team_lead",
                                                                                            "alice")]
    assert "erin for alice" in cli_env("show", key).stdout

    assert cli_env("end-delegation", str(delegation["id"]), "--as", "dave").exit_code == 0
    other = _filed(cli_env, tmp_path, {**GOOD, "title": "another"})
    erin = cli_env("approval-code", other, "--for", "erin", "--as", "dave").stdout.strip()
    refused = cli_env("approve", other, "--as", "erin", "--code", erin)
    assert refused.exit_code == 1 and "alice's delegation to erin ended" in refused.stderr


def test_a_pipeline_files_with_the_token_an_operator_issued_for_it_read_from_its_environment(cli_env, tmp_path,
                                                                                           monkeypatch):
    pipeline = {**GOOD, "requester": "deploy-pipeline", "title": "deploy payments 2.5"}
    refused = cli_env("token", "issue", "deploy-pipeline", "--service", "checkout", "--as", "grace")
    assert refused.exit_code == 1 and "may issue a token" in refused.stderr and refused.stdout.strip() == ""
    unscoped = cli_env("token", "issue", "deploy-pipeline", "--as", "dave")
    assert unscoped.exit_code == 2 and "--service" in unscoped.output and unscoped.stdout.strip() == ""
    wildcard = cli_env("token", "issue", "deploy-pipeline", "--service", "*", "--as", "dave")
    assert wildcard.exit_code == 2 and "services:" in wildcard.stderr, wildcard.output
    elsewhere = cli_env("token", "issue", "deploy-pipeline", "--service", "payments", "--as", "dave").stdout.strip()
    issued = cli_env("token", "issue", "deploy-pipeline", "--service", "checkout", "--as", "dave")
    assert issued.exit_code == 0, issued.output
    token = issued.stdout.strip()
    assert token.startswith("cfa_")
    for env_value, args, exit_code, says in (
            (None, ("--token-env", "CI_CHANGEFLOW_TOKEN"), 2, "--token-env: the environment variable"),
            ("cfa_not-the-one", ("--token-env", "CI_CHANGEFLOW_TOKEN"), 1, "not a token issued for deploy-pipeline"),
            (elsewhere, ("--token-env", "CI_CHANGEFLOW_TOKEN"), 1, "is for the services payments, not 'checkout'"),
    ):
        if env_value is None:
            monkeypatch.delenv("CI_CHANGEFLOW_TOKEN", raising=False)
        else:
            monkeypatch.setenv("CI_CHANGEFLOW_TOKEN", env_value)
        result = cli_env("submit", "--local", _write(tmp_path, pipeline), *args)
        assert result.exit_code == exit_code and says in result.stderr, result.output
    monkeypatch.setenv("CI_CHANGEFLOW_TOKEN", token)
    as_a_person = cli_env("submit", "--local", _write(tmp_path, GOOD), "--token-env", "CI_CHANGEFLOW_TOKEN")
    assert as_a_person.exit_code == 2 and "requester: 'grace' is a person" in as_a_person.stderr
    assert json.loads(cli_env("log", "--json").stdout) == [], "nothing was filed by a refused submit"
    filed = cli_env("submit", "--local", _write(tmp_path, pipeline), "--token-env", "CI_CHANGEFLOW_TOKEN", "--json")
    assert filed.exit_code == 0, filed.output
    assert json.loads(filed.stdout)["state"] == "awaiting_approval"
    # What an operator sees before revoking a leaked one: each token's automation and scope, never the token.
    assert cli_env("token", "revoke", "1", "--as", "dave").exit_code == 0
    listed = cli_env("token", "list", "--format", "json")
    assert [(t["id"], t["services"], t["revoked_by"]) for t in json.loads(listed.stdout)] == [
        (1, "payments", "dave"), (2, "checkout", "")]
    assert token not in listed.stdout and elsewhere not in listed.stdout

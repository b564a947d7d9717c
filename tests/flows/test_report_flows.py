"""The reporting deployments in a real run: the audit report's artifacts (table, summary, the verification and
the calendar of the weeks ahead), and the sweep's audit checkpoints anchored in Prefect."""

from __future__ import annotations

import pytest
from prefect.deployments import run_deployment

pytestmark = pytest.mark.flows


def test_audit_report_deployment_publishes_table_and_markdown(flow_stack):
    import httpx

    run = run_deployment("audit-report/audit-report", parameters={"report": "dora"}, timeout=120)
    assert run.state.is_completed(), run.state
    artifacts = httpx.post(f"{flow_stack.api_url}/artifacts/filter",
                           json={"artifacts": {"flow_run_id": {"any_": [str(run.id)]}}}).json()
    kinds = {a["key"]: a["type"] for a in artifacts}
    assert kinds == {"dora-report": "table", "dora-report-summary": "markdown", "audit-verification": "markdown",
                     "calendar": "markdown"}
    calendar = next(a for a in artifacts if a["key"] == "calendar")["data"]  # the weeks ahead (issue 30)
    assert calendar.count("\n") > 28 and "weekly Weekly maintenance" in calendar, calendar
    summary = next(a for a in artifacts if a["key"] == "dora-report-summary")["data"]
    assert "| service | deployments |" in summary and "(all)" in summary
    verification = next(a for a in artifacts if a["key"] == "audit-verification")["data"]
    assert "verdict: **verified**" in verification, verification


def test_the_score_report_publishes_its_weekly_trend_as_a_chart(flow_stack):
    """Issue 33: `report: score` in the audit-report form adds the week-by-week success as a bar chart."""
    import httpx

    run = run_deployment("audit-report/audit-report", parameters={"report": "score"}, timeout=120)
    assert run.state.is_completed(), run.state
    artifacts = httpx.post(f"{flow_stack.api_url}/artifacts/filter",
                           json={"artifacts": {"flow_run_id": {"any_": [str(run.id)]}}}).json()
    chart = next(a for a in artifacts if a["key"] == "score-trend")["data"]
    # One line a week (a week with no success draws no bar: the earlier tests on the stack decide which).
    import re

    assert chart.startswith("# Change success, week by week") and (
        re.search(r"^\d{4}-\d\d-\d\d  [█ ]{40}  +\d+\.\d% of \d+$", chart, re.M) or "No change ended" in chart), chart
    summary = next(a for a in artifacts if a["key"] == "score-report-summary")["data"]
    assert "| scope | name | days |" in summary, summary


def test_the_sweep_anchors_checkpoints_in_prefect_and_verify_reads_them_back(flow_stack):
    """The second anchor: a checkpoint file emptied by someone who cannot sign is caught by the artifacts."""
    import subprocess
    import sys
    from pathlib import Path

    run = run_deployment("approval-escalation/every-minute", timeout=120)
    assert run.state.is_completed(), run.state
    import httpx

    published = httpx.post(f"{flow_stack.api_url}/artifacts/filter",
                           json={"artifacts": {"key": {"any_": ["audit-checkpoint"]}}}).json()
    assert published, "the first checkpoint is due at once and published"
    changeflow = [str(Path(sys.executable).parent / "changeflow"), "audit", "verify", "--prefect"]
    verified = subprocess.run(changeflow, env=flow_stack.stack.env, capture_output=True, text=True)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "signed checkpoints hold" in verified.stdout
    checkpoints = flow_stack.settings.checkpoint_file
    kept = checkpoints.read_text()
    checkpoints.write_text("")
    try:
        emptied = subprocess.run(changeflow, env=flow_stack.stack.env, capture_output=True, text=True)
        assert emptied.returncode == 1
        assert "missing from audit-checkpoints.jsonl" in emptied.stdout + emptied.stderr
    finally:
        checkpoints.write_text(kept)


def test_the_policy_what_if_deployment_reads_a_pasted_policy_and_refuses_one_that_does_not_load(flow_stack):
    """Issue 34 from the Prefect UI: the run form takes a pasted policies.yaml; the run publishes the what-if as
    a Markdown artifact and writes nothing; a proposal that does not load ends the run Refused naming the field."""
    import httpx
    import yaml

    from models import AuditEvent
    from tests.helpers import standard_request

    key = flow_stack.services.changes.submit(standard_request(title="what-if subject")).key
    # The stack's own policies (they add a type its templates use), with one more field required.
    policies = yaml.safe_load((flow_stack.settings.config_dir / "policies.yaml").read_text())
    policies["types"]["standard"]["requires"].append("impact")
    with flow_stack.services.db.read() as session:
        events = session.query(AuditEvent).count()
    run = run_deployment("policy-what-if/what-if", timeout=120, parameters={
        "policies_yaml": yaml.safe_dump(policies, sort_keys=False), "since_days": 1})
    assert run.state.is_completed(), run.state
    (artifact,) = httpx.post(f"{flow_stack.api_url}/artifacts/filter",
                             json={"artifacts": {"flow_run_id": {"any_": [str(run.id)]}}}).json()
    assert artifact["key"] == "policy-what-if" and artifact["type"] == "markdown"
    assert f"| {key} what-if subject | payments | standard | refused: impact: a standard change needs an impact " \
           "statement" in artifact["data"], artifact["data"][:3000]
    with flow_stack.services.db.read() as session:
        assert session.query(AuditEvent).count() == events, "the what-if writes nothing"

    policies["types"]["standard"]["approval_sla"] = "two days"
    refused = run_deployment("policy-what-if/what-if", timeout=120, parameters={
        "policies_yaml": yaml.safe_dump(policies, sort_keys=False)})
    assert refused.state.name == "Refused", refused.state
    assert "proposed/policies.yaml: types.standard.approval_sla" in refused.state.message, refused.state.message
    empty = run_deployment("policy-what-if/what-if", timeout=120, parameters={})
    assert empty.state.name == "Refused" and "policies_yaml" in empty.state.message, empty.state

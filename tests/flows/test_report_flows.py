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

"""Rolling back a completed change through its own run (issue 32): `changeflow rollback` files it, the incident
commander approves it from the run's gate, and the run carries out the completed change's rollback: its template's
rollback commands, and for a canary all traffic back to the stable version first."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from cli.dev import confirm_filing_in_form, nginx_available
from tests.flows.test_canary_flows import canary_setup, plan, ship  # noqa: F401 - canary_setup is a fixture
from tests.flows.test_flows import act, ended_as, submit

pytestmark = pytest.mark.flows


def rollback_on_the_cli(flow_stack, key: str, *extra: str) -> str:
    """`changeflow rollback` as an operator runs it; the rollback's key."""
    changeflow = str(Path(sys.executable).parent / "changeflow")
    filed = subprocess.run([changeflow, "rollback", key, "--as", "carol", "--reason", "errors since the release",
                            "--incident", "INC-4711", "--severity", "P2", *extra], env=flow_stack.stack.env,
                           capture_output=True, text=True)
    assert filed.returncode == 0, filed.stdout + filed.stderr
    return re.search(r"(CHG-\d+) recorded: emergency change", filed.stdout).group(1)


def approved_by_the_incident_commander(flow_stack, key: str):
    rollback = flow_stack.services.changes.get(key)
    confirm_filing_in_form(flow_stack.services, flow_stack.api_url, rollback.flow_run_id)
    rollback = flow_stack.wait_for(key, lambda c: c.state == "awaiting_approval", what="awaiting_approval")
    act(flow_stack, rollback, "erin", comment="roll it back")
    return rollback


def test_a_completed_change_is_rolled_back_by_its_templates_rollback_commands(flow_stack):
    run_id = submit({"type": "standard", "title": "Restart payments", "service": "payments", "requester": "grace",
                     "template": "restart-service"})  # pre-approved: it runs at once
    ended_as(run_id, "Closed")
    original = flow_stack.services.changes.find_by_idempotency_key(f"flow-run:{run_id}").key
    rollback = approved_by_the_incident_commander(flow_stack, rollback_on_the_cli(flow_stack, original))
    ended_as(rollback.flow_run_id, "Review pending", timeout_s=90)  # an emergency: reviewed afterwards
    done = flow_stack.services.changes.view(rollback.key)
    assert (done.state, done.outcome, done.rolls_back) == ("review_pending", "succeeded", original)
    steps = next(e for e in done.events if e.to_state == "verifying").data["steps"]
    assert [s["output"].strip() for s in steps] == ["restarting payments again", "payments healthy"], \
        "the completed change's rollback commands, not its implementation"
    undone = flow_stack.services.changes.view(original)
    assert undone.rolled_back_by == rollback.key
    (page,) = flow_stack.change_pages(rollback.flow_run_id, rollback.key)  # the rollback's page in the Prefect UI
    assert f"**Rolls back:** {original}" in page and "change on **payments** in **production**" in page, page
    assert [(e.action, e.data["by"]) for e in undone.events if e.action in ("rollback_filed", "reverted")] == [
        ("rollback_filed", rollback.key), ("reverted", rollback.key)]


@pytest.mark.skipif(not nginx_available(), reason="nginx is not installed (apt-get install nginx-light)")
def test_a_promoted_canary_rolled_back_sends_its_traffic_to_stable_first(flow_stack, lab, canary_setup, tmp_path):
    weights = tmp_path / "weights.log"
    canary_setup({"kind": "command", "command": ["sh", "-c",
                                                 f"echo {{service}} {{canary_version}} {{weight}} >> {weights}"]})
    run_id = ship(flow_stack, plan("http_probe"), "canary to roll back later")
    ended_as(run_id, "Closed", timeout_s=120)
    original = flow_stack.services.changes.find_by_idempotency_key(f"flow-run:{run_id}").key
    assert weights.read_text().splitlines() == ["shop v2 10", "shop v2 50", "shop v2 100"]
    rollback = approved_by_the_incident_commander(flow_stack, rollback_on_the_cli(flow_stack, original))
    ended_as(rollback.flow_run_id, "Review pending", timeout_s=90)
    assert weights.read_text().splitlines()[-1] == "shop v2 0", "all traffic back to v1"
    steps = next(e for e in flow_stack.services.changes.view(rollback.key).events
                 if e.to_state == "verifying").data["steps"]
    assert steps[0]["traffic"].startswith("all to v1") and steps[0]["ok"]
    assert steps[1]["output"].strip() == "rollback of shop done"

"""The Runs list and a change's page as a change manager sees them in the Prefect UI (issue 30), in Debian's
headless Chromium: a canary release promoted, a change rejected, one cancelled by its failing pre-check. Each run
is listed by its change's key and title, in a state named for what became of the change, in that state's colour;
a sweep that found nothing to do leaves at most its latest run; the change's page shows who approved and the
canary's steps. Screenshots go to docs/."""

from __future__ import annotations

import httpx
import pytest
from prefect.deployments import run_deployment

from tests.e2e.test_browser import DOCS, chromium_page
from tests.flows.test_canary_flows import canary_setup, plan, ship  # noqa: F401
from tests.flows.test_flows import act, awaiting, ended_as, submit
from tests.helpers import standard_request

pytestmark = [pytest.mark.flows, pytest.mark.slow]

SWEEP = "approval-escalation/every-minute"


def sweep_runs(flow_stack) -> list[dict]:
    with httpx.Client(base_url=flow_stack.api_url, timeout=30) as http:
        deployment = http.get(f"/deployments/name/{SWEEP}").json()["id"]
        return http.post("/flow_runs/filter", json={"deployments": {"id": {"any_": [deployment]}}}).json()


def page_artifact(flow_stack, key: str) -> str:
    """The id of the change's page (its latest version: the one artifact the key's page in the UI links to)."""
    found = httpx.post(f"{flow_stack.api_url}/artifacts/filter", timeout=30, json={
        "artifacts": {"key": {"any_": [f"change-{key.lower()}"]}}, "sort": "CREATED_DESC", "limit": 1})
    found.raise_for_status()
    return found.json()[0]["id"]


def test_the_runs_list_names_each_change_and_its_outcome_in_colour_and_the_page_shows_the_rollout(
        flow_stack, lab, canary_setup):  # noqa: F811
    services = flow_stack.services
    promoted = ship(flow_stack, plan("http_probe", bake_s=1.0), "Browser: canary v2 on shop")
    rejected = submit(standard_request(title="Browser: rejected upgrade", template="scripted-standard"))
    act(flow_stack, awaiting(flow_stack, rejected), "alice", decision="reject", comment="no rollback test")
    cancelled = submit({"type": "standard", "title": "Browser: pre-check fails", "service": "payments",
                        "requester": "grace", "template": "with-pre-fails"})
    ended = {"Closed": promoted, "Rejected": rejected, "Cancelled": cancelled}
    for name, run_id in ended.items():
        ended_as(run_id, name, timeout_s=180)
    keys = {name: services.changes.find_by_idempotency_key(f"flow-run:{run_id}").key
            for name, run_id in ended.items()}

    # Sweeps until one finds nothing due (the first ones send what the runs queued, sign a checkpoint), then one
    # more: it deletes the idle one before it, so idle sweeps leave only their latest run in the list.
    for _ in range(5):
        if run_deployment(SWEEP, timeout=120).state.name == "Nothing due":
            break
    assert run_deployment(SWEEP, timeout=120).state.name == "Nothing due"
    assert [r["state"]["name"] for r in sweep_runs(flow_stack)].count("Nothing due") == 1

    ui = flow_stack.api_url.removesuffix("/api")
    titles = {"Closed": "Browser: canary v2 on shop", "Rejected": "Browser: rejected upgrade",
              "Cancelled": "Browser: pre-check fails"}
    colour = {"Closed": "state--completed", "Rejected": "state--cancelled", "Cancelled": "state--cancelled"}
    with chromium_page() as page:
        page.goto(f"{ui}/runs")
        rows = page.locator(".flow-run-list-item")
        for name, key in keys.items():
            row = rows.filter(has_text=f"{key} {titles[name]}")
            row.first.wait_for()
            badge = row.locator(".state-badge")
            assert (row.count(), badge.inner_text().strip()) == (1, name), (key, badge.all_inner_texts())
            assert colour[name] in badge.get_attribute("class"), (name, badge.get_attribute("class"))
        # A row shows its flow's name once the UI has fetched the flow, after the run itself (run 50 counted
        # before that): wait for the idle sweep's row, then count.
        idle = rows.filter(has_text="approval-escalation").locator(".state-badge", has_text="Nothing due")
        idle.first.wait_for()
        assert idle.count() == 1
        page.set_viewport_size({"width": 1400, "height": 1500})  # the list below the chart, all three changes
        page.screenshot(path=str(DOCS / "ui-runs-list.png"))
        page.set_viewport_size({"width": 1400, "height": 1000})

        page.goto(f"{ui}/artifacts/artifact/{page_artifact(flow_stack, keys['Closed'])}")
        shown = page.get_by_text("Decided: alice (team_lead, approve), bob (peer_reviewer, approve)")
        shown.first.wait_for()
        body = page.inner_text("body")
        bars = [line for line in body.splitlines() if line.startswith("step ")]
        assert [line.split()[:3] for line in bars] == [["step", "1", "10"], ["step", "2", "50"],
                                                        ["step", "3", "100"]], body
        assert bars[2].count("█") == 20 and "promote" in bars[2], body
        assert "State: closed (succeeded)" in body
        assert f"{keys['Closed']} Browser: canary v2 on shop: Closed" in body, "its run as it ended, not Running"
        page.screenshot(path=str(DOCS / "ui-change-page.png"))

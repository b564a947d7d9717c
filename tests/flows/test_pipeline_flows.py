"""A pipeline waits on the gate over HTTP (issue 32): the example of docs/pipelines.md, run as a CI job runs it,
against `changeflow endpoint` beside the flow stack's Prefect server and worker. The change is filed through its
real run, its approvers act in the Prefect UI's Resume form, and the job is released with exit 0; the token never
reaches Prefect."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from uuid import UUID

import httpx
import yaml
import pytest
from prefect import get_client

from models import ChangeState
from tests.flows.test_flows import act
from tests.helpers import ROUTINE_RISK, wait_until

pytestmark = pytest.mark.flows

EXAMPLE = Path(__file__).parents[2] / "examples" / "pipeline_gate.py"


@pytest.fixture
def endpoint(flow_stack):
    changeflow = str(Path(sys.executable).parent / "changeflow")
    port = flow_stack.approval_url.rsplit(":", 1)[1]
    process = subprocess.Popen([changeflow, "endpoint", "--port", port], env=flow_stack.stack.env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def answers() -> bool:
        try:
            return httpx.get(f"{flow_stack.approval_url}/livez", timeout=2).status_code == 200
        except httpx.HTTPError:
            return process.poll() is not None  # died: the assertion below says why
    wait_until(answers, 60, "changeflow endpoint to answer")
    assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
    yield flow_stack.approval_url
    process.terminate()
    process.wait(30)


def test_the_pipeline_example_files_through_the_run_and_is_released_once_approved(flow_stack, endpoint, tmp_path):
    service = "pipeline-gated"
    token = flow_stack.services.automation_tokens.issue("deploy-pipeline", operator="dave", services=[service]).token
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"type": "standard", "title": "deploy pipeline-gated 2.5", "service": service,
                                   "rollback_plan": "redeploy 2.4", "risk": ROUTINE_RISK}))
    job = subprocess.Popen([sys.executable, str(EXAMPLE), str(request), "--timeout", "300"],
                           env={**flow_stack.stack.env, "CHANGEFLOW_URL": endpoint, "CHANGEFLOW_TOKEN": token},
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def filed():
            assert job.poll() is None, job.communicate()  # the job ended early: its output says why
            return next((c for c in flow_stack.services.changes.all_in_state(ChangeState.awaiting_approval)
                         if c.service == service and c.flow_run_id), None)

        change = wait_until(filed, 120, "the pipeline's change to reach its approvers (the token confirmed it)")
        act(flow_stack, change, "frank")
        assert job.poll() is None, "one of two approvals: the job still waits"
        act(flow_stack, change, "bob")
        out, err = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, err
    final = json.loads(out)
    assert (final["key"], final["verdict"]) == (change.key, "proceed") and "approved: deploy" in err
    assert change.requester == "deploy-pipeline"

    async def what_prefect_holds() -> str:
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

        async with get_client() as client:
            run = await client.read_flow_run(UUID(change.flow_run_id))
            inputs = await client.filter_flow_run_input(key_prefix="", flow_run_id=run.id, limit=100,
                                                        exclude_keys=set())
            logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
        return json.dumps(run.parameters) + " ".join(i.value for i in inputs) + " ".join(log.message for log in logs)

    assert token not in asyncio.run(what_prefect_holds()), "the token stays in the pipeline's secret store"


def test_the_cli_files_through_the_run_with_yaml_booleans_and_a_rejection_ends_the_wait_with_exit_1(flow_stack,
                                                                                                   tmp_path):
    """`changeflow submit FILE` (not --local) starts the submit deployment: a request file answers the yes / no
    questions as YAML booleans, which Prefect's parameter schema refused until they were posted as the run form
    posts them (every such submit exited 1, 'could not start change-request/submit')."""
    service = "pipeline-cli"
    token = flow_stack.services.automation_tokens.issue("deploy-pipeline", operator="dave", services=[service]).token
    request = tmp_path / "deploy.yaml"
    request.write_text(yaml.safe_dump({"type": "standard", "title": "deploy pipeline-cli 3.0", "service": service,
                                       "requester": "deploy-pipeline", "rollback_plan": "redeploy 2.9",
                                       "risk": {**ROUTINE_RISK, "tested_in_staging": True, "touches_data": False}}))
    changeflow = str(Path(sys.executable).parent / "changeflow")
    job = subprocess.Popen([changeflow, "submit", str(request), "--token-env", "CI_CHANGEFLOW_TOKEN", "--wait",
                            "--json"], env={**flow_stack.stack.env, "CI_CHANGEFLOW_TOKEN": token},
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def filed():
            assert job.poll() is None, job.communicate()
            return next((c for c in flow_stack.services.changes.all_in_state(ChangeState.awaiting_approval)
                         if c.service == service and c.flow_run_id), None)

        change = wait_until(filed, 120, "the CLI's change to reach its approvers")
        act(flow_stack, change, "bob", decision="reject", comment="no load test for 3.0")
        out, err = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 1, err
    assert json.loads(out)["verdict"] == "refused" and "no load test for 3.0" in err
    assert flow_stack.services.changes.get(change.key).risk_answers["tested_in_staging"] is True

"""A pipeline waits on the gate over HTTP (issue 32): the example of docs/pipelines.md, run as a CI job runs it,
against `changeflow endpoint` beside the flow stack's Prefect server and worker. The change is filed through its
real run, its approvers act in the Prefect UI's Resume form, and the job is released with exit 0; the token never
reaches Prefect."""

from __future__ import annotations

import asyncio
import json
from contextlib import contextmanager
import subprocess
import sys
from pathlib import Path
from uuid import UUID

import httpx
import yaml
import pytest
from prefect import get_client

from models import ChangeState
from tests.flows.test_flows import act, ended_as
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


@contextmanager
def pipeline_job(flow_stack, command: list[str], env: dict[str, str], service: str):
    """A CI job's process, and the change it filed once that awaits its approvers; killed if the test leaves it."""
    job = subprocess.Popen(command, env={**flow_stack.stack.env, **env}, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        def filed():
            assert job.poll() is None, job.communicate()  # the job ended early: its output says why
            return next((c for c in flow_stack.services.changes.all_in_state(ChangeState.awaiting_approval)
                         if c.service == service and c.flow_run_id), None)

        yield job, wait_until(filed, 120, "the pipeline's change to reach its approvers (the token confirmed it)")
    finally:
        if job.poll() is None:
            job.kill()


def test_the_pipeline_example_files_through_the_run_and_is_released_once_approved(flow_stack, endpoint, tmp_path):
    service = "pipeline-gated"
    token = flow_stack.services.automation_tokens.issue("deploy-pipeline", operator="dave", services=[service]).token
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"type": "standard", "title": "deploy pipeline-gated 2.5", "service": service,
                                   "test_evidence": "staging run green",
                                   "rollback_plan": "redeploy 2.4", "risk": ROUTINE_RISK}))
    with pipeline_job(flow_stack, [sys.executable, str(EXAMPLE), str(request), "--timeout", "300"],
                      {"CHANGEFLOW_URL": endpoint, "CHANGEFLOW_TOKEN": token}, service) as (job, change):
        act(flow_stack, change, "frank")
        assert job.poll() is None, "one of two approvals: the job still waits"
        act(flow_stack, change, "bob")
        out, err = job.communicate(timeout=120)
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
                                       "test_evidence": "staging run green",
                                       "requester": "deploy-pipeline", "rollback_plan": "redeploy 2.9",
                                       "risk": {**ROUTINE_RISK, "tested_in_staging": True, "touches_data": False}}))
    changeflow = str(Path(sys.executable).parent / "changeflow")
    with pipeline_job(flow_stack, [changeflow, "submit", str(request), "--token-env", "CI_CHANGEFLOW_TOKEN", "--wait",
                                   "--json"], {"CI_CHANGEFLOW_TOKEN": token}, service) as (job, change):
        act(flow_stack, change, "bob", decision="reject", comment="no load test for 3.0")
        out, err = job.communicate(timeout=120)
    assert job.returncode == 1, err
    assert json.loads(out)["verdict"] == "refused" and "no load test for 3.0" in err
    assert flow_stack.services.changes.get(change.key).risk_answers["tested_in_staging"] is True


@pytest.fixture
def pipeline_service(flow_stack):
    """A service of its own, owned by alice, with a window open now: a change of it starts as soon as it is
    approved, and nothing of another test's runs in this window (the runs read directory.yaml anew)."""
    from datetime import timedelta

    from models import utcnow

    path = flow_stack.home / "config" / "directory.yaml"
    original = path.read_text()
    directory = yaml.safe_load(original)
    directory["services"]["pipeline-deployed"] = {"owners": ["alice"], "stakeholders": ["dave"]}
    path.write_text(yaml.safe_dump(directory, sort_keys=False))
    now = utcnow()
    flow_stack.services.scheduling.add_window(starts_at=now - timedelta(minutes=1), ends_at=now + timedelta(hours=1),
                                              kind="ad_hoc", title="pipeline deploys", service="pipeline-deployed")
    yield "pipeline-deployed"
    path.write_text(original)


def test_a_pipeline_deploys_at_its_changes_start_and_its_report_moves_the_run_on_to_verification(
        flow_stack, endpoint, pipeline_service, tmp_path):
    """`--until start` against a real run: approval releases nothing until the run, in its window, begins the
    implementation; the pipeline's outcome report (HTTP, as docs/pipelines.md's curl) is the implementation's
    record, the run carries on to its verification, which the service's owner confirms, and the change closes
    `succeeded`."""
    from models import Act

    token = flow_stack.services.automation_tokens.issue("deploy-pipeline", operator="dave",
                                                        services=[pipeline_service]).token
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"type": "standard", "title": "deploy pipeline-deployed 1.1",
                                   "test_evidence": "staging run green",
                                   "service": pipeline_service, "rollback_plan": "redeploy 1.0",
                                   "risk": ROUTINE_RISK}))
    with pipeline_job(flow_stack, [sys.executable, str(EXAMPLE), str(request), "--until", "start", "--timeout", "300"],
                      {"CHANGEFLOW_URL": endpoint, "CHANGEFLOW_TOKEN": token}, pipeline_service) as (job, change):
        act(flow_stack, change, "frank")
        act(flow_stack, change, "bob")
        out, err = job.communicate(timeout=120)
    assert job.returncode == 0, err
    assert json.loads(out)["state"] == "implementing" and "started: deploy" in err

    reported = httpx.post(f"{endpoint}/api/v1/changes/{change.key}/outcome", timeout=30,
                          headers={"Authorization": f"Bearer {token}"},
                          json={"result": "succeeded", "evidence": "https://ci.example.com/jobs/11"})
    assert reported.status_code == 200 and reported.json()["reported"] == "done", reported.text
    flow_stack.wait_for(change.flow_run_id, lambda c: c.state == "verifying", timeout_s=90,
                        what="the run to carry on to verification")
    alice = flow_stack.services.approvals.approval_code_for(change.key, "alice", Act.confirm_work)
    changeflow = str(Path(sys.executable).parent / "changeflow")
    verified = subprocess.run([changeflow, "work", change.key, "verified", "--as", "alice", "--code", alice],
                              env=flow_stack.stack.env, capture_output=True, text=True)
    assert verified.returncode == 0, verified.stderr
    ended_as(change.flow_run_id, "Closed", timeout_s=120)
    done = flow_stack.services.changes.view(change.key)
    assert (done.state, done.outcome) == ("closed", "succeeded")
    implemented = next(e for e in done.events if e.action == "work_confirmed")
    assert (implemented.actor, implemented.data["note"]) == ("deploy-pipeline",
                                                             "pipeline succeeded: https://ci.example.com/jobs/11")

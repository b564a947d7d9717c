"""Two scenes of the demo around the gate (issue 32): a deployment pipeline that files its change over the pipeline
API and waits on the gate until its change may start (examples/pipeline_gate.py, as a CI job runs it), then reports
what it did; and an operator who aborts a canary in the middle of its 50 % bake, whose traffic goes back to stable
at once and whose change is rolled back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Protocol

import httpx

from models import Act, ChangeState

from ._canary_lab import Lab
from ._demo_requests import PIPELINE_REQUEST

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pipeline_gate.py"
PIPELINE = "deploy-pipeline"  # an automation of the shipped directory.yaml


class Demo(Protocol):
    """What a scene uses of the demo (`_demo.Demo`): its services, its waits, and the way people act in it."""

    home: Path
    services: Any  # models.Services
    step_timeout_s: float

    def say(self, tag: str, text: str) -> None: ...
    def wait(self, probe: Callable[[], Any], what: str) -> Any: ...
    def submit(self, request: dict) -> str: ...
    def awaiting_approval(self, run_id: str) -> Any: ...
    def approve(self, tag: str, run_id: str, key: str, person: str, comment: str) -> None: ...
    def final_state(self, run_id: str, key: str) -> str: ...
    def record(self, name: str, key: str, got: str, expected: str) -> None: ...


def pipeline_waits_on_its_gate(demo: Demo, tag: str, approval_url: str, app: Callable[..., object]) -> None:
    services = demo.services
    service = PIPELINE_REQUEST["service"]
    # Issued by an operator once and kept in the CI's secret store; it stands for the pipeline on this service only.
    token = services.automation_tokens.issue(PIPELINE, operator="dave", services=[service]).token
    request = demo.home / "pipeline-request.json"
    request.write_text(json.dumps(PIPELINE_REQUEST))
    job = subprocess.Popen([sys.executable, str(EXAMPLE), str(request), "--until", "start",
                            "--timeout", str(int(demo.step_timeout_s))],
                           env={**os.environ, "CHANGEFLOW_URL": approval_url, "CHANGEFLOW_TOKEN": token},
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def filed():
            return next((c for c in services.changes.all_in_state(ChangeState.awaiting_approval)
                         if c.requester == PIPELINE and c.flow_run_id), None)

        change = demo.wait(filed, "the pipeline's change")
        key = change.key
        demo.say(tag, f"{PIPELINE} filed {key} over the pipeline API and waits on its gate "
                      "(examples/pipeline_gate.py --until start)")
        for person, comment in (("frank", "release notes read"), ("bob", "diff reviewed")):
            demo.approve(tag, change.flow_run_id, key, person, comment)
        _, err = job.communicate(timeout=demo.step_timeout_s)
    finally:
        if job.poll() is None:
            job.kill()
    if job.returncode != 0:
        raise RuntimeError(f"the pipeline job exited {job.returncode}: {err.strip()}")
    demo.say(tag, f"the job went on once its window was open and its run began: {err.strip().splitlines()[-1]}")
    reported = httpx.post(f"{approval_url}/api/v1/changes/{key}/outcome", timeout=30,
                          headers={"Authorization": f"Bearer {token}"},
                          json={"result": "succeeded", "evidence": "https://ci.example.com/jobs/4471"})
    reported.raise_for_status()
    demo.say(tag, f"the job reports it deployed (evidence https://ci.example.com/jobs/4471): {key} "
                  f"{services.changes.get(key).state}")
    demo.wait(lambda: services.changes.get(key).state == ChangeState.verifying.value, "verification")
    code = services.approvals.approval_code_for(key, "alice", Act.confirm_work)
    app(["work", key, "verified", "--as", "alice", "--code", code, "--note", "search healthy after 1.8"],
        standalone_mode=False)
    state = demo.final_state(change.flow_run_id, key)
    demo.say(tag, f"alice, its service's owner, verified it: {key} {state}, outcome "
                  f"{services.changes.get(key).outcome}")
    demo.record(tag, key, state, "closed")


def canary_aborted_mid_bake(demo: Demo, tag: str, request: dict, lab: Lab, app: Callable[..., object]) -> None:
    services = demo.services
    run_id = demo.submit(request)
    key = demo.awaiting_approval(run_id).key
    for person in ("alice", "bob"):
        demo.approve(tag, run_id, key, person, "approved for the release window")
    demo.wait(lambda: services.canary.measurements(key, step=2), "the 50 % bake")
    demo.say(tag, f"{key} bakes at 50 %; p99 climbs and grace stops it: changeflow abort {key}")
    pressed = time.perf_counter()
    app(["abort", key, "--as", "grace", "--code", services.approvals.approval_code_for(key, "grace", Act.withdraw),
         "--reason", "p99 latency climbing at 50 %"], standalone_mode=False)
    # nginx takes the weight the abort wrote at its reload, while its old workers finish what they serve (seen in a
    # clean-clone run: a request of the 20 still on the canary): the demo shows 20 requests once all reach stable.
    def stable_only() -> dict | None:
        seen = lab.traffic_split(20)
        return seen if set(seen) == {lab.stable.version} else None

    split = demo.wait(stable_only, "the canary's traffic gone") if lab.nginx_port else {}
    demo.say(tag, f"{time.perf_counter() - pressed:.1f} s later the canary has no traffic"
                  + (f" (20 requests through nginx: {split})" if split else "")
                  + "; the sweep starts its stopped run again only to roll it back")
    # (Its run is Cancelled, a final state, until the sweep starts it again: the change's outcome is what ends it.)
    outcome = demo.wait(lambda: services.changes.get(key).outcome, "the rollback")
    demo.say(tag, f"{key} {services.changes.get(key).state}, outcome {outcome}")
    demo.record(tag, key, outcome, "rolled_back")

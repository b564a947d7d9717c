"""`changeflow doctor` and `/healthz` on a running stack (issue 31): everything holds with the worker heartbeating;
a work pool whose worker went silent, and one nobody created, are named. (Prefect down, the database, the guards,
the outbox and the checkpoints: tests/cli/test_doctor.py.)"""

from __future__ import annotations

import httpx
import pytest

from cli.dev import Stack, free_port, start_endpoint
from tests.cli.test_doctor import doctor
from tests.helpers import wait_until

pytestmark = pytest.mark.flows


def test_doctor_and_healthz_hold_on_a_running_stack_and_name_a_silent_worker(flow_stack, tmp_path):
    from prefect.deployments import run_deployment

    env = flow_stack.stack.env
    # This stack's sweep is off (the tests run it): a sweep signs what earlier tests wrote and publishes it, as on
    # a running stack. (Not `changeflow audit checkpoint`: a checkpoint in the file alone left the sweep of
    # test_flows' anchor test nothing due to publish when this test ran first, a clean-clone run 2026-12-06.)
    assert run_deployment("approval-escalation/every-minute", timeout=120).state.is_completed()
    code, checks, err = doctor(env)
    assert code == 0, (checks, err)
    assert "'changeflow': last heartbeat" in checks["worker"][1]

    # A pool whose one worker sent a heartbeat and died.
    with httpx.Client(base_url=flow_stack.api_url, timeout=30) as api:
        api.post("/work_pools/", json={"name": "silent-pool", "type": "process"}).raise_for_status()
        api.post("/work_pools/silent-pool/workers/heartbeat", json={"name": "gone"}).raise_for_status()
    impatient = {**env, "CHANGEFLOW_HEALTH_WORKER_SILENT_AFTER_S": "1"}
    silent = wait_until(lambda: (lambda r: r if not r[1]["worker"][0] else None)(doctor(impatient, "--pool",
                                                                                         "silent-pool")),
                        60, "the worker to count as silent")
    assert silent[0] == 1 and "unhealthy: worker" in silent[2]
    assert "every worker of the work pool 'silent-pool' is silent: the last heartbeat was" in silent[1]["worker"][1]
    code, checks, _ = doctor(env, "--pool", "no-such-pool")
    assert code == 1 and "no work pool named 'no-such-pool'" in checks["worker"][1]

    stack = Stack(flow_stack.api_url, env)
    port = free_port()
    try:
        start_endpoint(stack, port, tmp_path / "logs")
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=60)
        assert health.status_code == 200 and health.json()["ok"], health.text
        assert [c["name"] for c in health.json()["checks"]] == list(checks)
    finally:
        stack.stop()

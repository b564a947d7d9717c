"""A pipeline waits on its change's approval gate (issue 32): `changeflow submit --wait` and `changeflow wait`, run
as a pipeline runs them, in a process of their own, while people decide. Each exit code: 0 may proceed, 1 rejected,
expired or cancelled, 2 bad input, 3 timed out; a refused decision (a wrong code, the requester's own approval)
never releases a waiting pipeline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from models import ChangeState, Database, Services, Settings, load_org
from tests.helpers import ROUTINE_RISK, SECRET, wait_until

CHANGEFLOW = str(Path(sys.executable).parent / "changeflow")
PIPELINE_REQUEST = {"type": "standard", "title": "deploy checkout 2.5", "service": "checkout",
                    "test_evidence": "staging run green",
                    "requester": "deploy-pipeline", "rollback_plan": "redeploy 2.4",
                    "risk": ROUTINE_RISK}


def start(*args: str, token: str | None = None) -> subprocess.Popen:
    """`changeflow ARGS` in a process of its own, as a CI job runs it (it polls every 0.2 s here: 2 s by default)."""
    env = {**os.environ, "CHANGEFLOW_WAIT_POLL_S": "0.2", **({"CI_CHANGEFLOW_TOKEN": token} if token else {})}
    return subprocess.Popen([CHANGEFLOW, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=120)
    return process.returncode, out, err


@pytest.fixture
def services(cli_env) -> Iterator[Services]:
    """The same database and config the commands use: what people's codes are, and the sweep's own calls."""
    settings = Settings()
    built = Services.build(Database.from_settings(settings), load_org(settings.config_dir), SECRET)
    yield built
    built.db.dispose()


def pipeline_token(cli_env) -> str:
    return cli_env("token", "issue", "deploy-pipeline", "--service", "checkout", "--as", "dave").stdout.strip()


def pipeline_files_and_waits(cli_env, tmp_path, *extra: str, token: str | None = None) -> tuple[subprocess.Popen, str]:
    """The pipeline's job: file with its token and wait; returns the process and the key once the change waits
    for its approvers."""
    token = token or pipeline_token(cli_env)
    request = tmp_path / "deploy.yaml"
    request.write_text(yaml.safe_dump(PIPELINE_REQUEST))
    job = start("submit", "--local", str(request), "--token-env", "CI_CHANGEFLOW_TOKEN", "--wait", "--json", *extra,
                token=token)

    def filed():
        rows = json.loads(cli_env("log", "--json").stdout)
        return rows[0]["key"] if rows and rows[0]["state"] == ChangeState.awaiting_approval.value else None

    return job, wait_until(filed, 60, "the pipeline's change to await its approvers")


def approve(cli_env, services, key: str, person: str, code: str | None = None):
    return cli_env("approve", key, "--as", person, "--code", code or services.approvals.approval_code_for(key, person))


def test_a_pipeline_waits_until_its_change_is_approved_and_a_refused_decision_does_not_release_it(cli_env, services,
                                                                                                  tmp_path):
    job, key = pipeline_files_and_waits(cli_env, tmp_path)
    wrong = approve(cli_env, services, key, "frank", code="AAAA-BBBB-CCCC")
    assert wrong.exit_code == 1
    # The pipeline that filed it cannot approve its own change, whatever it holds (its token is no code).
    own = cli_env("approve", key, "--as", "deploy-pipeline", "--code", "AAAA-BBBB-CCCC")
    assert own.exit_code in (1, 2) and json.loads(cli_env("show", key, "--json").stdout)["state"] == "awaiting_approval"
    assert approve(cli_env, services, key, "frank").exit_code == 0
    assert job.poll() is None, "one of two approvals: still waiting"
    assert approve(cli_env, services, key, "bob").exit_code == 0
    code, out, err = finish(job)
    assert code == 0, err
    final = json.loads(out)  # stdout holds the final record only
    assert (final["key"], final["verdict"], final["state"]) == (key, "proceed", "approved") and final["approved_at"]
    assert "waiting for approval: still needed" in err


def test_a_rejection_while_a_pipeline_waits_ends_its_wait_with_exit_1_and_the_reason(cli_env, services, tmp_path):
    job, key = pipeline_files_and_waits(cli_env, tmp_path)
    rejected = cli_env("reject", key, "--as", "bob", "--code", services.approvals.approval_code_for(key, "bob"),
                       "--comment", "no load test for 2.5")
    assert rejected.exit_code == 0, rejected.output
    code, out, err = finish(job)
    assert code == 1 and json.loads(out)["verdict"] == "refused"
    assert f"{key} was rejected" in err and "no load test for 2.5" in err


def test_an_expiry_and_a_withdrawal_end_a_wait_with_exit_1(cli_env, services, tmp_path):
    job, key = pipeline_files_and_waits(cli_env, tmp_path)
    # What the escalation sweep does once the approval SLA has passed (flows/sweep.py).
    services.changes.transition(key, ChangeState.expired, actor="approval-escalation",
                                  reason="No decision within the approval SLA.")
    code, _out, err = finish(job)
    assert code == 1 and f"{key} was expired: No decision within the approval SLA." in err

    job, key = pipeline_files_and_waits(cli_env, tmp_path)
    waiter = start("wait", key)  # a second job waiting on the same change, by key
    withdraw = services.approvals.approval_code_for(key, "alice", "withdraw")
    cancelled = cli_env("cancel", key, "--as", "alice", "--code", withdraw, "--reason", "superseded by 2.6")
    assert cancelled.exit_code == 0, cancelled.output
    for process in (job, waiter):
        code, _out, err = finish(process)
        assert code == 1 and "cancelled" in err and "superseded by 2.6" in err


def test_a_wait_nobody_answers_times_out_with_exit_3_and_bad_input_exits_2_filing_nothing(cli_env, services,
                                                                                           tmp_path):
    job, key = pipeline_files_and_waits(cli_env, tmp_path, "--timeout", "2s")
    code, out, err = finish(job)
    assert code == 3 and json.loads(out)["verdict"] == "pending"
    assert f"{key} is still awaiting_approval after 0:00:02" in err
    waited = start("wait", key, "--timeout", "1s")
    assert finish(waited)[0] == 3

    for args, says in ((("wait", "CHG-999999"), "CHG-999999"), (("wait", key, "--timeout", "soon"), "--timeout"),
                       (("wait", key, "--timeout", "0s"), "--timeout")):
        code, _out, err = finish(start(*args))
        assert code == 2 and says in err and "Traceback" not in err
    before = json.loads(cli_env("log", "--json").stdout)
    request = tmp_path / "again.yaml"
    request.write_text(yaml.safe_dump(PIPELINE_REQUEST))
    code, _out, err = finish(start("submit", "--local", str(request), "--wait", "--timeout", "soon"))
    assert code == 2 and "--timeout" in err
    assert json.loads(cli_env("log", "--json").stdout) == before, "a refused submit files nothing"


def test_a_pipeline_waiting_for_the_start_deploys_then_reports_its_outcome_from_its_token(cli_env, services,
                                                                                         tmp_path):
    """`--until start`: approval alone does not release it (the change waits for its window); its run's start of
    the implementation does (moved here as the run moves it). Then `report-outcome` records the deployment with the
    token from the environment; a report without it, with a bad result or a URL that is none exits 2."""
    token = pipeline_token(cli_env)
    job, key = pipeline_files_and_waits(cli_env, tmp_path, "--until", "start", token=token)
    for person in ("frank", "bob"):
        assert approve(cli_env, services, key, person).exit_code == 0
    assert job.poll() is None, "approved, but its window has not opened: still waiting"
    for state in (ChangeState.scheduled, ChangeState.implementing):
        services.changes.transition(key, state, actor="changeflow", reason="its window opened")
    code, out, err = finish(job)
    assert code == 0 and json.loads(out)["state"] == "implementing", err

    report = ("report-outcome", key, "--token-env", "CI_CHANGEFLOW_TOKEN")
    for args, says in ((("--result", "succeeded", "--evidence", "https://ci/1"), "--token-env"),
                       (("--result", "ok", "--evidence", "https://ci/1"), "result:"),
                       (("--result", "failed", "--evidence", "see the log"), "evidence:")):
        code, _out, err = finish(start(*report, *args, token=None if says == "--token-env" else token))
        assert code == 2 and says in err and "Traceback" not in err, err
    assert services.work.confirmation(key, "implemented") is None
    code, out, err = finish(start(*report, "--result", "failed", "--evidence", "https://ci.example.com/jobs/7",
                                  token=token))
    assert code == 0 and "implementation reported failed by deploy-pipeline" in out, err
    assert services.work.confirmation(key, "implemented").note == "pipeline failed: https://ci.example.com/jobs/7"

"""A real Prefect server and worker for the flow tests, started once per test session: the work pool, deployments
and warm worker of `changeflow up`, with every schedule switched off (the tests start the sweep and the maintenance
runs themselves, at the moment they need one)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import timedelta
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import httpx
import pytest
import yaml
from prefect import get_client

from cli.dev import (FAST_POLLING, Stack, compress_notice, create_pool_and_deploy, free_port, prefect_env,
                     start_worker, wait_for_deployments)
from models import DEFAULTS_DIR, Act, Database, Services, Settings, install_runbooks, load_org, utcnow
from tests.helpers import ROUTINE_RISK, SECRET
from tests.prefect_db import start_seeded_server
from tests.receivers import start_health_server

def test_checklists(health_url: str, backups: Path) -> dict:
    return {
        "pre-fails": {"pre": [
            {"id": "svc-healthy", "title": "Service healthy", "kind": "http", "url": f"{health_url}/failing"}]},
        "post-fails": {
            "pre": [{"id": "backup-fresh", "title": "Backup fresh", "kind": "backup_fresh",
                     "path_glob": str(backups / "*.dump"), "max_age_hours": 26}],
            "post": [{"id": "smoke", "title": "Smoke test", "kind": "command", "command": "exit 1"}]},
        "advisory": {
            "pre": [{"id": "status-page", "title": "Status page updated", "kind": "command", "command": "exit 1",
                     "required": False}],
            "during": [{"id": "still-healthy", "title": "Healthy after the step", "kind": "http",
                        "url": f"{health_url}/healthy", "retries": 1}],
            "post": [{"id": "latency", "title": "Fast enough", "kind": "http", "url": f"{health_url}/healthy",
                      "max_latency_ms": 2000}]},
        "fails-before-the-manual": {"pre": [
            {"id": "svc-healthy", "title": "Service healthy", "kind": "http", "url": f"{health_url}/failing"},
            {"id": "oncall-ready", "title": "On-call coordinated", "kind": "manual", "timeout_s": 600}]},
        "manual": {"pre": [
            {"id": "oncall-ready", "title": "On-call coordinated", "kind": "manual", "timeout_s": 600},
            {"id": "rollback-ready", "title": "Rollback plan reviewed", "kind": "manual", "timeout_s": 600}]},
        "automated-maintenance": {
            "pre": [{"id": "backup-fresh", "title": "Backup fresh", "kind": "backup_fresh",
                     "path_glob": str(backups / "*.dump"), "max_age_hours": 26}],
            "during": [{"id": "platform-healthy", "title": "Platform healthy", "kind": "http",
                        "url": f"{health_url}/healthy"}],
            "post": [{"id": "smoke", "title": "Smoke test", "kind": "command", "command": "echo smoke ok"}]},
        "manual-timeout": {"pre": [
            {"id": "nobody-answers", "title": "Nobody will confirm this", "kind": "manual", "timeout_s": 1}]},
        # A pre-check that writes a line and then takes long enough to be killed (tests/flows/test_crash_recovery).
        "slow-pre": {"pre": [slow_check("slow-pre")]},
        "slow-pre-idempotent": {"pre": [{**slow_check("slow-pre-idempotent"), "idempotent": True}]},
        "slow-post": {"post": [slow_check("slow-post")]},
    }


def slow_check(name: str) -> dict:
    return {"id": "slow-check", "title": "A slow pre-check", "kind": "command", "timeout_s": 120,
            "command": f'echo started >> "$CHANGEFLOW_HOME/checks-{name}.log"; sleep 15'}


# A dead run is acted on once its state is this old (the production default is 5 s): the same behaviour, sooner.
CRASH_SETTLE = {"CHANGEFLOW_CRASH_SETTLE_S": "1"}
# The stacks' workers ask Prefect for due runs every 2 s, not 0.5 s: each ask costs the server ~20 ms of CPU
# (benchmarks/idle_stack.py: a quiet server 6.3 % -> 2.8 % of a core), and five to eight stacks run at once on
# two cores. A hot gate yields its slot to a run due for 4 s (longer than a poll, as the settings require).
QUIET_WORKER = {"CHANGEFLOW_WORKER_POLL_S": "2", "CHANGEFLOW_HOT_GATE_YIELD_AFTER_S": "4"}
# A canary held by a lockdown looks for its lifting every second (production: 10 s).
LOCKDOWN_HOLD = {"CHANGEFLOW_LOCKDOWN_HOLD_POLL_S": "1"}
HOT_GATE = "30s"  # the shipped policies' hot gates (minutes), turned down for the flow stack
NORMAL_TYPE = {
    "description": "a routine change one team lead approves",
    "approvals": [{"role": "team_lead", "count": 1}],
    "approval_sla": "24h",
    "window": "maintenance",
    "notice": "3d",  # past compress_notice's 48 h: it holds here
    "early_start": ["team_lead"],
    "requires": ["rollback_plan", "test_evidence"],
    "escalation": [{"after": "4h", "role": "management"}],
}

# Changes the flow tests run end to end carry automation (a change without it waits for a person to confirm its
# manual work, tests/flows/test_bypass_flows.py): one template per type, none pre-approved.
SCRIPTED = {
    f"scripted-{change_type}": {
        "type": change_type, "title": f"A scripted {change_type} change", "rollback_plan": "run the undo script",
        "implementation_commands": ["echo applying to {service}"], "verify_commands": ["echo {service} verified"],
        "rollback_commands": ["echo undone on {service}"], "command_timeout_s": 30}
    for change_type in ("standard", "emergency", "major", "normal")}

# One step that writes a line, then takes long enough to be killed in the middle (tests/flows/test_crash_recovery.py).
SLOW_STEP = {"type": "standard", "title": "A slow step", "rollback_plan": "undo",
             "implementation_commands": ['echo started >> "$CHANGEFLOW_HOME/steps-{service}.log"; sleep 15'],
             "rollback_commands": ["echo undone"], "command_timeout_s": 60}

# A step that runs until the test lets it finish (a file appears): a live run mid-step, for as long as needed.
GATED_STEP = {**SLOW_STEP, "title": "A step the test lets finish", "command_timeout_s": 300,
              "implementation_commands": ['echo started >> "$CHANGEFLOW_HOME/steps-{service}.log"; '
                                          'while [ ! -e "$CHANGEFLOW_HOME/finish-{service}" ]; do sleep 0.2; done']}

TEST_TEMPLATES = {
    **SCRIPTED,
    "slow-step": SLOW_STEP,
    "gated-step": GATED_STEP,
    # A step that fails, then a rollback slow enough to be killed in the middle.
    "slow-rollback": {"type": "standard", "title": "A slow rollback", "rollback_plan": "undo",
                      "implementation_commands": ["exit 3"], "command_timeout_s": 60,
                      "rollback_commands": ['echo started >> "$CHANGEFLOW_HOME/rollbacks-{service}.log"; sleep 15']},
    "slow-idempotent-step": {**SLOW_STEP, "idempotent": True},
    "canary-release": {
        "type": "standard",
        "title": "Release a new version as a canary",
        "implementation_plan": "shift traffic in steps while the analysis watches",
        "rollback_plan": "send all traffic back to the stable version",
        "rollback_commands": ["echo rollback of {service} done"],
        "command_timeout_s": 30,
    },
    # A step that fails and a rollback that fails too: nothing may be recorded as undone.
    "failing-rollback": {"type": "standard", "title": "Deploy and undo that both fail", "rollback_plan": "undo",
                         "implementation_commands": ["exit 3"], "rollback_commands": ["echo undoing; exit 4"],
                         "command_timeout_s": 30},
    "failing-deploy": {
        "type": "standard",
        "title": "Deploy that fails",
        "implementation_plan": "run the deploy script",
        "rollback_plan": "run the rollback script",
        "implementation_commands": ["echo deploying {service}", "exit 3"],
        "rollback_commands": ["echo rolled back {service}"],
        "command_timeout_s": 30,
    }
}


@dataclass
class FlowStack:
    stack: Stack
    api_url: str
    home: Path
    services: Services
    settings: Settings
    health: object = None
    approval_url: str = ""  # where links in notifications point (tests start an endpoint there when they need it)

    def wait_for(self, key_or_run: str, predicate, timeout_s: float = 60, what: str = "condition"):
        return wait_for_change(self.services, key_or_run, predicate, timeout_s, what)

    def change_pages(self, run_id: str, key: str) -> list[str]:
        """The Markdown of every artifact the run keeps as its change's page (issue 30: one, kept current)."""
        with httpx.Client(base_url=self.api_url, timeout=30) as http:
            found = http.post("/artifacts/filter", json={"artifacts": {
                "flow_run_id": {"any_": [run_id]}, "key": {"any_": [f"change-{key.lower()}"]}}})
            found.raise_for_status()
        return [artifact["data"] for artifact in found.json()]

    def run_logs_once_they_hold(self, run_id: str, text: str, timeout_s: float = 30) -> str:
        """The run's logs once `text` is among them: they reach the server in batches, after its state."""
        deadline = time.monotonic() + timeout_s
        while text not in (logs := self.stored_by_prefect(run_id)["logs"]):
            assert time.monotonic() < deadline, f"{text!r} never reached the run's logs: {logs[-2000:]}"
            time.sleep(0.5)
        return logs

    def stored_by_prefect(self, run_id: str) -> dict[str, str]:
        """What Prefect keeps of a run, readable by anyone who reaches its API: every run input (by key), the
        run's parameters, its logs and its artifacts, each as text."""
        with httpx.Client(base_url=self.api_url, timeout=30) as http:
            inputs = http.post(f"/flow_runs/{run_id}/input/filter", json={"prefix": "", "limit": 10_000})
            inputs.raise_for_status()
            run = http.get(f"/flow_runs/{run_id}")
            logs: list[str] = []
            while page := http.post("/logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}},
                                                          "limit": 200, "offset": len(logs)}).json():
                logs += [row["message"] for row in page]
            artifacts = http.post("/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run_id]}}})
        stored = {f"input {row['key']}": row["value"] for row in inputs.json()}
        stored["parameters"] = json.dumps(run.json()["parameters"])
        stored["logs"] = "\n".join(logs)
        stored["artifacts"] = json.dumps(artifacts.json())
        return stored

    def assert_no_code_kept(self, run_id: str, key: str) -> None:
        """Issue 27: nothing Prefect keeps of the run holds a code of the change (anyone's, for any act) or an
        approval link's token, and every answer a gate read was deleted once applied."""
        people = self.services.org.directory.people
        secrets = {self.services.approvals.approval_code_for(key, person, act) for person in people for act in Act}
        secrets |= {self.services.links.link_for(key, person).split(".")[-1] for person in people}
        stored = self.stored_by_prefect(run_id)
        assert any(name.startswith("input ") for name in stored), "the scan reads the run's inputs"
        for where, text in stored.items():
            kept = sorted(secret for secret in secrets if secret in text)
            assert not kept, f"Prefect keeps {kept} in the run's {where}"
        assert not [name for name in stored if name.endswith("-response")], sorted(stored)


def final_run_state(run_id: str, timeout_s: float = 60):
    async def read():
        async with get_client() as client:
            return (await client.read_flow_run(UUID(run_id))).state

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = asyncio.run(read())
        if state.is_final():
            return state
        time.sleep(0.3)
    raise AssertionError(f"flow run {run_id} did not finish")


# A change's run ends in a state named for what became of the change, of the type whose colour says so (issue 30).
RUN_STATE_TYPE = {"Closed": "COMPLETED", "Review pending": "COMPLETED", "Rejected": "CANCELLED",
                  "Expired": "CANCELLED", "Cancelled": "CANCELLED", "Refused": "CANCELLED", "Failed": "FAILED",
                  "Rolled back": "FAILED"}


def ended_as(run_id: str, name: str, timeout_s: float = 60):
    """The run's final state, asserted to be `name` of its type (Closed is green, Rejected grey, Failed red)."""
    state = final_run_state(run_id, timeout_s)
    assert (state.name, state.type.value) == (name, RUN_STATE_TYPE[name]), (state.name, state.type, state.message)
    return state


def wait_for_change(services: Services, key_or_run: str, predicate, timeout_s: float, what: str):
    """The change (by key, or by the flow run that filed it) once `predicate` holds for it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        change = (services.changes.get(key_or_run) if key_or_run.startswith("CHG-")
                  else services.changes.find_by_idempotency_key(f"flow-run:{key_or_run}"))
        if change is not None and predicate(change):
            return change
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} on {key_or_run}")


def prepare_home(home: Path, health_url: str, hot_gate: str = HOT_GATE) -> dict[str, str]:
    config = home / "config"
    config.mkdir(parents=True)
    install_runbooks(config)
    directory = yaml.safe_load((DEFAULTS_DIR / "directory.yaml").read_text())
    # Alice reads her messages in a file of her own (the stand-in for her e-mail): codes and links land there.
    directory["people"]["alice"]["channels"] = [{"type": "file", "path": str(home / "inbox" / "alice.txt")}]
    # The platform the stack runs on answers at its health server (shipped: changeflow's own endpoint on :4280):
    # what the shipped checklists' service_health items probe (issue 31).
    directory["services"]["platform"]["health"] = f"{health_url}/healthy"
    (config / "directory.yaml").write_text(yaml.safe_dump(directory, sort_keys=False))
    backups = home / "backups"
    backups.mkdir()
    (backups / "nightly.dump").write_text("fresh")
    checklists = yaml.safe_load((DEFAULTS_DIR / "checklists.yaml").read_text())
    checklists.update(test_checklists(health_url, backups))
    (config / "checklists.yaml").write_text(yaml.safe_dump(checklists))
    templates = yaml.safe_load((DEFAULTS_DIR / "templates.yaml").read_text())
    templates.update(TEST_TEMPLATES)
    for name in test_checklists(health_url, backups):
        templates[f"with-{name}"] = {"type": "standard", "title": f"Checked by {name}", "checklist": name,
                                     "rollback_plan": "undo", "implementation_commands": ["echo step one",
                                                                                          "echo step two"],
                                     "rollback_commands": ["echo undone"], "command_timeout_s": 30}
    for template in templates.values():  # each carries reviewed risk answers and evidence, as a shipped one does
        template.setdefault("risk", ROUTINE_RISK)
        template.setdefault("test_evidence", "rehearsed in the flow stack")
    (config / "templates.yaml").write_text(yaml.safe_dump(templates))
    maintenance = yaml.safe_load((DEFAULTS_DIR / "maintenance.yaml").read_text())
    maintenance["windows"]["weekly"] = {"title": "Weekly maintenance", "service": "platform",
                                        "checklist": "automated-maintenance",
                                        "activities": ["rotate-logs", "vacuum-changeflow", "long-job", "after-long"],
                                        "risk": maintenance["windows"]["weekly"]["risk"]}
    maintenance["activities"]["long-job"] = {"title": "A job longer than the window", "command": "sleep 60",
                                             "timeout_s": 600}
    maintenance["activities"]["after-long"] = {"title": "Never fits", "command": "echo too late"}
    (config / "maintenance.yaml").write_text(yaml.safe_dump(maintenance))
    policies = yaml.safe_load((DEFAULTS_DIR / "policies.yaml").read_text())
    # A fourth change type, added by editing YAML only (tests/flows/test_flows.py runs it through the flow).
    policies["types"]["normal"] = NORMAL_TYPE
    # Gates wait hot for 30 s here, not the shipped minutes: a change a test leaves at its gate gives its worker
    # slot back soon (8 slots serve the whole worker's tests). Same behaviour, sooner.
    for policy in policies["types"].values():
        if policy.get("hot_gate"):
            policy["hot_gate"] = hot_gate
    policies["pre_approved_templates"] = ["restart-service", "failing-deploy", "failing-rollback", "canary-release",
                                          "slow-step", "gated-step",
                                          "slow-idempotent-step", "slow-rollback",
                                          *(f"with-{n}" for n in test_checklists(health_url, backups))]
    (config / "policies.yaml").write_text(yaml.safe_dump(policies, sort_keys=False))
    compress_notice(config)  # the stack's runs go in the release window open now, not two days on
    Settings(home=home).ensure_signing_key()  # the sweep signs audit checkpoints, as under `changeflow up`
    # JSON logs (issue 31) on every flow test's runs: the worker's console is read back by test_flows.
    return {"CHANGEFLOW_HOME": str(home), "CHANGEFLOW_SECRET": SECRET.decode(), **CRASH_SETTLE, **QUIET_WORKER,
            **LOCKDOWN_HOLD, "CHANGEFLOW_LOG_FORMAT": "json"}


def switch_schedules_off(api_url: str) -> None:
    """Every deployment's schedules inactive: a sweep a minute would act on changes while a test asserts what is
    left for it, and a maintenance window falling due mid-suite (Friday and Sunday crons) would run on its own."""
    with httpx.Client(base_url=api_url, timeout=30) as api:
        deployments = api.post("/deployments/filter", json={"limit": 200})
        deployments.raise_for_status()
        for deployment in deployments.json():
            for schedule in deployment["schedules"]:
                if schedule["active"]:
                    api.patch(f"/deployments/{deployment['id']}/schedules/{schedule['id']}",
                              json={"active": False}).raise_for_status()
            # Runs scheduled before the switch (Prefect schedules ahead as soon as a deployment exists).
            scheduled = api.post("/flow_runs/filter", json={
                "deployments": {"id": {"any_": [deployment["id"]]}},
                "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}}})
            scheduled.raise_for_status()
            for run in scheduled.json():
                api.delete(f"/flow_runs/{run['id']}").raise_for_status()


def start_flow_stack(root: Path, port: int) -> FlowStack:
    api_url = f"http://127.0.0.1:{port}/api"
    home = root / "changeflow"
    health = start_health_server()
    changeflow_env = prepare_home(home, health.url)
    approval_url = f"http://127.0.0.1:{free_port()}"
    stack = Stack(api_url, prefect_env(api_url, root / "prefect", {
        **changeflow_env, **FAST_POLLING, "CHANGEFLOW_PREFECT_UI_URL": f"http://127.0.0.1:{port}",
        "CHANGEFLOW_APPROVAL_URL": approval_url,
    }))
    try:
        start_seeded_server(stack, port, root / "logs")
        create_pool_and_deploy(stack, narrow_form=False)
        switch_schedules_off(api_url)
        start_worker(stack, root / "logs")
        wait_for_deployments(api_url, ["change-request/submit", "approval-escalation/every-minute"])
    except Exception:
        stack.stop()
        health.stop()
        raise
    settings = Settings(home=home, secret=SECRET.decode())
    services = Services.build(Database.from_settings(settings), load_org(settings.config_dir), SECRET)
    # Changes filed without a date start in the next maintenance window: the session runs inside an ad hoc one.
    now = utcnow()
    services.scheduling.add_window(starts_at=now - timedelta(hours=1), ends_at=now + timedelta(days=1),
                                   title="Release window for the test session", actor="alice")
    return FlowStack(stack, api_url, home, services, settings, health, approval_url)


class SharedFlowStack:
    """One stack per test session, however many folders' conftests ask for it (the Prefect client of this
    process can talk to one server only: tests.prefect_env fixed its address)."""

    def __init__(self) -> None:
        self.stack: FlowStack | None = None
        self.users = 0

    def acquire(self, tmp_path_factory) -> FlowStack:
        from tests.prefect_env import FLOW_STACK_PORT

        if self.stack is None:
            self.stack = start_flow_stack(tmp_path_factory.mktemp("flows"), FLOW_STACK_PORT)
            self._saved = {k: os.environ.get(k) for k in ("CHANGEFLOW_HOME", "CHANGEFLOW_SECRET", *CRASH_SETTLE)}
            os.environ["CHANGEFLOW_HOME"] = str(self.stack.home)
            os.environ["CHANGEFLOW_SECRET"] = SECRET.decode()
            os.environ.update(CRASH_SETTLE)  # the tests' own reconcile_crashed_runs() calls
        self.users += 1
        return self.stack

    def release(self) -> None:
        self.users -= 1
        if self.users or self.stack is None:
            return
        self.stack.stack.stop()
        self.stack.health.stop()
        self.stack.services.db.dispose()
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self.stack = None


SHARED = SharedFlowStack()


@pytest.fixture(scope="session")
def flow_stack(tmp_path_factory):
    """Prefect server + worker running our deployments, shared by every test that needs one (~15 s to start).
    The conftests of flows/ and e2e/ import this fixture after tests.prefect_env."""
    stack = SHARED.acquire(tmp_path_factory)
    try:
        yield stack
    finally:
        SHARED.release()

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
from prefect import get_client

from flows import paused_key
from cli.dev import (FAST_POLLING, Stack, create_pool_and_deploy, free_port, prefect_env,
                     start_worker, wait_for_deployments)
from models import Act, Database, Services, Settings, load_org, utcnow
from tests.helpers import SECRET
from tests.prefect_db import start_seeded_server
from tests.flow_stack_config import CRASH_SETTLE, prepare_home
from tests.receivers import start_health_server

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


def wait_paused(run_id: str, prefix: str, timeout_s: float = 90) -> str:
    """The pause key once the run is suspended at a key starting with `prefix` and its Resume form is stored: a hot
    gate stores the form just after it pauses, and a Resume in between is refused "Run input schema not found"."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        key = asyncio.run(paused_key(run_id))
        if key and key.startswith(prefix) and asyncio.run(_form_stored(run_id)):
            return key
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} never paused at {prefix}")


async def _form_stored(run_id: str) -> bool:
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    async with get_client() as client:
        run = await client.read_flow_run(UUID(run_id))
        keyset = run.state.state_details.run_input_keyset if run.state is not None else None
        if not keyset:
            return True  # a pause without a form
        try:
            await client.read_flow_run_input(UUID(run_id), keyset["schema"])
        except ObjectNotFound:
            return False
        except PrefectHTTPStatusError as exc:  # this read raises the HTTP error itself: a 404 is "not yet"
            if exc.response.status_code == 404:
                return False
            raise
    return True


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

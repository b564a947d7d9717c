"""The incident button against real flows (issue 32): a canary baking at 50 % when `changeflow lockdown on` is
pressed goes back to stable and its change is rolled back (policy `canaries: stable`) or holds at its weight until
the lockdown is lifted (`hold`); the run form refuses a standard change and a maintenance window is not announced
while it lasts; `changeflow abort` of a baking canary sends its traffic to stable itself, before any sweep. Real
nginx routes the lab's traffic."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from prefect.deployments import run_deployment
from sqlalchemy import select

from models import Act, AuditEvent
from tests.canary_weights import WeightHistory
from tests.flows.test_abort_flows import started_again_to_undo
from tests.flows.test_canary_flows import canary_setup, change_of, plan, ship  # noqa: F401
from tests.flows.test_crash_recovery import run_state_name
from tests.flows.test_flows import act, awaiting, ended_as, submit, wait_paused
from tests.helpers import emergency_request, standard_request, wait_until
from tests.integration.test_lockdown import lockdown_trail

pytestmark = [pytest.mark.flows, pytest.mark.slow]


def lockdown(flow_stack, on: bool, reason: str) -> subprocess.CompletedProcess:
    code = flow_stack.services.lockdown.code_for("erin")  # what her inbox holds (tests/cli/test_lockdown_cli.py)
    return subprocess.run([str(Path(sys.executable).parent / "changeflow"), "lockdown", "on" if on else "off",
                           "--as", "erin", "--code", code, "--reason", reason], env=flow_stack.stack.env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def lifted_after(flow_stack):
    """The stack is this xdist worker's for every flows test: a lockdown a failed test left on would hold them all."""
    yield
    if flow_stack.services.lockdown.status().on:
        lockdown(flow_stack, False, "test over")


@pytest.fixture
def hold_policy(flow_stack):
    """policies.yaml `lockdown.canaries: hold` for the runs of one test (each run reads the config anew)."""
    path = flow_stack.home / "config" / "policies.yaml"
    original = path.read_text()
    policies = yaml.safe_load(original)
    policies["lockdown"] = {**policies.get("lockdown", {}), "canaries": "hold"}
    path.write_text(yaml.safe_dump(policies, sort_keys=False))
    yield
    path.write_text(original)


def baking_at_50(flow_stack, title: str, bake_s: float, *, first_bake_s: float | None = None):
    canary = plan("http_probe", bake_s=bake_s)
    if first_bake_s is not None:  # the 10 % step shorter than the others
        canary["steps"][0]["bake_s"] = first_bake_s
    run_id = ship(flow_stack, canary, title)
    change = change_of(flow_stack, run_id)
    wait_until(lambda: 1 in flow_stack.services.canary.decisions(change.key), 90, "step 1 decided")
    wait_until(lambda: flow_stack.services.canary.measurements(change.key, step=2), 30, "the 50 % bake to begin")
    return run_id, change


def test_a_lockdown_sends_a_baking_canary_back_to_stable_and_refuses_a_standard_filing(flow_stack, lab, canary_setup,
                                                                                        lifted_after):
    # Filed before the lockdown, approved during it: it waits at its window gate until the lockdown is lifted.
    waiting_run = submit(standard_request(title="approved during the lockdown", template="scripted-standard"))
    waiting = awaiting(flow_stack, waiting_run)
    run_id, change = baking_at_50(flow_stack, "canary stopped by a lockdown", bake_s=30)
    with WeightHistory(lab.include_file) as weights:
        pressed_at = time.monotonic()
        on = lockdown(flow_stack, True, "INC-7 payments down")
        assert on.returncode == 0 and change.key in on.stdout, on
        # Sent by the lockdown itself: no sweep has run yet (the stack's schedules are off; the test runs it below).
        wait_until(lambda: weights.first_at(0, pressed_at) is not None, 5, "weight 0 from `lockdown on` itself")
        wait_until(lambda: run_state_name(run_id) == "CANCELLED", 120, "the worker to stop the run")
        started_again_to_undo(run_id)
        ended_as(run_id, "Rolled back", timeout_s=120)
        assert weights.weights_after(pressed_at) == [0], "back to stable, and never to the canary again"
    done = flow_stack.services.changes.view(change.key)
    rolled = next(e for e in done.events if e.to_state == "rolled_back")
    assert "lockdown declared by erin: INC-7 payments down" in rolled.data["reason"]
    assert 3 not in flow_stack.services.canary.decisions(change.key)

    refused = run_deployment("change-request/submit", timeout=90, parameters={"request": standard_request(
        title="filed during the lockdown")})
    assert (refused.state.type.value, refused.state.name) == ("CANCELLED", "Refused"), refused.state
    assert "standard changes may not be filed until it is lifted" in refused.state.message
    # A maintenance window falling due is not announced: nothing is filed, and so nothing runs in it.
    start = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=30)
    window = {"kind": "weekly", "window_start": start.isoformat(), "window_minutes": 1}
    announced = run_deployment("maintenance-announcement/weekly", parameters=window, timeout=120)
    assert announced.state.is_completed(), announced.state
    assert flow_stack.services.changes.find_by_idempotency_key(f"maintenance:weekly:{start.isoformat()}") is None
    for person in ("alice", "bob"):
        act(flow_stack, waiting, person)
    wait_paused(waiting_run, "window-")  # approved, and held at its window although the window is open
    assert flow_stack.services.changes.get(waiting.key).state == "scheduled"
    off = lockdown(flow_stack, False, "INC-7 resolved")
    assert off.returncode == 0, off
    ended_as(waiting_run, "Closed", timeout_s=120)  # nudged by the lifting, not left to the next sweep


def test_an_abort_mid_bake_sends_the_canary_to_stable_itself_and_rolls_the_change_back(flow_stack, lab,
                                                                                        canary_setup):
    # 120 s: two CLI commands (10-15 s each on a loaded machine) must land inside the 50 % bake.
    run_id, change = baking_at_50(flow_stack, "canary aborted mid-bake", bake_s=120, first_bake_s=5)

    def abort_as_grace(act: Act) -> subprocess.CompletedProcess:
        code = flow_stack.services.approvals.approval_code_for(change.key, "grace", act)
        return subprocess.run([str(Path(sys.executable).parent / "changeflow"), "abort", change.key, "--as", "grace",
                               "--code", code, "--reason", "p99 climbing"], env=flow_stack.stack.env,
                              capture_output=True, text=True, timeout=300)

    with WeightHistory(lab.include_file) as weights:
        tried_at = time.monotonic()
        refused = abort_as_grace(Act.approve)  # her code for another act: refused, and the traffic stays
        assert refused.returncode == 1 and "wrong approval code for grace" in refused.stderr, refused
        assert weights.weights_after(tried_at) == [] and run_state_name(run_id) == "RUNNING", "a refusal stops nothing"
        pressed_at = time.monotonic()
        aborted = abort_as_grace(Act.withdraw)
        assert aborted.returncode == 0 and "abort recorded" in aborted.stdout, aborted
        # The abort's own doing, within its command (benchmarks/abort_reaction.py measures how soon): the stack
        # runs no sweep by itself, and the test's sweep below only starts the stopped run again.
        wait_until(lambda: weights.first_at(0, pressed_at) is not None, 5, "weight 0 from `changeflow abort`")
        wait_until(lambda: run_state_name(run_id) == "CANCELLED", 120, "the worker to stop the run")
        started_again_to_undo(run_id)
        ended_as(run_id, "Rolled back", timeout_s=120)
        assert weights.weights_after(pressed_at) == [0], "back to stable, and never to the canary again"
    rolled = next(e for e in flow_stack.services.changes.view(change.key).events if e.to_state == "rolled_back")
    assert rolled.data["reason"] == "aborted by grace: p99 climbing"
    assert 3 not in flow_stack.services.canary.decisions(change.key), "no step after the abort"


def test_a_canary_held_by_a_lockdown_takes_its_next_step_only_once_it_is_lifted(flow_stack, lab, canary_setup,
                                                                                 hold_policy, lifted_after):
    # The lockdown must be on before the 50 % bake ends, or the canary is past its last step boundary: a 4 s bake
    # was shorter than `changeflow lockdown on` takes to start on a loaded machine (clean-clone run 27).
    run_id, change = baking_at_50(flow_stack, "canary held by a lockdown", bake_s=15)
    on = lockdown(flow_stack, True, "INC-8 checkout slow")
    assert on.returncode == 0 and "canaries sent back" not in on.stdout, on
    events = lambda: flow_stack.services.changes.view(change.key).events  # noqa: E731
    wait_until(lambda: any(e.action == "canary_held" for e in events()), 60, "the canary to be held")
    (held,) = [e for e in events() if e.action == "canary_held"]
    step = held.data["step"]
    assert step in (2, 3) and run_state_name(run_id) == "RUNNING", "held in its process, at its weight"
    assert step not in flow_stack.services.canary.decisions(change.key)
    assert lockdown(flow_stack, False, "INC-8 resolved").returncode == 0
    ended_as(run_id, "Closed", timeout_s=120)
    with flow_stack.services.db.read() as session:
        lifted = session.execute(select(AuditEvent.seq).where(AuditEvent.action == "lockdown_lifted")
                                 .order_by(AuditEvent.seq.desc()).limit(1)).scalar_one()
    decided = [e for e in events() if e.action == "canary_decision" and e.data.get("step", 0) >= step]
    assert decided and all(e.seq > lifted for e in decided), "no step was taken while the lockdown held it"


def test_the_lockdown_deployment_waits_for_a_declarer_with_their_code_and_keeps_no_code(flow_stack, lifted_after):
    """From the Prefect UI: the run form says on or off, the presser's code goes in the Resume form, and an empty
    Resume, a role without authority or a code for another act is refused and the run waits again."""
    from flows import resume_with_input
    from tests.flow_stack import final_run_state
    from tests.flows.test_flows import wait_paused

    services = flow_stack.services
    run_id = str(run_deployment("lockdown/press", parameters={"action": "on"}, timeout=0).id)
    bob_code = services.lockdown.code_for("bob")
    erin_code = services.lockdown.code_for("erin")
    attempts = [({}, "reason: say why"),
                ({"person": "bob", "lockdown_code": bob_code, "reason": "x"}, "bob holds none of the roles"),
                ({"person": "erin", "lockdown_code": services.approvals.approval_code_for(
                    services.changes.submit(emergency_request()).key, "erin"), "reason": "x"},
                 "wrong lockdown code for erin")]
    for attempt, (answer, _) in enumerate(attempts, start=1):
        wait_paused(run_id, f"lockdown-on-{attempt}")
        asyncio.run(resume_with_input(run_id, answer))
    wait_paused(run_id, f"lockdown-on-{len(attempts) + 1}")  # each refused, and the run waits again
    assert not services.lockdown.status().on
    wait_until(lambda: all(refusal in flow_stack.stored_by_prefect(run_id)["logs"] for _, refusal in attempts), 30,
               "each refusal in the run's log (Prefect's log writes lag)")
    assert lockdown_trail(services)[-2:] == [("bob", "lockdown_refused"), ("erin", "lockdown_refused")]
    asyncio.run(resume_with_input(run_id, {"person": "erin", "lockdown_code": erin_code, "reason": "INC-9 dns"}))
    state = final_run_state(run_id, timeout_s=120)
    assert (state.name, state.type.value) == ("Lockdown on", "COMPLETED"), state
    assert services.lockdown.status().by == "erin"
    for where, text in flow_stack.stored_by_prefect(run_id).items():
        assert bob_code not in text and erin_code not in text, f"Prefect keeps a code in the run's {where}"
    again = run_deployment("lockdown/press", parameters={"action": "on"}, timeout=120)
    assert again.state.name == "Refused" and "declared by erin: INC-9 dns" in again.state.message, again.state

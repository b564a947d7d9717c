"""Issue 16: the stack's own processes killed under a running change, in the layout `changeflow up` runs (Prefect
server, work pool, process worker, the sweep on its schedule): the worker alone (its flow-run processes die at
their next line of output), the worker with its runs (nothing left to report: the zombie automation finds the
run), and the Prefect server (restarted on its port and database), at a gate, a pre-check, a step, a post-check
and a rollback. Nobody presses Retry: each change ends in a named state (or is listed by `changeflow pending` with
its question), no side effect finished runs twice, and the audit trail verifies. The canary bake and the sweep
have modules of their own (test_kill_stack_canary.py, test_kill_stack_sweep.py)."""

from __future__ import annotations

import time

import pytest

from tests.e2e.kill_stack import running_kill_stack, slow_step
from tests.helpers import wait_until

pytestmark = pytest.mark.slow

SERVICES = ("kill-worker", "kill-server-step", "kill-server-gate", "kill-worker-pre", "kill-server-post",
            "kill-worker-gate", "kill-worker-hot-gate", "kill-server-pre", "kill-worker-post", "kill-worker-tree",
            "kill-worker-rollback", "kill-server-rollback")


@pytest.fixture(scope="module")
def kill_stack(tmp_path_factory):
    with running_kill_stack(tmp_path_factory.mktemp("kill-stack"), SERVICES) as stack:
        yield stack


def test_the_worker_killed_alone_mid_step_is_found_and_its_step_put_to_a_person(kill_stack):
    """Killing the worker takes its flow-run process down too (at its next line of output the pipe is broken:
    "aborted by Python system exit call"), so Prefect marks the run Crashed. The sweep on its schedule records
    the crash and restarts the run; the interrupted step is not run again blindly: `changeflow pending` names
    it, its implementer answers."""
    run_id = kill_stack.submit(slow_step("kill-worker"))
    change = kill_stack.wait_for(run_id, lambda c: c.state == "implementing", 120, "implementation")
    kill_stack.wait_for(change.key, lambda c: kill_stack.lines("steps-kill-worker"), 60, "the step to start")
    kill_stack.kill_the_worker_alone()
    row = kill_stack.wait_listed_as_pending(change.key, "step 1 was interrupted by a crash")
    assert "grace" in row["waiting_on"]
    kill_stack.answer_as("grace", "work", change.key, "implemented", "--step", "1", "--note",
                         "the step had gone through before the worker died")
    done = kill_stack.wait_for(change.key, lambda c: c.state == "closed", 180, "the change to close")
    assert done.outcome == "succeeded"
    assert kill_stack.lines("steps-kill-worker") == ["started"], "the step ran again"
    assert kill_stack.services.recovery.crashes(change.key) == 1
    kill_stack.assert_the_record_holds()


def test_the_worker_killed_with_its_runs_mid_step_is_found_by_its_missing_heartbeats(kill_stack):
    """The worker and its flow-run processes killed as one (a machine's death): nothing is left to tell Prefect,
    so the run stays Running until the zombie automation (automations.yaml) sees no heartbeat of changeflow's own
    (every CHANGEFLOW_RUN_HEARTBEAT_S, 5 s) for its window (CHANGEFLOW_ZOMBIE_AFTER_S, 20 s) and marks it
    Crashed; the sweep then records the crash and puts the interrupted step to a person. The run was suspended
    at its filing gate before (a new process took it on): detection holds for a run that waited at a gate, whose
    `Suspended` is an event the automation expects."""
    kill_stack.zombie_window(kill_stack.settings.zombie_after_s)  # the default, whatever a server kill set before
    run_id = kill_stack.submit(slow_step("kill-worker-tree"), confirm_once_suspended=True)
    change = kill_stack.wait_for(run_id, lambda c: c.state == "implementing", 120, "implementation")
    kill_stack.wait_for(change.key, lambda c: kill_stack.lines("steps-kill-worker-tree"), 60, "the step to start")
    killed_at = time.monotonic()
    assert kill_stack.kill_the_worker_and_its_runs() >= 3  # the worker, the flow run, the step's shell
    assert kill_stack.run_state(run_id) == "RUNNING", "nothing was left to report the death"
    wait_until(lambda: kill_stack.run_state(run_id) != "RUNNING", 240,
               "the zombie automation to mark the silent run Crashed")
    print(f"the silent run was marked {kill_stack.run_state(run_id)} {time.monotonic() - killed_at:.0f} s after "
          f"the kill (heartbeats every {kill_stack.settings.run_heartbeat_s:g} s, Crashed after "
          f"{kill_stack.settings.zombie_after_s} s without one)")
    row = kill_stack.wait_listed_as_pending(change.key, "step 1 was interrupted by a crash", timeout_s=180)
    assert "grace" in row["waiting_on"]
    kill_stack.answer_as("grace", "work", change.key, "implemented", "--step", "1", "--note",
                         "the step had gone through before the host died")
    done = kill_stack.wait_for(change.key, lambda c: c.state == "closed", 180, "the change to close")
    assert done.outcome == "succeeded"
    assert kill_stack.lines("steps-kill-worker-tree") == ["started"], "the step ran again"
    assert kill_stack.services.recovery.crashes(change.key) == 1
    kill_stack.assert_the_record_holds()


@pytest.mark.parametrize("phase", ["pre", "post"])
def test_the_worker_killed_alone_mid_check_is_found_and_the_check_put_to_a_person(kill_stack, phase):
    """Before anything is touched (pre) or after the change took effect (post): the interrupted check is a
    question to the change's people (`changeflow pending` names it), answered on the command line; nothing that
    had finished runs again."""
    log = f"checks-slow-{phase}"
    kill_stack.forget(log)  # the server's post-check test writes the same log
    run_id = kill_stack.submit(slow_step(f"kill-worker-{phase}", template=f"with-slow-{phase}"))
    kill_stack.wait_for(run_id, lambda c: kill_stack.lines(log), 180, f"the {phase}-check to start")
    change = kill_stack.services.changes.find_by_flow_run(run_id)
    kill_stack.kill_the_worker_alone()
    row = kill_stack.wait_listed_as_pending(change.key, f"{phase}-check slow-check was interrupted by a crash")
    assert "grace" in row["waiting_on"]
    kill_stack.answer_as("grace", "confirm", change.key, "slow-check", "--note", "it had passed before the crash")
    done = kill_stack.wait_for(change.key, lambda c: c.state == "closed", 180, "the change to close")
    assert done.outcome == "succeeded"
    assert kill_stack.lines(log) == ["started"], "the interrupted check ran again"
    actions = [e.action for e in kill_stack.services.changes.view(change.key).events]
    assert actions.count("implementation_step") == 2, "a step ran twice"
    assert actions.count("run_crashed") == 1
    assert kill_stack.services.recovery.needs_a_person(change.key) == []
    kill_stack.assert_the_record_holds()


@pytest.mark.parametrize("killed", ["worker", "server"])
def test_the_worker_or_the_server_killed_mid_rollback_costs_nothing(kill_stack, killed):
    """The step fails and its rollback command starts. The run outlives both: the worker killed alone (the run
    dies at its next line of output, after the rollback is recorded) and a server down for a few seconds. The
    rollback finishes once, by itself. (Killed with the run, it is put to a person: tests/flows/
    test_crash_recovery.py::test_a_rollback_killed_mid_way_is_put_to_a_person_not_run_again.)"""
    service = f"kill-{killed}-rollback"
    run_id = kill_stack.submit(slow_step(service, template="slow-rollback"))
    kill_stack.wait_for(run_id, lambda c: kill_stack.lines(f"rollbacks-{service}"), 120, "the rollback to start")
    change = kill_stack.services.changes.find_by_flow_run(run_id)
    if killed == "worker":
        kill_stack.kill_the_worker_alone()
    else:
        kill_stack.kill_and_restart_the_server()
    done = kill_stack.wait_for(change.key, lambda c: c.state == "review_pending", 240, "the rollback's review")
    assert done.outcome == "rolled_back"
    assert kill_stack.lines(f"rollbacks-{service}") == ["started"], "the rollback ran again"
    actions = [e.action for e in kill_stack.services.changes.view(change.key).events]
    assert actions.count("rollback_started") == 1 and "rollback_retried" not in actions
    kill_stack.assert_the_record_holds()


def test_the_prefect_server_killed_mid_step_loses_nothing_and_repeats_nothing(kill_stack):
    run_id = kill_stack.submit(slow_step("kill-server-step"))
    change = kill_stack.wait_for(run_id, lambda c: c.state == "implementing", 120, "implementation")
    kill_stack.wait_for(change.key, lambda c: kill_stack.lines("steps-kill-server-step"), 60, "the step to start")
    kill_stack.kill_and_restart_the_server()
    done = kill_stack.wait_for(change.key, lambda c: c.state == "closed", 240, "the change to close")
    assert done.outcome == "succeeded"
    assert kill_stack.lines("steps-kill-server-step") == ["started"], "the step ran again"
    kill_stack.assert_the_record_holds()


@pytest.mark.parametrize("killed", ["server", "worker"])
def test_the_server_or_the_worker_killed_while_a_change_waits_at_its_gate(kill_stack, killed):
    """A run suspended at its gate holds no process: a server killed and restarted, or the worker killed alone and
    replaced, loses nothing, and the approvals given afterwards move the run on."""
    service = f"kill-{killed}-gate"
    # Its own plan takes it through the normal gate (a pre-approved template covers only its recipe).
    run_id = kill_stack.submit(slow_step(service, implementation_plan="the recipe, then a look"))
    change = kill_stack.wait_for(run_id, lambda c: c.state == "awaiting_approval", 120, "the approval request")
    # The gate waits hot first (its process kept, HOT_GATE), then suspends: killed before that, the run would die
    # with its worker (the next test).
    wait_until(lambda: kill_stack.run_state_name(run_id) == "Suspended", 90, "the run to suspend at its gate")
    if killed == "server":
        kill_stack.kill_and_restart_the_server()
    else:
        kill_stack.kill_the_worker_alone()
    kill_stack.approve(change.key, "alice", "bob")
    done = kill_stack.wait_for(change.key, lambda c: c.state == "closed", 240, "the change to close")
    assert done.outcome == "succeeded"
    assert kill_stack.lines(f"steps-{service}") == ["started"]
    assert kill_stack.services.recovery.crashes(change.key) == 0, "nothing had crashed"
    kill_stack.assert_the_record_holds()


def test_the_worker_killed_while_a_gate_waits_hot_takes_the_run_with_it_and_the_sweep_brings_it_back(kill_stack):
    """The trade-off of a hot gate: its run is a live process of the worker. Killed with the worker, it is marked
    Crashed, the crash recorded once and the run restarted; it waits at its gate again, and the approvals move it.
    Nothing was decided twice and the step runs once."""
    run_id = kill_stack.submit(slow_step("kill-worker-hot-gate", implementation_plan="the recipe, then a look"))
    change = kill_stack.wait_for(run_id, lambda c: c.state == "awaiting_approval", 120, "the approval request")
    wait_until(lambda: kill_stack.run_state_name(run_id) == "Paused", 60, "the run to wait hot at its gate")
    kill_stack.kill_the_worker_alone()
    wait_until(lambda: kill_stack.services.recovery.crashes(change.key) == 1, 240, "the crash to be recorded")
    kill_stack.approve(change.key, "alice", "bob")
    done = kill_stack.wait_for(change.key, lambda c: c.state == "closed", 240, "the change to close")
    assert done.outcome == "succeeded"
    assert kill_stack.lines("steps-kill-worker-hot-gate") == ["started"]
    assert kill_stack.services.recovery.crashes(change.key) == 1
    kill_stack.assert_the_record_holds()


def test_the_prefect_server_killed_mid_post_check_loses_nothing_and_repeats_nothing(kill_stack):
    """The check's command runs in the flow-run process, which outlives a server that is down for a few
    seconds: the check finishes once, its result is stored, and the change closes."""
    kill_stack.forget("checks-slow-post")
    run_id = kill_stack.submit(slow_step("kill-server-post", template="with-slow-post"))
    kill_stack.wait_for(run_id, lambda c: kill_stack.lines("checks-slow-post"), 180, "the post-check to start")
    kill_stack.kill_and_restart_the_server()
    change = kill_stack.services.changes.find_by_flow_run(run_id)
    done = kill_stack.wait_for(change.key, lambda c: c.state == "closed", 240, "the change to close")
    assert done.outcome == "succeeded"
    assert kill_stack.lines("checks-slow-post") == ["started"], "the check ran again"
    (result,) = kill_stack.services.checklists.check_results(change.key, phase="post")
    assert (result.item_id, result.passed) == ("slow-check", True)
    kill_stack.assert_the_record_holds()


def test_the_prefect_server_killed_mid_pre_check_loses_nothing_and_repeats_nothing(kill_stack):
    # Its check declares itself idempotent: had the run died, it would run again; it must not, as nothing died.
    run_id = kill_stack.submit(slow_step("kill-server-pre", template="with-slow-pre-idempotent"))
    kill_stack.wait_for(run_id, lambda c: kill_stack.lines("checks-slow-pre-idempotent"), 120,
                        "the pre-check to start")
    kill_stack.kill_and_restart_the_server()
    change = kill_stack.services.changes.find_by_flow_run(run_id)
    done = kill_stack.wait_for(change.key, lambda c: c.state == "closed", 240, "the change to close")
    assert done.outcome == "succeeded"
    assert kill_stack.lines("checks-slow-pre-idempotent") == ["started"], "the check ran again"
    assert "check_retried" not in [e.action for e in kill_stack.services.changes.view(change.key).events]
    kill_stack.assert_the_record_holds()

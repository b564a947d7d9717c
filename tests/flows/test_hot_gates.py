"""Hot gates (issue 27): a gate a person answers waits first in its run's process, for its type's `hot_gate`
(30 s on the flow stack), so an answer moves the run with no new flow-run process; past it the run suspends and
frees its slot, as before. The controls are the same hot or cold: an empty Resume records nothing at the approval
gate, another person's code is refused, and no answer stays in Prefect's storage."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from uuid import UUID

import pytest
from prefect import get_client

from flows import resume_with_input
from tests.flows.test_flows import act, awaiting, decisions, ended_as, submit, wait_paused
from tests.helpers import standard_request, wait_until

pytestmark = pytest.mark.flows


def state_history(run_id: str) -> list[tuple[str, str]]:
    """(type, name) of every state the run went through, oldest first."""
    async def read():
        async with get_client() as client:
            return await client.read_flow_run_states(UUID(run_id))

    return [(state.type.value, state.name or "") for state in asyncio.run(read())]


def current_state_name(run_id: str) -> str:
    async def read():
        async with get_client() as client:
            return (await client.read_flow_run(UUID(run_id))).state

    state = asyncio.run(read())
    return state.name if state is not None else ""


def processes_started(run_id: str) -> int:
    # Each start of the run's process comes from Scheduled (its first, or "Resuming" after a suspend), then Pending
    # while the runner or worker starts it; a resume in the process it waits in goes from Paused back to Running.
    return sum(1 for kind, _ in state_history(run_id) if kind == "SCHEDULED")


def test_a_gate_answered_while_hot_moves_the_run_in_its_own_process(flow_stack):
    run_id = submit(standard_request(title="answered while hot", template="scripted-standard"))
    change = awaiting(flow_stack, run_id)
    wait_paused(run_id, "approval-")
    assert current_state_name(run_id) == "Paused", "a standard change's gate waits hot first"
    # The CLI records, then resumes with nothing in hand; the form carries bob's own code.
    cli = subprocess.run([str(Path(sys.executable).parent / "changeflow"), "approve", change.key, "--as", "frank",
                          "--code", flow_stack.services.approvals.approval_code_for(change.key, "frank")],
                         env=flow_stack.stack.env, capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    act(flow_stack, change, "bob")
    ended_as(run_id, "Closed", timeout_s=120)
    assert flow_stack.services.changes.get(change.key).state == "closed"
    assert processes_started(run_id) == 1, state_history(run_id)
    assert "Suspended" not in [name for _, name in state_history(run_id)]
    flow_stack.assert_no_code_kept(run_id, change.key)


def test_a_gate_nobody_answers_while_hot_suspends_and_its_controls_hold_hot_and_cold(flow_stack):
    run_id = submit(standard_request(title="unanswered while hot", template="scripted-standard"))
    change = awaiting(flow_stack, run_id)
    wait_paused(run_id, "approval-")
    assert current_state_name(run_id) == "Paused"
    # While hot (or, on a slow machine, already cold: the controls are the same): an empty Resume records nothing;
    # frank's name with bob's code is refused on the record.
    asyncio.run(resume_with_input(run_id, {}))
    key = wait_paused(run_id, "approval-r1-2")
    assert decisions(flow_stack, change.key) == []
    act(flow_stack, change, "frank", code=flow_stack.services.approvals.approval_code_for(change.key, "bob"))
    assert [d["action"] for d in decisions(flow_stack, change.key)] == ["approval_refused"], key
    # Nobody answers: past its hot period the run suspends and holds no process.
    wait_until(lambda: current_state_name(run_id) == "Suspended", 120, "the gate to suspend after its hot period")
    # Cold, the same controls: a refused answer, then the two real approvals (each resume a new process).
    act(flow_stack, change, "grace")  # the requester
    assert [d["action"] for d in decisions(flow_stack, change.key)].count("approval_refused") == 2
    for person in ("frank", "bob"):
        act(flow_stack, change, person)
    ended_as(run_id, "Closed", timeout_s=120)
    assert flow_stack.services.changes.get(change.key).state == "closed"
    assert processes_started(run_id) >= 2, state_history(run_id)
    flow_stack.assert_no_code_kept(run_id, change.key)

"""The sweep stays out of the Runs list (issue 30): a sweep run that found nothing due ends named `Nothing due` and
the next sweep deletes it (once it is older than CHANGEFLOW_SWEEP_IDLE_RUNS_KEPT_S, 0 by default); a sweep that
did something is kept, whatever its age."""

from __future__ import annotations

import asyncio

import pytest
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound

from flows.sweep import NOTHING_DUE, found_nothing_due
from notifications import Notifier
from tests.helpers import standard_request

SWEEP = "approval-escalation/every-minute"
KEEP_AN_HOUR = {"env": {"CHANGEFLOW_SWEEP_IDLE_RUNS_KEPT_S": "3600"}}


def read_run(run_id):
    from prefect import get_client

    async def read():
        async with get_client() as client:
            return await client.read_flow_run(run_id)
    return asyncio.run(read())


def test_only_a_summary_of_zeros_is_nothing_due():
    quiet = {"reminded": 0, "expired": 0, "restarted": 0, "checkpoint": None, "sent": 0, "failed": 0}
    assert found_nothing_due(quiet)
    for busy in ({"sent": 1}, {"checkpoint": 12}, {"failed": 1}, {"restarted": 2}):
        assert not found_nothing_due({**quiet, **busy})


def an_idle_sweep(**job_variables):
    """Sweeps until one finds nothing due (earlier tests on this stack may have left messages to send)."""
    for _ in range(5):
        run = run_deployment(SWEEP, timeout=120, job_variables=job_variables or None)
        assert run.state.is_completed(), run.state
        if run.state.name == NOTHING_DUE:
            return run
    pytest.fail("five sweeps in a row each found something due")


def test_a_sweep_that_found_nothing_due_leaves_the_runs_list_and_one_that_did_something_stays(flow_stack):
    idle = an_idle_sweep(**KEEP_AN_HOUR)
    # Something due: a message waiting in the outbox for the next sweep to send.
    change = flow_stack.services.changes.submit(standard_request(title="sweep: something to send"))
    Notifier(flow_stack.services, flow_stack.settings).announce(change, "approved", ["alice"])
    busy = run_deployment(SWEEP, timeout=120, job_variables=KEEP_AN_HOUR)
    assert busy.state.is_completed() and busy.state.name != NOTHING_DUE, busy.state
    kept_idle = an_idle_sweep(**KEEP_AN_HOUR)  # which keeps the idle runs of the last hour
    assert read_run(idle.id).state.name == NOTHING_DUE

    # A sweep with the default (0 s): every earlier idle run goes, the run that sent the message stays.
    last = run_deployment(SWEEP, timeout=120)
    assert last.state.is_completed()
    for gone in (idle.id, kept_idle.id):
        with pytest.raises(ObjectNotFound):
            read_run(gone)
    assert read_run(busy.id).state.name == busy.state.name
    sent = [(n["recipient"], n["state"]) for n in flow_stack.services.changes.view(change.key).notifications
            if n["event"] == "approved"]
    assert sent == [("alice", "sent")]  # what made it a busy sweep

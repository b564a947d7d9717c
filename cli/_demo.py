"""`changeflow demo`: one change of each type through the real policy engine, on a throw-away HOME."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import typer

from models import ChangeState, PolicyViolation, Settings

from ._context import AppContext
from ._output import console

STANDARD = {
    "type": "standard",
    "title": "Upgrade payments API to 2.4",
    "service": "payments",
    "requester": "grace",
    "description": "Adds idempotency keys to refunds.",
    "implementation_plan": "1. deploy 2.4 to one node\n2. watch error rate\n3. roll out to all nodes",
    "rollback_plan": "redeploy 2.3 (image payments:2.3.7)",
    "test_evidence": "staging run #4411 green",
    "risk": {"users_affected": "many", "complexity": "medium"},
}
MAJOR = {
    "type": "major",
    "title": "Move checkout database to PostgreSQL 16",
    "service": "checkout",
    "requester": "frank",
    "implementation_plan": "logical replication, cut over in the monthly window",
    "rollback_plan": "point checkout back at the PostgreSQL 13 primary",
    "test_evidence": "full suite + UAT sign-off UAT-88",
    "risk": {"users_affected": "all", "complexity": "high", "backout_difficulty": "moderate", "touches_data": True},
}
EMERGENCY = {
    "type": "emergency",
    "title": "Raise checkout connection pool after outage",
    "service": "checkout",
    "requester": "bob",
    "incident_id": "INC-2041",
    "incident_severity": "P1",
    "implementation_plan": "set POOL_SIZE=200 and restart",
    "rollback_plan": "set POOL_SIZE=50",
}


def _approve(ctx: AppContext, key: str, approver: str, comment: str) -> None:
    service = ctx.service
    result = service.decide(key, approver=approver, decision="approve",
                            code=service.approval_code_for(key, approver), comment=comment)
    console.print(f"  [green]approved[/] by {approver} as {result.role}; "
                  f"still needed: {result.evaluation.describe_missing()}")


def _run_to_done(ctx: AppContext, key: str, path: list[ChangeState], actor: str) -> None:
    for target in path:
        ctx.service.transition(key, target, actor=actor, reason="demo")
    console.print(f"  {key} -> {ctx.service.get(key).state}")


def run_demo(home: Path) -> None:
    started = time.perf_counter()
    os.environ["CHANGEFLOW_HOME"] = str(home)
    for name in ("CHANGEFLOW_DATABASE_URL", "CHANGEFLOW_CONFIG_DIR", "CHANGEFLOW_SECRET"):
        os.environ.pop(name, None)
    from ._app import app

    console.rule("[bold]changeflow demo")
    console.print(f"throw-away HOME: {home}")
    app(["init"], standalone_mode=False)
    ctx = AppContext(Settings())
    service = ctx.service

    console.rule("standard change: team lead + peer reviewer")
    standard = service.request_approval(service.submit(STANDARD).key)
    console.print(f"{standard.key} {standard.title} (risk {standard.risk_level}, score {standard.risk_score})")
    _approve(ctx, standard.key, "alice", "plan and rollback look right")
    _approve(ctx, standard.key, "bob", "reviewed the diff")
    _run_to_done(ctx, standard.key, [ChangeState.scheduled, ChangeState.implementing, ChangeState.verifying,
                                     ChangeState.completed, ChangeState.closed], "alice")

    console.rule("major change: CAB quorum, one refused self-approval")
    major = service.request_approval(service.submit(MAJOR).key)
    console.print(f"{major.key} {major.title} (risk {major.risk_level})")
    try:
        service.decide(major.key, approver="frank", decision="approve",
                       code=service.approval_code_for(major.key, "frank"))
    except PolicyViolation as refused:
        console.print(f"  [red]refused[/]: {refused}")
    for person in ("alice", "carol", "dave"):
        _approve(ctx, major.key, person, "CAB vote")
    _run_to_done(ctx, major.key, [ChangeState.scheduled, ChangeState.implementing, ChangeState.verifying,
                                  ChangeState.completed, ChangeState.closed], "frank")

    console.rule("emergency change: incident commander, review after the fact")
    emergency = service.request_approval(service.submit(EMERGENCY).key)
    console.print(f"{emergency.key} {emergency.title} ({emergency.incident_id}, {emergency.incident_severity})")
    _approve(ctx, emergency.key, "erin", "go, P1 in progress")
    _run_to_done(ctx, emergency.key, [ChangeState.implementing, ChangeState.verifying, ChangeState.completed,
                                      ChangeState.review_pending], "bob")
    due = service.get(emergency.key).review_due_at
    console.print(f"  post-implementation review due {due:%Y-%m-%d %H:%M} UTC")
    service.record_review(emergency.key, actor="erin", summary="pool exhausted by retry storm; add alert")
    console.print(f"  review recorded, {emergency.key} closed")

    console.rule("change log")
    app(["log"], standalone_mode=False)
    console.rule("audit")
    app(["audit", "verify"], standalone_mode=False)
    console.print(f"demo finished in {time.perf_counter() - started:.1f} s")


def demo(keep: bool = typer.Option(False, help="Keep the throw-away HOME for a look afterwards.")) -> None:
    """Play one change of each type through the policy engine on a throw-away HOME."""
    home = Path(tempfile.mkdtemp(prefix="changeflow-demo-"))
    try:
        run_demo(home)
    finally:
        if keep:
            console.print(f"kept {home}: CHANGEFLOW_HOME={home} changeflow show CHG-000001")
        else:
            shutil.rmtree(home, ignore_errors=True)

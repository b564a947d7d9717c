"""Filing and reading changes: `submit`, `confirm-filing`, `show`, `log`, `review`."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.panel import Panel
from rich.table import Table

from flows import cancel_run, file_change, stop_run
from models import ChangeRequest, ChangeState, GateTarget, InputError, RiskLevel, parse_action_items
from notifications import run_url

from ._context import context
from ._flows import nudge_run
from ._options import JsonOption, OutputFormat, build_filter, parse_time, read_request_file, required_time
from ._output import console, err_console, exits_cleanly, fmt_time, print_json
from ._render import LOG_FIELDS, change_row, emit_rows, event_summary, log_row
from ._wait import DEFAULT_TIMEOUT, UntilOption, parse_timeout, wait_for_gate


app = typer.Typer()


@app.command()
@exits_cleanly
def submit(
    file: Path = typer.Argument(..., help="Change request as YAML or JSON (fields of the submit form)."),
    local: bool = typer.Option(False, "--local", help="Record the change without starting its Prefect flow."),
    token_env: Optional[str] = typer.Option(
        None, "--token-env", help="A pipeline filing as its automation: the environment variable holding the token "
        "issued for it (`changeflow token issue`); the filing is confirmed at once. Never the token itself on the "
        "command line."),
    wait: bool = typer.Option(False, "--wait", help="Then wait on its approval gate, as `changeflow wait` does: exit "
                              "0 may proceed, 1 rejected / expired / cancelled, 3 --timeout passed."),
    timeout: str = typer.Option(DEFAULT_TIMEOUT, "--timeout", help="With --wait: give up after this long (exit 3)."),
    until: GateTarget = UntilOption,
    json_output: bool = JsonOption,
) -> None:
    """Validate a change request and start its flow (deployment change-request/submit)."""
    limit = parse_timeout(timeout)  # checked before anything is filed
    data = read_request_file(file)
    services = context().services
    token = None
    if token_env is not None:
        token = os.environ.get(token_env, "")
        if not token:
            raise InputError(f"--token-env: the environment variable {token_env} is not set",
                             [("token_env", "not set")])
    change = file_change(services, data, token=token, local=local)
    _report_filing(change, local=local and token is None, wait=wait, limit=limit, until=until,
                   json_output=json_output)


@app.command()
@exits_cleanly
def rollback(
    key: str = typer.Argument(..., help="The completed change to roll back."),
    person: str = typer.Option(..., "--as", help="Who files the rollback (confirms it with the code sent to them)."),
    reason: str = typer.Option(..., help="Why it is rolled back (recorded on both changes)."),
    incident: Optional[str] = typer.Option(None, help="The incident it answers, where the rollback's type asks."),
    severity: Optional[str] = typer.Option(None, help="That incident's severity (P1 ... P4)."),
    local: bool = typer.Option(False, "--local", help="Record the rollback without starting its Prefect flow."),
    json_output: bool = JsonOption,
) -> None:
    """Roll back a change that completed, within policies.yaml rollback.within: a change of its own (type
    rollback.as, approved as an emergency is) whose steps are the completed change's rollback commands, and for a
    canary its traffic back to the stable version. The two are linked on the record; DORA counts the first failed."""
    services = context().services
    data = services.rollbacks.request_for(key, person=person, reason=reason, incident_id=incident,
                                          incident_severity=severity)
    change = file_change(services, data, local=local)
    _report_filing(change, local=local, wait=False, limit=timedelta(0), until=GateTarget.approval,
                   json_output=json_output)


def _report_filing(change: ChangeRequest, *, local: bool, wait: bool, limit: timedelta, until: GateTarget,
                   json_output: bool) -> None:
    """What `submit` and `rollback` print once a change is recorded (and, with --wait, wait on its gate)."""
    services = context().services
    if local:
        notifier = context().notifier
        notifier.announce(change, "filing_received", [change.requester], personal_code=True)
        notifier.deliver(change_key=change.key)
    required = services.approvals.required_for(change)
    if json_output and wait:
        wait_for_gate(change.key, limit, json_output, until)  # stdout: the final record only
        return
    if json_output:
        print_json({**change_row(change), "flow_run_id": change.flow_run_id,
                    "required": [r.__dict__ for r in required]})
        return
    rolls_back = f", rolling back {change.rolls_back}" if change.rolls_back else ""
    console.print(f"[bold]{change.key}[/] recorded: {change.type} change to {change.service} in "
                  f"{change.environment}{rolls_back}, risk {change.risk_level}, {change.state}")
    if change.state == ChangeState.submitted.value:
        console.print(f"it goes to its approvers ({', '.join(f'{r.count} x {r.role}' for r in required) or 'none'})"
                      f" once {change.requester} confirms the filing with the code sent to them: changeflow "
                      f"confirm-filing {change.key} --as {change.requester} --code ...")
    if change.flow_run_id:
        console.print(f"flow run: {run_url(context().settings, change.flow_run_id)}")
    if wait:
        wait_for_gate(change.key, limit, json_output, until)


@app.command("confirm-filing")
@exits_cleanly
def confirm_filing(
    key: str = typer.Argument(..., help="Change key."),
    person: str = typer.Option(..., "--as", help="You, the change's requester."),
    code: str = typer.Option(..., "--code", help="The code sent to you for confirming this filing."),
) -> None:
    """Confirm that you filed a change: only then does it go to its approvers (nobody files in another's name)."""
    services = context().services
    change = services.approvals.confirm_filing(key, person=person, code=code)
    nudge_run(change, "filing")
    console.print(f"{change.key} confirmed by {person}: {change.state}")


@app.command()
@exits_cleanly
def show(key: str = typer.Argument(..., help="Change key."), json_output: bool = JsonOption) -> None:
    """Show one change with its approvals and full event timeline."""
    view = context().services.changes.view(key)
    if json_output:
        print_json(view.model_dump(mode="json"))
        return
    facts = Table.grid(padding=(0, 2))
    for name in ("type", "state", "service", "environment", "release", "promoted_from", "rolls_back", "rolled_back_by",
                 "requester", "category", "risk_level", "risk_score", "incident_id",
                 "incident_severity", "planned_start", "planned_end", "review_due_at", "flow_run_id",
                 "policy_version"):
        value = getattr(view, name)
        if value is not None:
            facts.add_row(name, fmt_time(value) if isinstance(value, datetime) else str(getattr(value, "value", value)))
    facts.add_row("risk reasons", "; ".join(view.risk_reasons) or "-")
    facts.add_row("rollback plan", view.rollback_plan or "-")
    facts.add_row("test evidence", view.test_evidence or "-")
    for label, value in (("UAT sign-off", view.uat_signoff), ("documentation", view.documentation_link)):
        if value:
            facts.add_row(label, value)
    console.print(Panel(facts, title=f"{view.key}  {view.title}"))
    if view.approvals:
        approvals = Table(title="approvals")
        for column in ("approver", "role", "decision", "round", "when", "comment"):
            approvals.add_column(column)
        for a in view.approvals:
            approvals.add_row(a.approver + (f" for {a.on_behalf_of}" if a.on_behalf_of else ""), a.role, a.decision,
                              str(a.round), fmt_time(a.decided_at), a.comment)
        console.print(approvals)
    timeline = Table(title="timeline")
    for column in ("#", "when", "actor", "action", "state", "details"):
        timeline.add_column(column)
    for e in view.events:
        moved = f"{e.from_state or ''} -> {e.to_state}" if e.to_state else ""
        timeline.add_row(str(e.seq), fmt_time(e.occurred_at), e.actor, e.action, moved, event_summary(e.action, e.data))
    console.print(timeline)
    if view.checklist_results:
        checks = Table(title=f"checklist {view.checklist}", box=box.SIMPLE_HEAD)
        for column in ("phase", "step", "item", "result", "detail", "by"):
            checks.add_column(column)
        for c in view.checklist_results:
            result = "passed" if c["passed"] else ("FAILED" if c["required"] else "failed (advisory)")
            checks.add_row(c["phase"], str(c["step"]), c["title"], result, c["detail"][:80], c["actor"])
        console.print(checks)
    if view.canary_steps:
        steps = Table(title=f"canary {view.canary['canary_version']}", box=box.SIMPLE_HEAD)
        for column in ("step", "weight %", "decision", "measurements", "why"):
            steps.add_column(column)
        for s in view.canary_steps:
            steps.add_row(str(s["step"]), str(s.get("weight", "")), s["action"], str(s.get("measured", "")),
                          "; ".join(s.get("reasons", []))[:100])
        console.print(steps)
    if view.notifications:
        sent = Table(title="notifications", box=box.SIMPLE_HEAD)
        for column in ("id", "event", "to", "channel", "state", "tries"):
            sent.add_column(column)
        for n in view.notifications:
            sent.add_row(str(n["id"]), n["event"], n["recipient"], n["channel"], n["state"], str(n["attempts"]))
        console.print(sent)
    if view.flow_run_id:
        console.print(f"flow run: {run_url(context().settings, view.flow_run_id)}")


@app.command("log")
@exits_cleanly
def log_command(
    type: Optional[str] = typer.Option(None, help="Only this change type (a name from policies.yaml)."),
    state: Optional[ChangeState] = typer.Option(None, help="Only changes in this state."),
    service: Optional[str] = typer.Option(None, help="Only this service."),
    environment: Optional[str] = typer.Option(None, help="Only this environment (policies.yaml environments)."),
    requester: Optional[str] = typer.Option(None, help="Only this requester."),
    approver: Optional[str] = typer.Option(None, help="Only changes this person approved."),
    risk: Optional[RiskLevel] = typer.Option(None, help="Only this risk level."),
    since: Optional[str] = typer.Option(None, help="Created at or after (ISO date/time, UTC default)."),
    until: Optional[str] = typer.Option(None, help="Created before (ISO date/time)."),
    implemented_since: Optional[str] = typer.Option(None, help="Implementation started at or after."),
    implemented_until: Optional[str] = typer.Option(None, help="Implementation started before."),
    closed_since: Optional[str] = typer.Option(None, help="Closed at or after."),
    closed_until: Optional[str] = typer.Option(None, help="Closed before."),
    text: Optional[str] = typer.Option(None, help="Words the title contains."),
    limit: int = typer.Option(50, min=1, max=10_000, help="At most this many rows."),
    after: Optional[str] = typer.Option(None, help="Cursor printed by the previous page."),
    output: OutputFormat = typer.Option(OutputFormat.table, "--format", help="table, json or csv."),
    json_output: bool = JsonOption,
) -> None:
    """List changes, newest first, a page at a time."""
    change_filter = build_filter(
        type=type, state=state, service=service, environment=environment, requester=requester, approver=approver,
        risk=risk, created_since=parse_time(since, "since"), created_until=parse_time(until, "until"),
        implemented_since=parse_time(implemented_since, "implemented-since"),
        implemented_until=parse_time(implemented_until, "implemented-until"),
        closed_since=parse_time(closed_since, "closed-since"), closed_until=parse_time(closed_until, "closed-until"),
        text=text)
    page = context().services.changes.query(change_filter, limit=limit, after=after)
    output = OutputFormat.json if json_output else output
    emit_rows([log_row(c) for c in page.items], LOG_FIELDS, output, f"changes ({len(page.items)})",
              optional_in_table=("closed_at", "implemented_at", "risk_level"))
    if page.next_cursor and output is OutputFormat.table:
        console.print(f"more: changeflow log ... --after {page.next_cursor}")
    elif page.next_cursor:
        err_console.print(f"next page: --after {page.next_cursor}")


@app.command()
@exits_cleanly
def review(
    key: str = typer.Argument(..., help="Change key."),
    actor: str = typer.Option(..., "--as", help="Who records the review (a person in the approver directory)."),
    code: str = typer.Option(..., "--code", help="Your personal approval code for this change."),
    summary: str = typer.Option(..., help="What happened and what was learned."),
    root_cause: str = typer.Option("", help="Why it went wrong (required where it failed or was rolled back)."),
    timeline: str = typer.Option("", help="What happened when (UTC)."),
    went_well: str = typer.Option("", help="What went well."),
    went_wrong: str = typer.Option("", help="What could be improved."),
    action: list[str] = typer.Option([], help="An action item, 'what | owner | YYYY-MM-DD' (repeatable): its owner "
                                     "is reminded when it falls due, then up policies.yaml follow_ups.escalation."),
) -> None:
    """Record a post-implementation review and close the change."""
    services = context().services
    change = services.reviews.record(key, actor=actor, code=code, summary=summary, root_cause=root_cause,
                                     timeline=timeline, went_well=went_well, went_wrong=went_wrong,
                                     action_items=parse_action_items("\n".join(action)))
    items = services.reviews.items_of(change.key)
    console.print(f"{change.key}: review recorded, {change.state}"
                  + (f"; {len(items)} action items: " + ", ".join(f"{i.number} ({i.owner}, due "
                                                                   f"{i.due_at:%Y-%m-%d %H:%M} UTC)" for i in items)
                     if items else ""))


@app.command("action-done")
@exits_cleanly
def action_done(
    key: str = typer.Argument(..., help="The reviewed change's key."),
    number: int = typer.Argument(..., help="The action item's number (as the review listed them)."),
    person: str = typer.Option(..., "--as", help="Its owner."),
    code: str = typer.Option(..., "--code", help="Your personal code for follow-ups (from the reminder)."),
    note: str = typer.Option("", help="What was done (recorded)."),
) -> None:
    """Close an action item of a post-implementation review: its owner, with their code."""
    item = context().services.reviews.close_item(key, number, actor=person, code=code, note=note)
    late = " (late)" if item.done_at and item.done_at > item.due_at else ""
    console.print(f"{key} action item {number} done by {person}{late}")


@app.command()
@exits_cleanly
def cancel(
    key: str = typer.Argument(..., help="Change key."),
    person: str = typer.Option(..., "--as", help="The requester, or someone who may approve the change."),
    code: str = typer.Option(..., "--code", help="Your personal approval code for this change."),
    reason: str = typer.Option(..., help="Why it is called off (recorded)."),
) -> None:
    """Withdraw a change before it is implemented; its Prefect run is cancelled too."""
    change = context().services.amendments.withdraw(key, person=person, code=code, reason=reason)
    stopped = cancel_run(change, f"{change.key} cancelled by {person}")
    console.print(f"{change.key}: {change.state}" + ("; its flow run is cancelled" if stopped else ""))


@app.command()
@exits_cleanly
def abort(
    key: str = typer.Argument(..., help="Change key."),
    person: str = typer.Option(..., "--as", help="The requester, or someone who may approve the change."),
    code: str = typer.Option(..., "--code", help="Your personal code for calling this change off."),
    reason: str = typer.Option(..., help="Why it is stopped (recorded)."),
) -> None:
    """Stop a change while it is being implemented: a canary's traffic goes back to stable at once, its run is
    stopped, then started again by the sweep only to roll the change back (its template's rollback commands).
    Exit 0 once the abort is recorded; `changeflow show` follows the rollback."""
    change = context().services.amendments.abort(key, person=person, code=code, reason=reason)
    stopped = stop_run(change, f"{change.key} aborted by {person}")
    canary = f" (its canary's traffic: {stopped.traffic})" if stopped.traffic else ""
    console.print(f"{change.key}: abort recorded{canary}; " + (
        "its run is stopped and the next sweep starts it again to roll the change back" if stopped else
        "its run could not be reached: stop it in the Prefect UI (Cancel); the sweep then rolls the change back"))


def _reopen(key: str, amendment: dict, person: str, code: str, reason: str) -> None:
    """Amend, ask the new round's approvers (their new codes) and wake a run waiting at its window gate."""
    ctx = context()
    change = ctx.services.amendments.amend(key, amendment, person=person, code=code, reason=reason)
    notifier = ctx.notifier
    asked = notifier.request_approvals(change)
    notifier.deliver(change_key=change.key)
    nudge_run(change, "window", wait_s=5)
    console.print(f"{change.key}: {change.state}, approval round {change.approval_round} "
                  f"({asked} approval request(s) sent; the previous round's codes no longer work)")


@app.command()
@exits_cleanly
def amend(
    key: str = typer.Argument(..., help="Change key."),
    person: str = typer.Option(..., "--as", help="The requester or an owner of the service."),
    code: str = typer.Option(..., "--code", help="Your personal approval code for this change."),
    reason: str = typer.Option(..., help="Why it changes (recorded)."),
    title: Optional[str] = typer.Option(None, help="New title."),
    description: Optional[str] = typer.Option(None, help="New description."),
    impact: Optional[str] = typer.Option(None, help="New impact statement."),
    plan: Optional[str] = typer.Option(None, "--plan", help="New implementation plan."),
    rollback_plan: Optional[str] = typer.Option(None, "--rollback-plan", help="New rollback plan."),
    test_evidence: Optional[str] = typer.Option(None, "--test-evidence", help="New test evidence."),
    uat_signoff: Optional[str] = typer.Option(None, "--uat-signoff", help="New UAT sign-off."),
    documentation_link: Optional[str] = typer.Option(None, "--documentation-link", help="New documentation link."),
    category: Optional[str] = typer.Option(None, help="New category (corrective, adaptive, perfective, preventive)."),
) -> None:
    """Change what was asked before implementation: the change is approved again, in a new round."""
    amendment = {name: value for name, value in {
        "title": title, "description": description, "impact": impact, "implementation_plan": plan,
        "rollback_plan": rollback_plan, "test_evidence": test_evidence, "uat_signoff": uat_signoff,
        "documentation_link": documentation_link, "category": category}.items() if value is not None}
    _reopen(key, amendment, person, code, reason)


@app.command()
@exits_cleanly
def reschedule(
    key: str = typer.Argument(..., help="Change key."),
    start: str = typer.Option(..., help="New planned start, e.g. 2026-12-13T02:00Z."),
    end: Optional[str] = typer.Option(None, help="New planned end (default: the start + 2 h)."),
    person: str = typer.Option(..., "--as", help="The requester or an owner of the service."),
    code: str = typer.Option(..., "--code", help="Your personal approval code for this change."),
    reason: str = typer.Option(..., help="Why it moves (recorded)."),
) -> None:
    """Move a change to another slot: checked against windows, notice and freezes, then approved again."""
    planned_start = required_time(start, "start")
    planned_end = parse_time(end, "end")
    _reopen(key, {"planned_start": planned_start.isoformat(),
                  "planned_end": planned_end.isoformat() if planned_end else None}, person, code, reason)

"""`changeflow` commands. Thin: parse arguments, call the models package, render."""

from __future__ import annotations

import shutil
from enum import Enum
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

import typer
from rich import box
from rich.panel import Panel
from rich.table import Table

from models import (
    DEFAULTS_DIR,
    ChangeRequest,
    ChangeState,
    Decision,
    RiskLevel,
    InputError,
    Settings,
    parse_yaml,
    required_approvals,
    upgrade_database,
    verify_chain,
)

from models import ChangeFilter
from notifications import Notifier, run_url
from notifications import describe_target

from ._context import context
from ._flows import nudge_gate, nudge_run, start_change_flow
from ._output import console, err_console, exits_cleanly, fmt_time, print_error, print_json

app = typer.Typer(help="changeflow: change and maintenance management on Prefect.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
audit_app = typer.Typer(help="The tamper-evident audit trail.", no_args_is_help=True)
policy_app = typer.Typer(help="Approval policies.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(audit_app, name="audit")
app.add_typer(policy_app, name="policy")
window_app = typer.Typer(help="Ad hoc maintenance windows and freezes.", no_args_is_help=True)
app.add_typer(window_app, name="window")
notifications_app = typer.Typer(help="The notification outbox.", invoke_without_command=True)
app.add_typer(notifications_app, name="notifications")

MAX_REQUEST_FILE_BYTES = 5 * 1024 * 1024
CONFIG_FILES = ("directory.yaml", "policies.yaml", "checklists.yaml", "templates.yaml", "maintenance.yaml")

JsonOption = typer.Option(False, "--json", help="Print JSON instead of a table.")


def _parse_time(value: Optional[str], name: str) -> Optional[datetime]:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(f"--{name}: {value!r} is not a date or time like 2026-11-01 or 2026-11-01T14:00") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def read_request_file(path: Path) -> dict:
    """Read a change request from YAML or JSON; every problem is an InputError naming the file."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    if size > MAX_REQUEST_FILE_BYTES:
        raise InputError(f"{path}: {size} bytes is larger than the {MAX_REQUEST_FILE_BYTES} bytes a request may be")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    data = parse_yaml(text, str(path), InputError)
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of change-request fields at the top level")
    return data


def change_row(change: ChangeRequest) -> dict:
    return {
        "key": change.key,
        "type": change.type,
        "state": change.state,
        "service": change.service,
        "title": change.title,
        "requester": change.requester,
        "risk_level": change.risk_level,
        "created_at": change.created_at.isoformat(),
        "updated_at": change.updated_at.isoformat(),
    }


# ---- setup ---------------------------------------------------------------------------------------------


@app.command()
@exits_cleanly
def init(force: bool = typer.Option(False, help="Overwrite config files that already exist.")) -> None:
    """Create HOME, the secret, the example organisation config and the database."""
    settings = Settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    wrote_secret = settings.ensure_secret_file()
    settings.config_dir.mkdir(parents=True, exist_ok=True)
    installed = []
    for name in CONFIG_FILES:
        target = settings.config_dir / name
        if force or not target.exists():
            shutil.copyfile(DEFAULTS_DIR / name, target)
            installed.append(name)
    ctx = context()
    revision = upgrade_database(ctx.db)
    ctx.org  # validate the config now, not at the first approval
    console.print(f"home:     {settings.home}")
    console.print(f"secret:   {settings.secret_file if not settings.secret else 'CHANGEFLOW_SECRET'}"
                  f"{' (new)' if wrote_secret else ''}")
    console.print(f"config:   {settings.config_dir} ({', '.join(installed) or 'kept existing files'})")
    console.print(f"database: {ctx.db.url} (schema {revision})")


@db_app.command("upgrade")
@exits_cleanly
def db_upgrade() -> None:
    """Apply pending database migrations."""
    ctx = context()
    revision = upgrade_database(ctx.db)
    console.print(f"database at schema {revision}: {ctx.db.url}")


# ---- requests and decisions ----------------------------------------------------------------------------


@app.command()
@exits_cleanly
def submit(
    file: Path = typer.Argument(..., help="Change request as YAML or JSON (fields of the submit form)."),
    local: bool = typer.Option(False, "--local", help="Record the change without starting its Prefect flow."),
    json_output: bool = JsonOption,
) -> None:
    """Validate a change request and start its flow (deployment change-request/submit)."""
    data = read_request_file(file)
    services = context().services
    request = services.changes.validate_request(data)
    if local:
        change = services.approvals.request_approval(services.changes.submit(request).key)
    else:
        change, _run_id = start_change_flow(services, request.model_dump(mode="json", exclude_unset=True))
    required = services.approvals.required_for(change) if change.state == ChangeState.awaiting_approval.value else []
    if json_output:
        print_json({**change_row(change), "flow_run_id": change.flow_run_id,
                    "required": [r.__dict__ for r in required]})
        return
    console.print(f"[bold]{change.key}[/] recorded: {change.type} change to {change.service}, "
                  f"risk {change.risk_level}, {change.state}")
    if required:
        console.print("needs: " + ", ".join(f"{r.count} x {r.role}" for r in required))
    if change.flow_run_id:
        console.print(f"flow run: {run_url(context().settings, change.flow_run_id)}")


def _decide(key: str, approver: str, code: str, role: Optional[str], comment: str, decision: Decision,
            json_output: bool) -> None:
    services = context().services
    result = services.approvals.decide(key, approver=approver, decision=decision, code=code, role=role, comment=comment)
    nudged = nudge_gate(result.change, {"approver": approver, "decision": decision.value,
                                        "approval_code": code, "comment": comment})
    change = services.changes.get(key)
    if json_output:
        print_json({**change_row(change), "role": result.role, "missing": result.evaluation.missing,
                    "flow_resumed": nudged})
        return
    console.print(f"{change.key}: {decision.value} by {approver} as {result.role}"
                  f"{' (already recorded)' if result.repeated else ''}; state {change.state}; "
                  f"still needed: {result.evaluation.describe_missing()}")
    if change.flow_run_id and not nudged:
        console.print("the flow run was not waiting at its gate just now; the escalation sweep resumes it "
                      "within a minute")


@app.command()
@exits_cleanly
def approve(
    key: str = typer.Argument(..., help="Change key, e.g. CHG-000042."),
    approver: str = typer.Option(..., "--as", help="Your user name in the approver directory."),
    code: str = typer.Option(..., "--code", help="Your personal approval code from the notification."),
    role: Optional[str] = typer.Option(None, help="Role you approve in (default: the one still needed)."),
    comment: str = typer.Option("", help="Comment for the record."),
    json_output: bool = JsonOption,
) -> None:
    """Approve a change awaiting approval (the same gate the Prefect UI resumes)."""
    _decide(key, approver, code, role, comment, Decision.approve, json_output)


@app.command()
@exits_cleanly
def reject(
    key: str = typer.Argument(..., help="Change key, e.g. CHG-000042."),
    approver: str = typer.Option(..., "--as", help="Your user name in the approver directory."),
    code: str = typer.Option(..., "--code", help="Your personal approval code from the notification."),
    role: Optional[str] = typer.Option(None, help="Role you act in."),
    comment: str = typer.Option(..., help="Why the change is rejected."),
    json_output: bool = JsonOption,
) -> None:
    """Reject a change awaiting approval."""
    _decide(key, approver, code, role, comment, Decision.reject, json_output)


@app.command()
@exits_cleanly
def confirm(
    key: str = typer.Argument(..., help="Change key."),
    item: str = typer.Argument(..., help="Checklist item id, e.g. backup-verified."),
    person: str = typer.Option(..., "--as", help="Who confirms."),
    note: str = typer.Option("", help="What you checked."),
) -> None:
    """Confirm a manual checklist item; the change's run continues when its phase is complete."""
    from models import ItemOutcome

    services = context().services
    change = services.changes.get(key)
    checklist = services.org.checklist_of(change)
    found = checklist.find(item) if checklist else None
    if found is None or found[1].kind != "manual":
        known = [i.id for p in ("pre", "during", "post") for i in (checklist.items(p) if checklist else [])
                 if i.kind == "manual"]
        raise InputError(f"item: {item!r} is not a manual item of {change.key}'s checklist "
                         f"({', '.join(known) or 'it has none'})")
    phase, definition = found
    step = max(services.checklists.done_steps(key), default=1) if phase == "during" else 0
    written = services.checklists.record_check(key, phase=phase, step=step, item=definition, actor=person,
                                   outcome=ItemOutcome(item_id=item, passed=True, required=definition.required,
                                                       detail=note or "confirmed"))
    nudged = nudge_run(services.changes.get(key), "checklist-", {"confirmed_by": person, "note": note})
    console.print(f"{change.key} {phase} {item}: {'confirmed' if written else 'already recorded'}"
                  f"{'; the run continues' if nudged else ''}")


@app.command()
@exits_cleanly
def canary(
    key: str = typer.Argument(..., help="Change key."),
    person: str = typer.Option(..., "--as", help="Who answers (a person in the approver directory)."),
    code: str = typer.Option(..., "--code", help="Your personal approval code for this change."),
    roll_back: bool = typer.Option(False, "--roll-back", help="Send all traffic back to stable instead."),
    comment: str = typer.Option("", help="What you looked at, for the record."),
) -> None:
    """Answer a canary gate: confirm the next step (or an inconclusive analysis), or roll back."""
    services = context().services
    services.approvals.check_person_code(key, person, code)
    change = services.changes.get(key)
    answer = {"person": person, "approval_code": code, "answer": "roll_back" if roll_back else "proceed",
              "comment": comment}
    if not nudge_run(change, "canary-", answer):
        raise InputError(f"{change.key}: its run is not waiting at a canary gate")
    console.print(f"{change.key}: {'roll back' if roll_back else 'proceed'} sent to the canary gate")


@app.command()
@exits_cleanly
def pending(json_output: bool = JsonOption) -> None:
    """What waits for approval, on whom, and since when."""
    ctx = context()
    services = ctx.services
    notifier = Notifier(services, ctx.settings)
    rows = []
    for change, evaluation in services.approvals.pending_approvals():
        deadline = services.approvals.approval_deadline(change)
        rows.append({
            "key": change.key, "type": change.type, "title": change.title, "service": change.service,
            "waiting_since": change.approval_requested_at.isoformat() if change.approval_requested_at else None,
            "deadline": deadline.isoformat() if deadline else None,
            "missing": evaluation.missing, "approved_by": list(evaluation.approved_by),
            "waiting_on": sorted(notifier.approvers_to_ask(change)),
        })
    if json_output:
        print_json(rows)
        return
    table = Table(title=f"waiting for approval ({len(rows)})", box=box.SIMPLE_HEAD)
    for column in ("key", "type", "title", "since", "deadline", "still needed", "waiting on"):
        table.add_column(column, no_wrap=column in ("key", "since", "deadline"))
    for row in rows:
        table.add_row(row["key"], row["type"], row["title"], (row["waiting_since"] or "-")[:16].replace("T", " "),
                      (row["deadline"] or "-")[:16].replace("T", " "),
                      ", ".join(f"{n} x {r}" for r, n in row["missing"].items()), ", ".join(row["waiting_on"]))
    console.print(table)


@app.command("approval-code")
@exits_cleanly
def approval_code_command(
    key: str = typer.Argument(..., help="Change key."),
    approver: str = typer.Option(..., "--for", help="Approver user name."),
) -> None:
    """Print an approver's personal code (operators only: it needs the server secret)."""
    console.print(context().services.approvals.approval_code_for(key, approver))


@app.command()
@exits_cleanly
def review(
    key: str = typer.Argument(..., help="Change key."),
    actor: str = typer.Option(..., "--as", help="Who records the review."),
    summary: str = typer.Option(..., help="What happened, what was learned, follow-ups."),
) -> None:
    """Record a post-implementation review and close the change."""
    change = context().services.changes.record_review(key, actor=actor, summary=summary)
    console.print(f"{change.key}: review recorded, {change.state}")


# ---- queries -------------------------------------------------------------------------------------------


class OutputFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


LOG_FIELDS = ("key", "type", "state", "service", "title", "requester", "risk_level", "outcome", "created_at",
              "implemented_at", "closed_at")


def log_row(change: ChangeRequest) -> dict:
    """The stable fields of `log --format json|csv` (documented in the README)."""
    row = {name: getattr(change, name) for name in LOG_FIELDS}
    for name in ("created_at", "implemented_at", "closed_at"):
        row[name] = row[name].isoformat() if row[name] else None
    return row


def emit_rows(rows: list[dict], fields: tuple[str, ...], output: OutputFormat, title: str,
              optional_in_table: tuple[str, ...] = ()) -> None:
    """One renderer for every listing: a Rich table, a JSON list of objects, or CSV with a header row.

    JSON and CSV always carry every field; a table on a terminal too narrow for all of them leaves out
    `optional_in_table` and says so.
    """
    if output is OutputFormat.json:
        print_json(rows)
    elif output is OutputFormat.csv:
        import csv
        import sys

        writer = csv.DictWriter(sys.stdout, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    else:
        cells = {n: ["" if row.get(n) is None else
                     str(row[n])[:16].replace("T", " ") if n.endswith("_at") else str(row[n]) for row in rows]
                 for n in fields}
        widths = {n: max([len(n), *(len(c) for c in cells[n])]) for n in fields}
        shown = list(fields)
        # Columns plus 2 characters of padding each; free text counts with the 20 characters it needs at least.
        def needed(names):
            return sum(min(widths[n], 20) if n in ("title", "detail") else widths[n] for n in names) + 2 * len(names)
        left_out = []
        for name in optional_in_table:
            if needed(shown) <= console.width:
                break
            shown.remove(name)
            left_out.append(name)
        table = Table(title=title, box=box.SIMPLE_HEAD)
        for name in shown:
            # Keys, states and times keep their width; free text gives way and is cut with an ellipsis.
            free_text = name in ("title", "detail")
            table.add_column(name, no_wrap=not free_text, overflow="ellipsis", max_width=48 if free_text else None,
                             min_width=None if free_text else min(widths[name], 16))
        for i in range(len(rows)):
            table.add_row(*(cells[n][i] for n in shown))
        console.print(table)
        if left_out:
            console.print(f"[dim]not shown at this width: {', '.join(left_out)} (see --format json or csv)[/]")


@app.command("log")
@exits_cleanly
def log_command(
    type: Optional[str] = typer.Option(None, help="Only this change type (a name from policies.yaml)."),
    state: Optional[ChangeState] = typer.Option(None, help="Only changes in this state."),
    service: Optional[str] = typer.Option(None, help="Only this service."),
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
        type=type, state=state, service=service, requester=requester, approver=approver, risk=risk,
        created_since=_parse_time(since, "since"), created_until=_parse_time(until, "until"),
        implemented_since=_parse_time(implemented_since, "implemented-since"),
        implemented_until=_parse_time(implemented_until, "implemented-until"),
        closed_since=_parse_time(closed_since, "closed-since"), closed_until=_parse_time(closed_until, "closed-until"),
        text=text)
    page = context().services.changes.query(change_filter, limit=limit, after=after)
    output = OutputFormat.json if json_output else output
    emit_rows([log_row(c) for c in page.items], LOG_FIELDS, output, f"changes ({len(page.items)})",
              optional_in_table=("closed_at", "implemented_at", "risk_level"))
    if page.next_cursor and output is OutputFormat.table:
        console.print(f"more: changeflow log ... --after {page.next_cursor}")
    elif page.next_cursor:
        err_console.print(f"next page: --after {page.next_cursor}")


def build_filter(**fields) -> ChangeFilter:
    from pydantic import ValidationError

    try:
        return ChangeFilter(**fields)
    except ValidationError as exc:
        problems = [(".".join(str(p) for p in e["loc"]), e["msg"]) for e in exc.errors()]
        raise InputError("; ".join(f"--{f.replace('_', '-')}: {m}" for f, m in problems), problems) from None


@app.command()
@exits_cleanly
def report(
    name: str = typer.Argument(..., help="dora, compliance or sla."),
    since: Optional[str] = typer.Option(None, help="Start of the range (default: a year before --until)."),
    until: Optional[str] = typer.Option(None, help="End of the range (default: now)."),
    service: Optional[str] = typer.Option(None, help="Only this service."),
    output: OutputFormat = typer.Option(OutputFormat.table, "--format", help="table, json or csv."),
) -> None:
    """DORA figures, compliance findings or approval SLAs over a time range."""
    result = context().services.reports.run(name, _parse_time(since, "since"), _parse_time(until, "until"), service)
    rows, fields = result.rows, result.fields
    emit_rows(rows, fields, output, f"{name} report ({len(rows)} rows)",
              optional_in_table=tuple(f for f in fields if f.endswith(("_p90_h", "_per_day", "unrestored_failures"))))


@app.command()
@exits_cleanly
def show(key: str = typer.Argument(..., help="Change key."), json_output: bool = JsonOption) -> None:
    """Show one change with its approvals and full event timeline."""
    view = context().services.changes.view(key)
    if json_output:
        print_json(view.model_dump(mode="json"))
        return
    facts = Table.grid(padding=(0, 2))
    for name in ("type", "state", "service", "requester", "risk_level", "risk_score", "incident_id",
                 "incident_severity", "planned_start", "planned_end", "review_due_at", "flow_run_id",
                 "policy_version"):
        value = getattr(view, name)
        if value is not None:
            facts.add_row(name, fmt_time(value) if isinstance(value, datetime) else str(getattr(value, "value", value)))
    facts.add_row("risk reasons", "; ".join(view.risk_reasons) or "-")
    facts.add_row("rollback plan", view.rollback_plan or "-")
    console.print(Panel(facts, title=f"{view.key}  {view.title}"))
    if view.approvals:
        approvals = Table(title="approvals")
        for column in ("approver", "role", "decision", "round", "when", "comment"):
            approvals.add_column(column)
        for a in view.approvals:
            approvals.add_row(a.approver, a.role, a.decision, str(a.round), fmt_time(a.decided_at), a.comment)
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


def event_summary(action: str, data: dict) -> str:
    """One readable line per audit event for the timeline."""
    if action == "submitted":
        return f"{data.get('type')} change, risk {data.get('risk_level')} ({data.get('risk_score')})"
    if action == "policy_decision":
        return "needs " + ", ".join(f"{r['count']} x {r['role']}" for r in data.get("required", []))
    if action in ("approval", "rejection"):
        comment = f": {data['comment']}" if data.get("comment") else ""
        return f"as {data.get('role')} (round {data.get('round')}){comment}"
    if action == "approval_refused":
        return f"refused: {data.get('reason')}"
    if action == "review_recorded":
        return str(data.get("summary", ""))
    return str(data.get("reason") or ", ".join(f"{k}={v}" for k, v in data.items()))


@window_app.command("add")
@exits_cleanly
def window_add(
    start: str = typer.Option(..., help="Start (ISO time, UTC when no offset)."),
    end: str = typer.Option(..., help="End (ISO time)."),
    title: str = typer.Option("", help="What it is, e.g. 'Year-end freeze'."),
    service: Optional[str] = typer.Option(None, help="Only this service (default: all)."),
    freeze: bool = typer.Option(False, "--freeze", help="A freeze: blocks non-emergency changes."),
    actor: str = typer.Option("changeflow", "--as", help="Who adds it (for the audit trail)."),
) -> None:
    """Add an ad hoc maintenance window, or a freeze with --freeze."""
    window = context().services.scheduling.add_window(
        starts_at=_parse_time(start, "start"), ends_at=_parse_time(end, "end"), title=title, service=service,
        freeze=freeze, kind="ad_hoc", actor=actor)
    console.print(f"{'freeze' if window.freeze else 'window'} {window.id}: {window.starts_at:%Y-%m-%d %H:%M} to "
                  f"{window.ends_at:%Y-%m-%d %H:%M} UTC {window.title}")


@app.command()
@exits_cleanly
def calendar(days: int = typer.Option(14, min=1, max=366, help="How many days ahead."),
             json_output: bool = JsonOption) -> None:
    """Maintenance windows, freezes and the changes planned in them."""
    from models import scheduled_windows
    from models import utcnow

    services = context().services
    start = utcnow()
    end = start + timedelta(days=days)
    entries = [{"kind": w.kind, "title": w.title, "service": None, "freeze": False,
                "starts_at": w.starts_at, "ends_at": w.ends_at} for w in scheduled_windows(start, end)]
    entries += [{"kind": "freeze" if w.freeze else w.kind, "title": w.title, "service": w.service,
                 "freeze": w.freeze, "starts_at": w.starts_at, "ends_at": w.ends_at}
                for w in services.scheduling.windows_between(start, end)]
    changes = services.scheduling.changes_planned_between(start, end)
    for entry in entries:
        entry["changes"] = [c.key for c in changes
                            if c.planned_start < entry["ends_at"] and (c.planned_end or c.planned_start) > entry["starts_at"]
                            and entry["service"] in (None, c.service)]
    entries.sort(key=lambda e: e["starts_at"])
    if json_output:
        print_json({"windows": entries, "changes": [
            {**change_row(c), "planned_start": c.planned_start, "planned_end": c.planned_end} for c in changes]})
        return
    table = Table(title=f"calendar, next {days} days", box=box.SIMPLE_HEAD)
    for column in ("from", "to", "kind", "title", "service", "changes"):
        table.add_column(column)
    for e in entries:
        table.add_row(f"{e['starts_at']:%a %Y-%m-%d %H:%M}", f"{e['ends_at']:%a %Y-%m-%d %H:%M}",
                      f"[red]{e['kind']}[/]" if e["freeze"] else e["kind"], e["title"], e["service"] or "all",
                      ", ".join(e["changes"]))
    console.print(table)
    if changes:
        console.print("planned changes: " + ", ".join(
            f"{c.key} {c.service} {c.planned_start:%Y-%m-%d %H:%M} ({c.state})" for c in changes))


@notifications_app.callback()
@exits_cleanly
def notifications_list(
    ctx: typer.Context,
    state: Optional[str] = typer.Option(None, help="pending, sending, sent or failed."),
    change: Optional[str] = typer.Option(None, help="Only this change."),
    limit: int = typer.Option(50, min=1, max=10_000),
    json_output: bool = JsonOption,
) -> None:
    """List notifications, newest first (webhook URLs masked)."""
    if ctx.invoked_subcommand is not None:
        return
    if state is not None and state not in ("pending", "sending", "sent", "failed"):
        raise InputError(f"--state: {state!r} is not one of pending, sending, sent, failed")
    app_ctx = context()
    rows = Notifier(app_ctx.services, app_ctx.settings).outbox.list(state=state, change_key=change, limit=limit)
    data = [{"id": n.id, "change": n.change_key, "event": n.event, "recipient": n.recipient,
             "channel": describe_target(n.channel), "state": n.state, "attempts": n.attempts,
             "created_at": n.created_at.isoformat(), "sent_at": n.sent_at.isoformat() if n.sent_at else None,
             "last_error": n.last_error} for n in rows]
    if json_output:
        print_json(data)
        return
    table = Table(title=f"notifications ({len(data)})", box=box.SIMPLE_HEAD)
    for column in ("id", "change", "event", "to", "channel", "state", "tries", "error"):
        table.add_column(column)
    for row in data:
        table.add_row(str(row["id"]), row["change"] or "-", row["event"], row["recipient"], row["channel"],
                      row["state"], str(row["attempts"]), row["last_error"][:60])
    console.print(table)


@notifications_app.command("retry")
@exits_cleanly
def notifications_retry(notification_id: int = typer.Argument(..., help="Notification id (see the listing).")) -> None:
    """Queue a failed notification again and try to send it now."""
    app_ctx = context()
    notifier = Notifier(app_ctx.services, app_ctx.settings)
    row = notifier.outbox.retry(notification_id)
    notifier.deliver(change_key=row.change_key)
    after = next(n for n in notifier.outbox.list(change_key=row.change_key, limit=10_000) if n.id == notification_id)
    console.print(f"notification {notification_id}: {after.state}"
                  + (f" ({after.last_error})" if after.last_error else ""))
    if after.state == "failed":
        raise typer.Exit(1)


# ---- audit and policy ----------------------------------------------------------------------------------


@audit_app.command("verify")
@exits_cleanly
def audit_verify(json_output: bool = JsonOption) -> None:
    """Recompute the audit hash chain: exit 0 when intact, 1 naming the first broken event."""
    ctx = context()
    with ctx.db.read() as session:
        result = verify_chain(session)
    if json_output:
        print_json(result.__dict__)
    elif result.ok:
        console.print(f"audit chain intact: {result.count} events")
    else:
        print_error(f"audit chain broken at event {result.first_broken_seq}: {result.reason}")
    if not result.ok:
        raise typer.Exit(1)


@policy_app.command("show")
@exits_cleanly
def policy_show(json_output: bool = JsonOption) -> None:
    """Who must approve what, per change type and risk level."""
    org = context().org
    rows = []
    for change_type, policy in org.policies.types.items():
        for level in ("low", "medium", "high"):
            required = required_approvals(change_type, level, org.policies, org.directory)
            rows.append({
                "type": change_type,
                "risk": level,
                "approvals": [{"role": r.role, "count": r.count, "holders": org.directory.holders(r.role)}
                              for r in required],
                "approval_sla_hours": policy.approval_sla.total_seconds() / 3600,
                "window": policy.window,
                "notice_days": policy.notice.total_seconds() / 86400,
                "documentation": policy.documentation,
                "testing": policy.testing,
                "requires": policy.requires,
                "review": policy.review,
                "review_within_hours": policy.review_within.total_seconds() / 3600,
            })
    if json_output:
        print_json({"policy_version": org.policies.version, "rules": rows})
        return
    table = Table(title=f"approval policy {org.policies.version[:12]}")
    for column in ("type", "risk", "approvals (holders)", "SLA", "window"):
        table.add_column(column)
    for row in rows:
        approvals = "; ".join(f"{a['count']} x {a['role']} ({', '.join(a['holders'])})" for a in row["approvals"])
        table.add_row(row["type"], row["risk"], approvals, f"{row['approval_sla_hours']:g} h", row["window"])
    console.print(table)
    console.print("The requester never approves their own change; one person fills one role per change.")


from ._demo import demo  # noqa: E402  (registered last: they drive the commands above)
from ._up import up  # noqa: E402

app.command()(demo)
app.command()(exits_cleanly(up))

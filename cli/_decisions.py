"""What people do at a gate: `approve`, `reject`, `confirm` a checklist item, answer a `canary` gate, see what is
`pending`, and print an `approval-code` (operators)."""

from __future__ import annotations

import os
from typing import Any, Optional

import typer
from rich import box
from rich.table import Table

from models import (Act, ChangeRequest, ChangeState, Decision, InputError, WorkOutcome, WorkStage,
                    interrupted_check_question, responsible, utcnow)
from notifications import Notifier

from ._context import context
from ._flows import nudge_run, paused_gates, waiting_gate
from ._options import JsonOption
from ._output import console, exits_cleanly, print_json
from ._render import change_row


app = typer.Typer()


def _decide(key: str, approver: str, code: str, role: Optional[str], comment: str, decision: Decision,
            json_output: bool) -> None:
    services = context().services
    result = services.approvals.decide(key, approver=approver, decision=decision, code=code, role=role, comment=comment)
    nudged = nudge_run(result.change, "approval")
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
    person: str = typer.Option(..., "--as", help="Who confirms (a person in the approver directory)."),
    code: str = typer.Option(..., "--code", help="Your personal approval code for this change."),
    note: str = typer.Option("", help="What you checked."),
) -> None:
    """Confirm a manual checklist item; the change's run continues when its phase is complete."""
    services = context().services
    change = services.changes.get(key)
    checklist = services.org.checklist_of(change)
    found = checklist.find(item) if checklist else None
    phase, definition = found if found else ("", None)
    step = max(services.checklists.done_steps(key), default=1) if phase == "during" else 0
    if definition is not None and definition.kind == "command" and not definition.idempotent and \
            item in services.recovery.checks_awaiting_a_person(key, phase, step):
        definition = interrupted_check_question(definition)  # a crash interrupted it: did it pass?
    if definition is None or definition.kind != "manual":
        known = [i.id for p in ("pre", "during", "post") for i in (checklist.items(p) if checklist else [])
                 if i.kind == "manual"]
        raise InputError(f"item: {item!r} is not a manual item of {change.key}'s checklist "
                         f"({', '.join(known) or 'it has none'})")
    written = services.checklists.confirm_item(key, person=person, code=code, phase=phase, step=step,
                                               item=definition, note=note)
    nudged = nudge_run(services.changes.get(key), "checklist")
    console.print(f"{change.key} {phase} {item}: {'confirmed' if written else 'already recorded'}"
                  f"{'; the run continues' if nudged else ''}")


@app.command()
@exits_cleanly
def work(
    key: str = typer.Argument(..., help="Change key."),
    stage: WorkStage = typer.Argument(..., help="What you did by hand: implemented, verified or rolled_back."),
    person: str = typer.Option(..., "--as", help="Who did it (an implementer the change's policy names)."),
    code: str = typer.Option(..., "--code", help="Your personal code for this change."),
    failed: bool = typer.Option(False, "--failed", help="It did not work (say what happened in --note)."),
    note: str = typer.Option("", help="What you did or saw (recorded)."),
    step: Optional[int] = typer.Option(None, min=1, help="A step interrupted by a crash: did it take effect?"),
) -> None:
    """Confirm manual work on a change without automation (or a step a crash interrupted); its run continues."""
    from flows import work_gate

    services = context().services
    done = services.work.confirm(key, stage=stage, person=person, code=code, step=step,
                                 outcome=WorkOutcome.failed if failed else WorkOutcome.done, note=note)
    change = services.changes.get(key)
    nudged = nudge_run(change, "work", work_gate(stage, step))
    console.print(f"{change.key} {stage.value.replace('_', ' ')}: {done.outcome.value} by {done.person}"
                  f"{'; the run continues' if nudged else ''}")


@app.command("report-outcome")
@exits_cleanly
def report_outcome(
    key: str = typer.Argument(..., help="Change key."),
    result: str = typer.Option(..., "--result", help="What the pipeline's deployment did: succeeded or failed."),
    evidence: str = typer.Option(..., "--evidence", help="The URL of the pipeline's job, for the record."),
    token_env: str = typer.Option(..., "--token-env", help="The environment variable holding the pipeline's token "
                                  "(never the token on the command line)."),
) -> None:
    """A pipeline that filed a change and deployed it (after `wait --until start`) reports how it went: the
    change's run carries on (verification, or the rollback), and DORA counts the outcome."""
    from flows import work_gate

    token = os.environ.get(token_env, "")
    if not token:
        raise InputError(f"--token-env: the environment variable {token_env} is not set", [("token_env", "not set")])
    services = context().services
    change = services.changes.get(key)
    done = services.work.report_outcome(key, automation=change.requester, token=token, result=result,
                                        evidence=evidence)
    nudged = nudge_run(services.changes.get(key), "work", work_gate(WorkStage.implemented))
    console.print(f"{change.key} implementation reported {done.outcome.value} by {done.person}"
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
    change = services.changes.get(key)
    gate = waiting_gate(change, "canary")
    if gate is None:
        raise InputError(f"{change.key}: its run is not waiting at a canary gate")
    # Recorded here, checked like any answer (the person's code); the run is only asked to look again.
    recorded = services.canary.confirm(key, person=person, code=code, action="roll_back" if roll_back else "proceed",
                                       comment=comment, gate=gate)
    nudged = nudge_run(change, "canary")
    first = "" if recorded["person"] == person else f" (already answered by {recorded['person']})"
    console.print(f"{change.key} {gate}: {recorded['answer'].replace('_', ' ')}{first}"
                  f"{'; the run continues' if nudged else '; the run picks it up within a minute'}")


def people_at_gate(change: ChangeRequest, kind: str, gate: str) -> tuple[str, list[str]] | None:
    """What a run waiting at a work or checklist gate waits for, and who may answer (None for other gates)."""
    services = context().services
    if kind == "work":
        stage, _, step = gate.partition("-s")  # `implemented`, `rolled-back-s2`
        return (f"manual work: confirm {stage.replace('-', ' ')}" + (f" (step {step})" if step else ""),
                services.work.implementers(change.key))
    if kind == "checklist":
        phase, _, step = gate.partition("-")  # `pre-0`: the phase, and the step it runs after
        checklist = services.org.checklist_of(change)
        done = {r.item_id for r in services.checklists.check_results(change.key, phase=phase, step=int(step or 0))}
        items = [item.id for item in (checklist.items(phase) if checklist else [])
                 if item.kind == "manual" and item.id not in done]
        return (f"checklist {phase}: confirm {', '.join(items) or 'its items'}",
                responsible(change, services.org.directory))
    return None


@app.command()
@exits_cleanly
def pending(json_output: bool = JsonOption) -> None:
    """What waits on people (a filing, approvals, manual work, checklist items, reviews), on whom, and since when."""
    ctx = context()
    services = ctx.services
    notifier = Notifier(services, ctx.settings)
    rows: list[dict[str, Any]] = []
    # Filed, and waiting for the person named as requester to confirm it (nothing goes to approvers before).
    within = services.org.policies.confirm_filing_within
    for change in services.changes.list_changes(state=ChangeState.submitted, limit=1000):
        rows.append({"key": change.key, "type": change.type, "title": change.title, "service": change.service,
                     "waiting_since": change.created_at.isoformat(),
                     "deadline": (change.created_at + within).isoformat(), "missing": {}, "approved_by": [],
                     "waiting_on": [change.requester], "waiting_for": "the requester's confirmation of the filing"})
    for change, evaluation in services.approvals.pending_approvals():
        deadline = services.approvals.approval_deadline(change)
        rows.append({
            "key": change.key, "type": change.type, "title": change.title, "service": change.service,
            "waiting_since": change.approval_requested_at.isoformat() if change.approval_requested_at else None,
            "deadline": deadline.isoformat() if deadline else None,
            "missing": evaluation.missing, "approved_by": list(evaluation.approved_by),
            "waiting_on": sorted(notifier.approvers_to_ask(change)), "waiting_for": "approval",
        })
    # Before implementation too: a pre-check a crash interrupted waits in `approved` / `scheduled`.
    under_way = [change for state in (ChangeState.approved, ChangeState.scheduled, ChangeState.implementing,
                                      ChangeState.verifying)
                 for change in services.changes.list_changes(state=state, limit=1000)]
    for change in under_way:
        reasons = services.recovery.needs_a_person(change.key)
        if reasons:
            rows.append({"key": change.key, "type": change.type, "title": change.title, "service": change.service,
                         "waiting_since": None, "deadline": None, "missing": {}, "approved_by": [],
                         "waiting_on": services.work.implementers(change.key), "waiting_for": "; ".join(reasons)})
    # Runs waiting at a gate of people other than approval (issue 30): manual work and checklist items.
    gates = paused_gates(under_way)
    for change in under_way:
        waiting = people_at_gate(change, *gates[change.key]) if change.key in gates else None
        if waiting is not None:
            rows.append({"key": change.key, "type": change.type, "title": change.title, "service": change.service,
                         "waiting_since": None, "deadline": None, "missing": {}, "approved_by": [],
                         "waiting_on": waiting[1], "waiting_for": waiting[0]})
    # Implemented, and waiting for its post-implementation review by the people its type names.
    for change in services.changes.list_changes(state=ChangeState.review_pending, limit=1000):
        rows.append({"key": change.key, "type": change.type, "title": change.title, "service": change.service,
                     "waiting_since": change.updated_at.isoformat(),
                     "deadline": change.review_due_at.isoformat() if change.review_due_at else None,
                     "missing": {}, "approved_by": [], "waiting_on": services.work.reviewers(change.key),
                     "waiting_for": "its post-implementation review"})
    # Action items of reviews, fallen due and still open (issue 33): on their owner.
    for item in services.reviews.open_items(overdue_at=utcnow()):
        change = services.changes.get(item.change_key)
        rows.append({"key": item.change_key, "type": change.type, "title": change.title, "service": change.service,
                     "waiting_since": item.created_at.isoformat(), "deadline": item.due_at.isoformat(),
                     "missing": {}, "approved_by": [], "waiting_on": [item.owner],
                     "waiting_for": f"action item {item.number} (overdue): {item.what[:80]}"})
    if json_output:
        print_json(rows)
        return
    approvals = [r for r in rows if r["waiting_for"] == "approval"]
    table = Table(title=f"waiting for approval ({len(approvals)})", box=box.SIMPLE_HEAD)
    for column in ("key", "type", "title", "since", "deadline", "still needed", "waiting on"):
        table.add_column(column, no_wrap=column in ("key", "since", "deadline"))
    for row in approvals:
        table.add_row(row["key"], row["type"], row["title"], (row["waiting_since"] or "-")[:16].replace("T", " "),
                      (row["deadline"] or "-")[:16].replace("T", " "),
                      ", ".join(f"{n} x {r}" for r, n in row["missing"].items()), ", ".join(row["waiting_on"]))
    console.print(table)
    stuck = [r for r in rows if r["waiting_for"] != "approval"]
    if stuck:
        people = Table(title=f"waiting for a person ({len(stuck)})", box=box.SIMPLE_HEAD)
        for column in ("key", "title", "why", "who"):
            people.add_column(column, no_wrap=column == "key")
        for row in stuck:
            people.add_row(row["key"], row["title"], row["waiting_for"], ", ".join(row["waiting_on"]))
        console.print(people)


@app.command("approval-code")
@exits_cleanly
def approval_code_command(
    key: str = typer.Argument(..., help="Change key."),
    approver: str = typer.Option(..., "--for", help="Whose code: a person of the approver directory."),
    act: Act = typer.Option(Act.approve, "--act", help="What the code is for: approve (or reject), start_early, "
                            "confirm_work, confirm_check, answer_canary, review, withdraw, amend."),
    operator: str = typer.Option(..., "--as", help="Who prints it: a person holding a role of policies.yaml "
                                 "`code_issuers` (default: operator)."),
) -> None:
    """Print someone's personal code for one kind of act, when no personal channel reached them (operators: it
    needs the server secret). Recorded on the change: who printed it, for whom, for which act."""
    console.print(context().services.approvals.issue_code(key, operator=operator, person=approver, act=act))

"""`changeflow policy`: the approval policy in force (`show`), and what a proposed one would have done to the changes
already filed (`what-if`, issue 34)."""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from models import (TEXT_MAX, InputError, Org, RiskLevel, load_proposal, proposed_freeze,
                    required_approvals, utcnow)

from flows import file_change

from ._context import context
from ._options import JsonOption, positive_duration
from ._output import console, exits_cleanly, print_json

policy_app = typer.Typer(help="Approval policies.", no_args_is_help=True)


@policy_app.command("show")
@exits_cleanly
def policy_show(json_output: bool = JsonOption) -> None:
    """Who must approve what, per change type and risk level."""
    ctx = context()
    org = ctx.services.org  # the policy in force (a changed file may wait for its change request)
    in_force = ctx.services.policy_log.in_force()
    rows: list[dict[str, Any]] = []
    for change_type, policy in org.policies.types.items():
        for level in ("low", "medium", "high"):
            required = required_approvals(change_type, RiskLevel(level), org.policies, org.directory)
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
        print_json({"policy_version": org.policies.version, "configured_version": in_force.configured,
                    "pending": in_force.pending, "rules": rows})
        return
    table = Table(title=f"approval policy {org.policies.version[:12]}")
    for column in ("type", "risk", "approvals (holders)", "SLA", "window"):
        table.add_column(column)
    for row in rows:
        approvals = "; ".join(f"{a['count']} x {a['role']} ({', '.join(a['holders'])})" for a in row["approvals"])
        table.add_row(row["type"], row["risk"], approvals, f"{row['approval_sla_hours']:g} h", row["window"])
    console.print(table)
    console.print("The requester never approves their own change; one person fills one role per change.")
    if in_force.pending:
        console.print(in_force.describe(), markup=False)


@policy_app.command("what-if")
@exits_cleanly
def policy_what_if(
    proposed: Path = typer.Argument(..., help="A config directory with the proposed files (policies.yaml, "
                                    "directory.yaml, ...); the files it lacks are the current ones."),
    since: str = typer.Option("90d", help="How far back to replay: the changes filed since then (e.g. 90d)."),
    service: Optional[str] = typer.Option(None, help="Only this service's changes."),
    freeze: list[str] = typer.Option([], help="A proposed freeze START/END (ISO 8601, UTC), for every service; "
                                     "may be given more than once."),
    json_output: bool = JsonOption,
    csv_output: bool = typer.Option(False, "--csv", help="One row per change that would differ, as CSV."),
) -> None:
    """What a proposed policy would have decided for the changes filed in the range, beside the current one:
    refused at submit and why, other approvers, risk that moves, approvers who would not have sufficed, the notice
    it would have added. Writes nothing."""
    back = positive_duration(since, "since")
    freezes = [proposed_freeze(text, n) for n, text in enumerate(freeze, 1)]
    ctx = context()
    org = _proposal(proposed)
    until = utcnow()
    report = ctx.services.what_if.compare(org.policies, org.directory, until - back, until, service, freezes)
    rows = [{"key": r.key, "title": r.title, "service": r.service, "type": r.type,
             "differences": list(r.differences),
             "added_wait_h": round(r.added_wait.total_seconds() / 3600, 1) if r.added_wait else None}
            for r in report.rows]
    if csv_output:
        writer = csv.writer(sys.stdout)
        writer.writerow(["key", "title", "service", "type", "differences", "added_wait_h"])
        for r, row in zip(report.rows, rows):
            writer.writerow([r.key, r.title, r.service, r.type, "; ".join(r.differences), row["added_wait_h"]])
        return
    hours = {name: round(value.total_seconds() / 3600, 1) if value is not None else None
             for name, value in (("median", report.added_wait_median), ("p90", report.added_wait_p90))}
    totals = {"changes": report.changes, "would_differ": len(rows), "refused": report.refused,
              "approvals_changed": report.approvals_changed, "risk_moved": report.risk_moved,
              "approvers_short": report.approvers_short, "score_rules": report.score_rules,
              "added_wait_median_h": hours["median"],
              "added_wait_p90_h": hours["p90"], "proposed_version": org.policies.version,
              "current_version": ctx.services.org.policies.version}
    if json_output:
        print_json({**totals, "since": report.since.isoformat(), "until": report.until.isoformat(), "changes": rows,
                    "judged": report.changes})
        return
    table = Table(title=f"what-if {org.policies.version[:12]} over {report.changes} changes filed since "
                        f"{report.since:%Y-%m-%d}")
    for column in ("change", "service", "type", "would differ"):
        table.add_column(column)
    for r in report.rows:
        table.add_row(f"{r.key} {r.title}", r.service, r.type, "\n".join(r.differences))
    console.print(table)
    console.print(f"{len(rows)} of {report.changes} would differ: {report.refused} refused at submit, "
                  f"{report.approvals_changed} with other approvals, {report.risk_moved} at another risk level, "
                  f"{report.approvers_short} whose approvers would not have sufficed, {report.score_rules} caught by a "
                  "score rule"
                  + (f"; added notice median {hours['median']} h, p90 {hours['p90']} h" if hours["median"] else ""))


@policy_app.command("propose")
@exits_cleanly
def policy_propose(
    proposed: Path = typer.Argument(..., help="A config directory with the proposed policies.yaml (the files it "
                                    "lacks are the current ones)."),
    person: str = typer.Option(..., "--as", help="Who files the policy change (confirms it with the code sent to "
                               "them, never approves it)."),
    since: str = typer.Option("90d", help="The what-if's range, the change's test evidence."),
    local: bool = typer.Option(False, "--local", help="Record the change without starting its Prefect flow."),
    json_output: bool = JsonOption,
) -> None:
    """File the change request a policy change needs where policies.yaml `policy_changes` is set: its release names
    the proposed version, its description the diff, its test evidence the what-if over the record. Once it is
    approved, the proposed file (installed in the config directory) takes effect."""
    back = positive_duration(since, "since")
    ctx = context()
    in_force = ctx.services.org.policies
    rule = in_force.policy_changes
    if rule is None:
        raise InputError("proposed: the policy in force has no `policy_changes` rule: a changed policies.yaml takes "
                         "effect when it is loaded (recorded: changeflow policy log)", [("proposed", "not needed")])
    org = _proposal(proposed)
    if org.policies.version == in_force.version:
        raise InputError(f"proposed: version {in_force.version[:12]} is the one in force", [("proposed", "no change")])
    until = utcnow()
    report = ctx.services.what_if.compare(org.policies, org.directory, until - back, until)
    share = len(report.rows) / report.changes if report.changes else 0.0
    diff = org.policies.diff_from(in_force.canonical_text(), in_force.version)
    description = (f"Installs policies.yaml version {org.policies.version} in place of {in_force.version}. "
                   f"What it changes (canonical form):\n\n{diff}")
    data = {
        "type": rule.type, "service": rule.service, "requester": person,
        "title": f"Policy version {org.policies.version[:12]}", "release": rule.release(org.policies.version),
        "description": description[:TEXT_MAX - 80] + ("\n(diff cut: see changeflow policy what-if)"
                                                     if len(description) > TEXT_MAX - 80 else ""),
        "implementation_plan": f"Install the proposed policies.yaml (version {org.policies.version[:12]}) in the "
                               "config directory; it takes effect once this change is approved.",
        "rollback_plan": f"Restore version {in_force.version[:12]}: its text is in the audit trail "
                         "(changeflow policy log --diff).",
        "test_evidence": f"changeflow policy what-if over the {report.changes} changes filed since "
                         f"{report.since:%Y-%m-%d}: {len(report.rows)} would differ ({report.refused} refused at "
                         f"submit, {report.approvals_changed} with other approvals, {report.risk_moved} at another "
                         f"risk level, {report.approvers_short} whose approvers would not have sufficed)",
        # The what-if says how many it touches: none, a few, or most changes.
        "risk": {"users_affected": "none" if not report.rows else ("many" if share >= 0.5 else "few"),
                 "complexity": "low", "backout_difficulty": "easy", "tested_in_staging": "yes",
                 "touches_data": "no"},
    }
    change = file_change(ctx.services, data, local=local)
    if json_output:
        print_json({"key": change.key, "state": change.state, "release": change.release,
                    "would_differ": len(report.rows), "judged": report.changes})
        return
    console.print(f"{change.key} filed ({change.state}): policy version {org.policies.version[:12]} takes effect "
                  f"once it is approved ({rule.type} change for {rule.service})")


@policy_app.command("replay")
@exits_cleanly
def policy_replay(
    since: str = typer.Option("90d", help="How far back to replay: the changes filed since then (e.g. 90d)."),
    json_output: bool = JsonOption,
) -> None:
    """The policy in force replayed over the changes filed in the range, each with the clock of its own filing: every
    way its judgement differs from what was recorded (refused at submit, another risk level, too few approvers).
    None: the what-if applies the rules submission applied. Exit 1 when something differs. Writes nothing."""
    back = positive_duration(since, "since")
    until = utcnow()
    replay = context().services.what_if.replay(until - back, until)
    if json_output:
        print_json({"since": (until - back).isoformat(), "until": until.isoformat(), "changes": replay.changes,
                    "differences": replay.differences})
    else:
        for line in replay.differences:
            console.print(line, markup=False, highlight=False)
        console.print(f"{replay.changes} changes filed since {until - back:%Y-%m-%d %H:%M} UTC replayed: "
                      f"{len(replay.differences)} differences from the record")
    if replay.differences:
        raise typer.Exit(1)


@policy_app.command("log")
@exits_cleanly
def policy_log(
    diff: bool = typer.Option(False, "--diff", help="Show what each version changed, line by line."),
    json_output: bool = JsonOption,
) -> None:
    """Every policy version that governed changes: when it was first loaded, by which process, the version it
    replaced (and with --diff what it changed). Loading the config here records the one in force if it is new."""
    ctx = context()
    ctx.services.policy_log.record_loaded("changeflow policy log")
    changes = ctx.services.policy_log.log()
    in_force = ctx.services.policy_log.in_force()
    if json_output:
        print_json([{"seq": c.seq, "at": c.at.isoformat(), "recorded_by": c.recorded_by, "version": c.version,
                     "previous": c.previous, "diff": c.diff, "change": c.change} for c in changes])
        return
    table = Table(title="policy versions")
    for column in ("event", "first loaded", "by", "version", "replaced", "shipped by"):
        table.add_column(column)
    for c in changes:
        table.add_row(str(c.seq), f"{c.at:%Y-%m-%d %H:%M} UTC", c.recorded_by, c.version[:12],
                      (c.previous or "-")[:12], c.change or "-")
    console.print(table)
    if in_force.pending:
        console.print(in_force.describe(), markup=False)
    if diff:
        for c in changes:
            if c.diff:
                console.print(c.diff, markup=False, highlight=False)


def _proposal(proposed: Path) -> Org:
    return load_proposal(context().settings.config_dir, proposed)

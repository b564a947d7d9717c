"""`changeflow policy`: the approval policy in force (`show`), and what a proposed one would have done to the changes
already filed (`what-if`, issue 34)."""

from __future__ import annotations

import csv
import shutil
import sys
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from models import InputError, RiskLevel, WindowSpec, load_org, parse_duration, required_approvals, utcnow

from ._context import context
from ._options import JsonOption, required_time
from ._output import console, exits_cleanly, print_json

policy_app = typer.Typer(help="Approval policies.", no_args_is_help=True)


@policy_app.command("show")
@exits_cleanly
def policy_show(json_output: bool = JsonOption) -> None:
    """Who must approve what, per change type and risk level."""
    org = context().org
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
    back = _duration("since", since)
    freezes = [_freeze(text, n) for n, text in enumerate(freeze, 1)]
    if not proposed.is_dir():
        raise InputError(f"proposed: {proposed} is not a directory", [("proposed", "not a directory")])
    ctx = context()
    with tempfile.TemporaryDirectory(prefix="changeflow-what-if-") as folder:
        # The proposed files over a copy of the current config: a proposal names only what it changes.
        merged = Path(folder) / "config"
        shutil.copytree(ctx.settings.config_dir, merged)
        for item in proposed.iterdir():
            (shutil.copytree(item, merged / item.name, dirs_exist_ok=True) if item.is_dir()
             else shutil.copyfile(item, merged / item.name))
        org = load_org(merged)
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
              "approvers_short": report.approvers_short, "added_wait_median_h": hours["median"],
              "added_wait_p90_h": hours["p90"], "proposed_version": org.policies.version,
              "current_version": ctx.org.policies.version}
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
                  f"{report.approvers_short} whose approvers would not have sufficed"
                  + (f"; added notice median {hours['median']} h, p90 {hours['p90']} h" if hours["median"] else ""))


@policy_app.command("replay")
@exits_cleanly
def policy_replay(
    since: str = typer.Option("90d", help="How far back to replay: the changes filed since then (e.g. 90d)."),
    json_output: bool = JsonOption,
) -> None:
    """The policy in force replayed over the changes filed in the range, each with the clock of its own filing: every
    way its judgement differs from what was recorded (refused at submit, another risk level, too few approvers).
    None: the what-if applies the rules submission applied. Exit 1 when something differs. Writes nothing."""
    back = _duration("since", since)
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
    if json_output:
        print_json([{"seq": c.seq, "at": c.at.isoformat(), "recorded_by": c.recorded_by, "version": c.version,
                     "previous": c.previous, "diff": c.diff} for c in changes])
        return
    table = Table(title="policy versions")
    for column in ("event", "first loaded", "by", "version", "replaced"):
        table.add_column(column)
    for c in changes:
        table.add_row(str(c.seq), f"{c.at:%Y-%m-%d %H:%M} UTC", c.recorded_by, c.version[:12],
                      (c.previous or "-")[:12])
    console.print(table)
    if diff:
        for c in changes:
            if c.diff:
                console.print(c.diff, markup=False, highlight=False)


def _duration(field: str, text: str) -> timedelta:
    try:
        value = parse_duration(text)
    except ValueError:
        value = None
    if not isinstance(value, timedelta):
        raise InputError(f"{field}: {text!r} is not a duration like 90d", [(field, "not a duration")])
    return value


def _freeze(text: str, number: int) -> WindowSpec:
    """`START/END` as a proposed freeze for every service (named "proposed freeze N")."""
    start, slash, end = text.partition("/")
    if not slash:
        raise InputError(f"freeze: {text[:60]!r} is not START/END (e.g. 2026-12-20T00:00/2027-01-04T00:00)",
                         [("freeze", "not START/END")])
    starts_at, ends_at = required_time(start, "freeze"), required_time(end, "freeze")
    if ends_at <= starts_at:
        raise InputError(f"freeze: {text!r} ends before it starts", [("freeze", "ends before it starts")])
    return WindowSpec("freeze", starts_at, ends_at, f"proposed freeze {number}", freeze=True)

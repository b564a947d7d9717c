"""For auditors: `audit verify` and `report`."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Optional

import typer

from models import (
    HASH_SCHEME,
    Checkpoint,
    InputError,
    export_bundle,
    guard_problems,
    record_problems,
    utcnow,
    verify_bundle,
    verify_chain,
)

from ._context import context
from ._options import JsonOption, OutputFormat, parse_time
from ._output import console, exits_cleanly, print_error, print_json
from ._render import emit_rows


app = typer.Typer()


@app.command()
@exits_cleanly
def report(
    name: str = typer.Argument(..., help="dora, compliance, sla, refusals, score or score-trend."),
    since: Optional[str] = typer.Option(None, help="Start of the range (default: a year before --until)."),
    until: Optional[str] = typer.Option(None, help="End of the range (default: now)."),
    service: Optional[str] = typer.Option(None, help="Only this service."),
    output: OutputFormat = typer.Option(OutputFormat.table, "--format", help="table, json or csv."),
) -> None:
    """DORA figures, compliance findings, approval SLAs, refusals or the change success score over a time range."""
    ctx = context()
    # The audit chain part of the compliance report starts at the last valid signed checkpoint.
    anchor = ctx.anchors.latest_valid()
    result = ctx.services.reports.run(name, parse_time(since, "since"), parse_time(until, "until"), service,
                                      chain_anchor=(anchor.seq, anchor.hash) if anchor else None)
    rows, fields = result.rows, result.fields
    emit_rows(rows, fields, output, f"{name} report ({len(rows)} rows)",
              optional_in_table=tuple(f for f in fields if f.endswith(("_p90_h", "_per_day", "unrestored_failures"))))


audit_app = typer.Typer(help="The tamper-evident audit trail.", no_args_is_help=True)


@audit_app.command("verify")
@exits_cleanly
def audit_verify(
    json_output: bool = JsonOption,
    prefect: bool = typer.Option(False, "--prefect", help="Also check the checkpoints anchored as Prefect artifacts "
                                                          "(needs the Prefect server)."),
    incremental: bool = typer.Option(False, "--incremental", help="Recompute only the events after the last "
                                     "valid signed checkpoint (fast; an edit older than it that left the hashes "
                                     "alone is caught only without this option)."),
) -> None:
    """Recompute the audit hash chain, check it against every signed checkpoint and the change and approval rows
    against it: exit 0 when all hold, 1 naming the first broken event, the rewritten range, the row the chain
    does not explain or the missing guard."""
    ctx = context()
    start = ctx.anchors.latest_valid() if incremental else None
    with ctx.db.read() as session:
        result = verify_chain(session, after=(start.seq, start.hash) if start else None)
        records = record_problems(session)
    # A chain that verifies today proves little if the guards that keep it append-only are gone, or if someone
    # who can write the database recomputed it: the signed checkpoints outside the database catch that.
    guards = guard_problems(ctx.db.read_engine)
    anchored = ctx.anchors.verify(result, elsewhere=prefect_checkpoints() if prefect else [])
    if json_output:
        print_json({**result.__dict__, "guard_problems": guards, "record_problems": records,
                    "checkpoints": anchored.checkpoints,
                    "latest_checkpoint": anchored.latest.to_dict() if anchored.latest else None,
                    "checkpoint_problems": anchored.problems})
    else:
        if result.ok:
            console.print(f"audit chain intact: {result.count} events"
                          + (f" (recomputed after the checkpoint of event {start.seq})" if start else ""))
            if result.legacy_events:
                first = (start.seq if start else 0) + 1
                console.print(f"events {first}-{first + result.legacy_events - 1} are hashed under scheme 1 (written "
                              f"before the switch), the rest under scheme {HASH_SCHEME}")
        else:
            print_error(f"audit chain broken at event {result.first_broken_seq}: {result.reason}")
        for problem in guards:
            print_error(f"audit guard: {problem} (`changeflow db upgrade` restores it)")
        for problem in anchored.problems:
            print_error(f"audit checkpoint: {problem}")
        for problem in records:
            print_error(f"audit record: {problem}")
        if anchored.latest is not None and anchored.ok:
            console.print(f"{anchored.checkpoints} signed checkpoints hold (key {anchored.latest.key_id}); the "
                          f"latest anchors event {anchored.latest.seq} ({anchored.latest.to_dict()['at']}), "
                          f"{max(result.count - anchored.latest.seq, 0)} events since are not anchored yet")
        elif anchored.latest is None:
            console.print("no signed checkpoint yet: `changeflow audit checkpoint` signs one")
    if not result.ok or guards or not anchored.ok or records:
        raise typer.Exit(1)


@audit_app.command("checkpoint")
@exits_cleanly
def audit_checkpoint() -> None:
    """Sign a checkpoint of the chain's head now (the escalation sweep signs them as they fall due)."""
    ctx = context()
    checkpoint = ctx.anchors.checkpoint(force=True)
    if checkpoint is None:
        last = ctx.anchors.log.last()
        console.print(f"nothing new since the checkpoint of event {last.seq}" if last else
                      f"no signing key at {ctx.settings.signing_key_file}: run `changeflow init`")
        return
    console.print(f"checkpoint signed: event {checkpoint.seq} {checkpoint.hash[:16]}... -> {ctx.anchors.log.path}")
    if ctx.notifier.witness(checkpoint):
        report = ctx.notifier.deliver()
        console.print(f"sent to {report.sent} witness(es)" + (f", {report.retrying} to retry by the sweep"
                                                                if report.retrying else ""))


def prefect_checkpoints() -> list[Checkpoint]:
    from flows import anchored_checkpoints

    return anchored_checkpoints()


@audit_app.command("export")
@exits_cleanly
def audit_export(
    file: Path = typer.Argument(..., help="Where to write the bundle (JSON Lines)."),
    since: Optional[str] = typer.Option(None, help="Start of the range (default: a week before --until)."),
    until: Optional[str] = typer.Option(None, help="End of the range (default: now)."),
) -> None:
    """Write an audit bundle an auditor checks offline with `changeflow audit verify-bundle`."""
    ctx = context()
    end = parse_time(until, "until") or utcnow()
    start = parse_time(since, "since") or end - timedelta(days=7)
    if start >= end:
        raise InputError("--since: must be before --until", [("since", "after until")])
    summary = export_bundle(ctx.db, ctx.anchors, start, end, file)
    console.print(f"{summary.path}: {summary.in_range} events in range ({summary.events} from the checkpoint of "
                  f"event {summary.anchor_seq} to the chain's head), {summary.checkpoints} checkpoints, "
                  f"{summary.changes} changes")


@audit_app.command("verify-bundle")
@exits_cleanly
def audit_verify_bundle(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="A bundle from `changeflow audit export`."),
    public_key: Optional[Path] = typer.Option(None, exists=True, dir_okay=False,
                                              help="The audit public key you hold (default: the bundle's own)."),
    witness: Optional[Path] = typer.Option(None, exists=True, dir_okay=False,
                                           help="The checkpoints a witness received (its webhook bodies or "
                                                "mailbox file, one JSON object a line): a chain rewritten and its "
                                                "checkpoints signed again fails against them."),
) -> None:
    """Check a bundle with no database: the chain from its signed anchor, every checkpoint, the rows. Exit 1
    naming the first problem."""
    report = verify_bundle(file, public_key.read_bytes() if public_key else None, witness)
    for problem in report.problems:
        print_error(f"bundle: {problem}")
    if report.problems:
        raise typer.Exit(1)
    console.print(f"bundle intact: {report.events} events, {report.checkpoints} checkpoints hold (key "
                  f"{report.key_id}); {report.unanchored} events after the last checkpoint are not anchored"
                  + (f"; {report.witnessed} checkpoints agree with the witness" if witness else ""))

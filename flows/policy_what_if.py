"""The policy-what-if deployment (issue 34): a change manager pastes a proposed policies.yaml into the run form (or
names a directory of proposed files the worker reads) and reads, as a Markdown artifact, what it would have done to
the changes filed in the range beside the policy in force. It writes nothing to the change database; a proposal that
does not load ends the run Refused, naming the file and the field."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Completed, State
from pydantic import Field

from flows._heartbeat import heartbeating
from flows._prefect_api import final_state
from flows._wiring import wiring
from models import REFUSED, ChangeflowError, WhatIfReport, load_proposal, proposed_freeze, utcnow

# The artifact lists this many changes; the totals count them all (the CLI's --csv has every one).
ROWS_SHOWN = 200


# Checked in the body, not by Prefect before it: bad input ends the run Refused with the field, not Failed.
@flow(name="policy-what-if", log_prints=True, validate_parameters=False)
@heartbeating
def policy_what_if(
    policies_yaml: Annotated[str, Field(description="The proposed policies.yaml, pasted whole (empty: the files "
                                                    "of proposed_dir)")] = "",
    proposed_dir: Annotated[str, Field(description="A directory the worker reads holding the proposed files "
                                                   "(policies.yaml, directory.yaml, ...); empty: none")] = "",
    since_days: Annotated[int, Field(description="Replay the changes filed in this many days back")] = 90,
    service: Annotated[str | None, Field(description="Only this service's changes")] = None,
    freezes: Annotated[list[str] | None, Field(description="Proposed freezes, each START/END in ISO 8601 UTC, "
                                                           "e.g. 2026-12-20T00:00/2027-01-04T00:00")] = None,
) -> State:
    services = wiring().services
    try:
        if not policies_yaml.strip() and not proposed_dir.strip():
            raise ChangeflowError("policies_yaml: paste the proposed policies.yaml, or name proposed_dir")
        if not 1 <= int(since_days) <= 3650:
            raise ChangeflowError(f"since_days: {since_days} is not between 1 and 3650")
        proposal = load_proposal(wiring().settings.config_dir, Path(proposed_dir) if proposed_dir.strip() else None,
                                 policies_yaml)
        proposed_freezes = [proposed_freeze(text, n) for n, text in enumerate(freezes or [], 1)]
    except (ChangeflowError, ValueError) as exc:
        get_run_logger().error("policy what-if refused: %s", exc)
        return final_state(REFUSED, f"policy what-if refused: {exc}")
    until = utcnow()
    report = services.what_if.compare(proposal.policies, proposal.directory, until - timedelta(days=int(since_days)),
                                      until, service or None, proposed_freezes)
    create_markdown_artifact(key="policy-what-if", description="what the proposed policy would have decided",
                             markdown=what_if_markdown(report, services.org.policies.version,
                                                       proposal.policies.version))
    return Completed(message=f"{len(report.rows)} of {report.changes} changes would differ "
                             f"({report.refused} refused at submit)")


def what_if_markdown(report: WhatIfReport, current: str, proposed: str) -> str:
    """The totals, then one row per change that would differ (the first ROWS_SHOWN)."""
    def hours(value: timedelta | None) -> str:
        return f"{value.total_seconds() / 3600:.1f} h" if value is not None else "-"

    lines = [f"# Policy what-if: {proposed[:12]} beside {current[:12]}", "",
             f"Changes filed {report.since:%Y-%m-%d %H:%M} to {report.until:%Y-%m-%d %H:%M} UTC, judged with the "
             "rules submission applies: **" f"{len(report.rows)} of {report.changes}** would differ.", "",
             "| refused at submit | other approvals | other risk level | approvers would not suffice | score rule | "
             "added wait median | added wait p90 |", "|---|---|---|---|---|---|---|",
             f"| {report.refused} | {report.approvals_changed} | {report.risk_moved} | {report.approvers_short} | "
             f"{report.score_rules} | {hours(report.added_wait_median)} | {hours(report.added_wait_p90)} |", ""]
    if report.rows:
        lines += ["| change | service | type | would differ | added wait |", "|---|---|---|---|---|"]
        lines += [f"| {r.key} {_cell(r.title)} | {_cell(r.service)} | {r.type} | "
                  f"{'<br>'.join(_cell(d) for d in r.differences)} | {hours(r.added_wait)} |"
                  for r in report.rows[:ROWS_SHOWN]]
        if len(report.rows) > ROWS_SHOWN:
            lines.append(f"\n{len(report.rows) - ROWS_SHOWN} more: `changeflow policy what-if DIR --csv` lists all.")
    else:
        lines.append("No change filed in the range would have been decided differently.")
    return "\n".join(lines)


def _cell(text: str) -> str:
    """Text in a table cell: a pipe or a line break would end the cell (a title is the requester's)."""
    return text.replace("|", "\\|").replace("\n", " ")

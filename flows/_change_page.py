"""A change's page in the Prefect UI (issue 30): one Markdown artifact per change run, `change-chg-000123`, updated
at every step of the change (state, who approved and who is still needed, its window, the checklist, the canary's
weights and metrics as a chart, the change's runs), so a change manager reads the change where they watch its run.

Only what the change record already shows goes here: never a code or a link token (Prefect keeps artifacts where
anyone with UI access reads them, DESIGN.md "Trust boundaries")."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import timedelta
from statistics import fmean
from uuid import UUID

from prefect import get_client, get_run_logger
from prefect.client.schemas.actions import ArtifactCreate, ArtifactUpdate
from prefect.client.schemas.filters import (ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey, FlowRunFilter,
                                            FlowRunFilterName)
from prefect.runtime import flow_run

from flows._wiring import wiring
from models import ChangeRequestView, ChangeState, Services

BAR_WIDTH = 20  # characters of a 100 % bar in the canary chart


def page_key(change_key: str) -> str:
    return f"change-{change_key.lower()}"  # artifact keys: lowercase letters, digits and dashes


# What this process already knows of each page, so that an update costs one call: the artifact's id, and the
# change's runs (read once per process: a run is renamed for its change once, and restarted rarely).
_PAGE_IDS: dict[tuple[str, str], UUID] = {}
_RUNS: dict[str, list[tuple[str, str, str]]] = {}


def publish_change_page(key: str, view: ChangeRequestView | None = None, *, run_id: str | None = None,
                        ending: str | None = None) -> None:
    """Write the change's page (from `view` when the caller has just read it): created once per run, then updated
    in place (one artifact, its latest content). `run_id`: the change's run, when another run writes its page (the
    sweep, after it expired or cancelled the change while its run was suspended). `ending`: the state the run is
    about to end in (its last write comes before Prefect records it). A page that cannot be written is logged and
    skipped: it shows the record, it never decides anything."""
    services = wiring().services
    try:
        if key not in _RUNS:
            _RUNS[key] = asyncio.run(_runs_of(key))
        this_run = run_id or str(flow_run.id)
        runs = [(rid, name, ending if ending and rid == this_run else state) for rid, name, state in _RUNS[key]]
        markdown = change_page(services, view or services.changes.view(key), runs=runs)
        asyncio.run(_write(page_key(key), markdown, f"{key}: the change as it stands", run_id))
    except Exception as exc:  # noqa: BLE001 - the page is a view; the change goes on without it
        get_run_logger().warning("the page of %s was not updated: %s", key, exc)


async def _write(artifact_key: str, markdown: str, description: str, of_run: str | None = None) -> None:
    run_id = UUID(of_run or str(flow_run.id))
    async with get_client() as client:
        known = _PAGE_IDS.get((artifact_key, str(run_id)))
        if known is None:
            existing = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[artifact_key]),
                                               flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])), limit=1)
            if existing:
                known = existing[0].id
            else:
                created = await client.create_artifact(ArtifactCreate(
                    key=artifact_key, type="markdown", data=markdown, description=description, flow_run_id=run_id))
                _PAGE_IDS[(artifact_key, str(run_id))] = created.id
                return
            _PAGE_IDS[(artifact_key, str(run_id))] = known
        await client.update_artifact(known, ArtifactUpdate(data=markdown, description=description))


async def _runs_of(key: str) -> list[tuple[str, str, str]]:
    """The change's runs (named `CHG-000123 ...`, issue 30): (id, name, state name), oldest first."""
    async with get_client() as client:
        runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=key)), limit=20)
    return sorted(((str(r.id), r.name, r.state.name if r.state else "") for r in runs if r.name.startswith(key)),
                  key=lambda run: run[1])


def change_page(services: Services, view: ChangeRequestView, *, runs: list[tuple[str, str, str]]) -> str:
    """The page's Markdown, from the change record."""
    state = view.state.value.replace("_", " ")
    lines = [f"# {view.key} {view.title}", "",
             f"**State:** {state}" + (f" ({view.outcome.replace('_', ' ')})" if view.outcome else "")
             + f" · {view.type} change on **{view.service}**"
             + (f" in **{view.environment}**" if view.environment else "") + f", requested by {view.requester}"
             + f" · risk **{view.risk_level.value}** ({view.risk_score})", ""]
    if view.state is ChangeState.awaiting_approval:
        lines.append(f"**Still needed:** {services.approvals.evaluation(view.key).describe_missing()}")
    decided = [f"{a.approver} ({a.role}, {a.decision})" for a in view.approvals]
    lines.append(f"**Decided:** {', '.join(decided) or 'nobody yet'}")
    if view.planned_start:
        lines.append(f"**Window:** {view.planned_start:%Y-%m-%d %H:%M} to "
                     f"{view.planned_end:%Y-%m-%d %H:%M} UTC" if view.planned_end else
                     f"**Window:** from {view.planned_start:%Y-%m-%d %H:%M} UTC")
    if view.release:
        lines.append(f"**Release:** {view.release}" + (f", shipped first by {view.promoted_from}"
                                                        if view.promoted_from else ""))
    if view.rolls_back or view.rolled_back_by:
        lines.append(f"**Rolls back:** {view.rolls_back}" if view.rolls_back else
                     f"**Rolled back by:** {view.rolled_back_by}")
    if view.review_due_at and view.state is ChangeState.review_pending:
        lines.append(f"**Review due:** {view.review_due_at:%Y-%m-%d %H:%M} UTC")
    lines.append("")
    if view.checklist_results:
        lines += ["## Checklist", "", "| phase | item | result | by | detail |", "|---|---|---|---|---|"]
        for result in view.checklist_results:
            verdict = "passed" if result["passed"] else ("FAILED" if result["required"] else "failed (advisory)")
            lines.append(f"| {result['phase']} | {result['title']} | {verdict} | {result.get('actor') or '-'} | "
                         f"{_cell(result.get('detail') or '')} |")
        lines.append("")
    if view.canary_steps:
        lines += ["## Canary", "", "```", *canary_chart(services, view), "```", ""]
    watched = watch_lines(services, view)
    if watched:
        lines += ["## Post-change watch", "", *watched, ""]
    lines += ["## Timeline", "", "| when (UTC) | who | what |", "|---|---|---|"]
    for event in view.events[-15:]:
        what = event.action.replace("_", " ") + (f" -> {event.to_state}" if event.to_state else "")
        lines.append(f"| {event.occurred_at:%Y-%m-%d %H:%M:%S} | {event.actor} | {what} |")
    if runs:
        ui = wiring().settings.prefect_ui_url.rstrip("/")
        lines += ["", "## Runs", ""] + [f"- [{name}]({ui}/runs/flow-run/{run_id}): {state_name}"
                                        for run_id, name, state_name in runs]
    return "\n".join(lines) + "\n"


def canary_chart(services: Services, view: ChangeRequestView) -> list[str]:
    """Each decided step as a bar of its weight, with its decision and each metric's mean on the canary and on
    stable: the rollout at a glance."""
    means: dict[tuple[int, str, str], list[float]] = defaultdict(list)
    for row in services.canary.measurements(view.key):
        if row.value is not None:
            means[(row.step, row.metric, row.version)].append(row.value)
    chart = []
    for decision in view.canary_steps:
        step, weight = int(decision.get("step", 0)), int(decision.get("weight", 0))
        bar = "█" * round(BAR_WIDTH * weight / 100)
        metrics = sorted({metric for (s, metric, _) in means if s == step})
        shown = "; ".join(f"{metric} {_mean(means, step, metric, 'canary')} vs {_mean(means, step, metric, 'stable')}"
                          for metric in metrics)
        chart.append(f"step {step} {weight:>3} % {bar:<{BAR_WIDTH}} {decision.get('action', '')}"
                     + (f"  ({shown})" if shown else ""))
    return chart


def watch_lines(services: Services, view: ChangeRequestView) -> list[str]:
    """The watch after verification (issue 33): how it is set up, each metric's mean and worst against its limit,
    and its verdict once there is one. Empty for a change that was not watched (yet)."""
    started = next((e for e in view.events if e.action == "watch_started"), None)
    if started is None:
        return []
    setup = started.data
    ends = started.occurred_at + timedelta(seconds=float(setup.get("duration_s", 0)))
    lines = [f"**Watched** from {started.occurred_at:%Y-%m-%d %H:%M:%S} to {ends:%H:%M:%S} UTC by the analysis "
             f"`{setup.get('analysis')}`, every {setup.get('interval_s'):g} s; on a breach: "
             f"{str(setup.get('on_breach', '')).replace('_', ' ')}", ""]
    values: dict[str, list[float]] = defaultdict(list)
    for row in services.watch.measurements(view.key):
        if row.value is not None:
            values[row.metric].append(row.value)
    limits = setup.get("limits", {})
    lines += [f"- {metric}: {len(values.get(metric, []))} measured, mean "
              + (f"{fmean(values[metric]):.3g}, worst {max(values[metric]):.3g}" if values.get(metric) else "-")
              + f" (fails when {limit})" for metric, limit in limits.items()]
    verdict = services.watch.decision(view.key)
    lines += ["", f"**Verdict:** {verdict['action']}: {'; '.join(verdict.get('reasons', []))}" if verdict
              else "**Verdict:** still watching"]
    return lines


def _mean(means: dict[tuple[int, str, str], list[float]], step: int, metric: str, version: str) -> str:
    values = means.get((step, metric, version))
    return f"{fmean(values):.3g}" if values else "-"


def _cell(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ")[:120]


def publish_runbook(key: str) -> None:
    """The runbook the change follows, as it was filed (issue 33): a Markdown artifact, `runbook-chg-000123`, beside
    the change's page when its implementation starts. A runbook holds no secret."""
    from prefect.artifacts import create_markdown_artifact

    runbook = wiring().services.runbooks.of(key)
    if runbook is None:
        return
    try:
        create_markdown_artifact(
            key=f"runbook-{key.lower()}", description=f"{key} follows the runbook {runbook.name} ({runbook.version})",
            markdown=f"> **{key}** follows the runbook `{runbook.name}`, version `{runbook.version}` (as filed)\n\n"
                     f"{runbook.text}")
    except Exception as exc:  # noqa: BLE001 - the runbook is on the record; its artifact is a view of it
        get_run_logger().warning("%s: the runbook artifact was not written: %s", key, exc)

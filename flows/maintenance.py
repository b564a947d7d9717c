"""Scheduled maintenance: an announcement its window's notice ahead (48 h; quarterly two weeks: policies.yaml
`windows:`), a standard change that asks for approval and tells the stakeholders, then the window run: only if
approved, activities wrapped in the checklist, inside the window.

The window can be given explicitly (`window_start`, `window_minutes`): that is how a test compresses the clock
and how an operator re-runs a window by hand.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.states import State
from sqlalchemy import create_engine

from flows._heartbeat import heartbeating
from flows._commands import run_command
from flows._endings import run_ended
from flows._prefect_api import change_run_name, change_run_tags, name_run
from flows._json_logs import trace_change
from flows._wiring import run_attempt, wiring
from flows.checklists import run_phase
from models import (ChangeState, InputError, PolicyViolation, Rerun, WindowPlan, WindowSchedule, WindowSpec,
                    next_window, rerun_of, stakeholders, superseded, utcnow)

REQUESTER = "maintenance"


def window_of(kind: str) -> tuple[WindowSchedule, WindowPlan]:
    """The window named `kind` (policies.yaml) and what runs in it (maintenance.yaml)."""
    org = wiring().services.org
    plans = org.maintenance.windows if org.maintenance else {}
    if kind not in plans or kind not in org.policies.windows:
        raise InputError(f"kind: no maintenance window named {kind!r} (maintenance.yaml has "
                         f"{', '.join(plans) or 'none'})", [("kind", "unknown window")])
    return org.policies.windows[kind], plans[kind]


def environment_of(kind: str) -> str:
    """The environment whose changes run in the window `kind` (the first of several; the default for none)."""
    policies = wiring().services.org.policies
    return next(iter(policies.environments_with(kind)), policies.default_environment)


def resolve_window(kind: str, window_start: datetime | None, window_minutes: float | None, *,
                   at_start: bool) -> WindowSpec:
    schedule, _ = window_of(kind)
    if window_start is not None:
        length = timedelta(minutes=window_minutes) if window_minutes else schedule.length
        return WindowSpec(kind, window_start, window_start + length)
    # A scheduled window run starts at the window's start: look back a little to find "this" window.
    schedules = wiring().services.org.policies.windows
    return next_window(schedules, kind, utcnow() - (timedelta(hours=1) if at_start else timedelta(0)))


def window_key(window: WindowSpec) -> str:
    return f"maintenance:{window.kind}:{window.starts_at.isoformat()}"


def _window_context(window: WindowSpec, service: str, title: str) -> dict:
    return {"window": {"kind": window.kind, "service": service, "title": title,
                       "starts_at": f"{window.starts_at:%Y-%m-%d %H:%M}",
                       "ends_at": f"{window.ends_at:%Y-%m-%d %H:%M}"}}


def _audience(change) -> list[str]:
    return stakeholders(wiring().services.org.directory, change.service)


@flow(name="maintenance-announcement", log_prints=True)
@heartbeating
def maintenance_announcement(kind: str = "weekly", window_start: datetime | None = None,
                             window_minutes: float | None = None) -> str | None:
    """Record the coming window as a standard change, ask for its approvals and tell the stakeholders."""
    rt = wiring()
    schedule, plan = window_of(kind)
    window = resolve_window(kind, window_start, window_minutes, at_start=False)
    if window_start is None and window.starts_at - utcnow() > schedule.notice + timedelta(hours=1):
        get_run_logger().info("next %s window %s is further away than its notice: nothing to announce", kind,
                              window.starts_at)
        return None
    # Only a longer window of the same environment covers this one (staging's daily window covers no production day).
    covering = (superseded(window, rt.services.org.policies.windows_in(environment_of(kind)))
                if window_start is None else None)
    if covering is not None:
        get_run_logger().info("the %s window %s falls in the %s window: that one's change covers it", kind,
                              window.starts_at, covering.kind)
        return None
    if window_start is not None:
        # A window given explicitly (ad hoc, or compressed for a test) is not one of the generated ones: recorded
        # as an ad hoc window of the service, its change fits in a window like any other.
        rt.services.scheduling.ensure_window(starts_at=window.starts_at, ends_at=window.ends_at, kind="ad_hoc",
                                             title=f"{plan.title} (ad hoc)", service=plan.service, actor=REQUESTER,
                                             environment=environment_of(kind))
    try:
        change = file_window_change(kind, window)
    except (PolicyViolation, InputError) as exc:
        # A lockdown (issue 32), or an announcement run so late that the window's change no longer has its type's
        # notice (issue 31: stakeholders are told 48 h ahead): the window is not announced, and so does not run.
        get_run_logger().warning("the %s window %s is not announced: %s", kind, window.starts_at, exc)
        return None
    if change.state == ChangeState.submitted.value:
        change = rt.services.approvals.request_approval(change.key)
    rt.notifier.request_approvals(change)
    rt.notifier.announce(change, "maintenance_announced", _audience(change), round_=window.starts_at.isoformat(),
                         extra=_window_context(window, plan.service, plan.title))
    rt.notifier.deliver(change_key=change.key)
    return change.key


def file_window_change(kind: str, window: WindowSpec):
    """The window's standard change, filed once per window (its idempotency key)."""
    rt = wiring()
    _, plan = window_of(kind)
    activities = rt.services.org.maintenance.activities
    return rt.services.changes.submit({
        "type": "standard",
        "title": f"{plan.title} {window.starts_at:%Y-%m-%d %H:%M} UTC",
        "service": plan.service,
        "environment": environment_of(kind),
        "requester": REQUESTER,
        "description": f"Recurring {kind} maintenance window.",
        "implementation_plan": "\n".join(f"{i}. {activities[a].title}" for i, a in enumerate(plan.activities, 1)),
        "rollback_plan": "Each activity is safe to stop; anything that does not fit in the window is stopped, "
                         "recorded and reported.",
        "test_evidence": "Recurring maintenance; previous runs in the change log.",
        "planned_start": window.starts_at.isoformat(),
        "planned_end": window.ends_at.isoformat(),
        "checklist": plan.checklist,
        "risk": plan.risk.model_dump(mode="json"),
    }, idempotency_key=window_key(window))


@task(name="maintenance activity")
def run_activity(name: str, timeout_s: float) -> dict:
    rt = wiring()
    activity = rt.services.org.maintenance.activities[name]
    settings = rt.settings
    started = time.perf_counter()
    if activity.command:
        command = activity.command.replace("{home}", str(settings.home))
        result = run_command(command, timeout_s=timeout_s)
        return {"activity": name, **result.evidence(), "ok": result.ok,
                "seconds": round(time.perf_counter() - started, 2)}
    url = activity.database_url.replace("{database_url}", settings.resolved_database_url)
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                conn.exec_driver_sql(f"SET statement_timeout = {int(timeout_s * 1000)}")
            for statement in filter(None, (part.strip() for part in activity.sql.split(";"))):
                conn.exec_driver_sql(statement)
        return {"activity": name, "sql": activity.sql, "ok": True, "seconds": round(time.perf_counter() - started, 2)}
    except Exception as exc:  # noqa: BLE001 - a failed activity is a result with its reason
        return {"activity": name, "sql": activity.sql, "ok": False, "error": str(exc).splitlines()[0][:300]}
    finally:
        engine.dispose()


@flow(name="maintenance", log_prints=True)
@heartbeating
def maintenance_window(kind: str = "weekly", window_start: datetime | None = None,
                       window_minutes: float | None = None) -> str | State:
    """Run the window's activities if its change was approved; stop at the window's end. The run ends named for
    its change (Closed, Cancelled, ...)."""
    logger = get_run_logger()
    rt = wiring()
    services = rt.services
    _, plan = window_of(kind)
    window = resolve_window(kind, window_start, window_minutes, at_start=True)
    change = services.changes.find_by_idempotency_key(window_key(window))
    if change is not None:
        trace_change(change.key)
    if change is None:
        logger.warning("no announced change for the %s window at %s: nothing runs", kind, window.starts_at)
        return "not announced"
    key = change.key
    from prefect.runtime import flow_run

    # The run is its window's change (issue 30): `CHG-000123 Weekly maintenance 2026-12-13 02:00 UTC`.
    asyncio.run(name_run(str(flow_run.id), change_run_name(key, change.title),
                         change_run_tags(change.type, change.service, change.risk_level)))
    if change.state in (ChangeState.approved.value, ChangeState.scheduled.value, ChangeState.implementing.value):
        # This run drives the change from here on (the announcement's run filed it): a crash of this run is
        # found by the sweep through the change's flow_run_id, recorded and restarted like a change's run.
        services.changes.attach_flow_run(key, str(flow_run.id))
    context = _window_context(window, plan.service, plan.title)
    if change.state in (ChangeState.submitted.value, ChangeState.awaiting_approval.value):
        missing = services.approvals.evaluation(key).describe_missing()
        services.changes.transition(key, ChangeState.cancelled, actor="maintenance",
                                    reason=f"not approved by the window start ({missing} missing)")
        rt.notifier.announce(services.changes.get(key), "maintenance_completed", _audience(change),
                             round_="not-approved",
                             reason="The window did not run: its change was not approved in time.", extra=context)
        rt.notifier.deliver(change_key=key)
        return run_ended(key)
    if change.state == ChangeState.approved.value:
        services.changes.transition(key, ChangeState.scheduled, actor="maintenance",
                                    reason=f"window {window.starts_at}")
    wait = (window.starts_at - utcnow()).total_seconds()
    if wait > 0:
        time.sleep(wait)
    rt.notifier.announce(services.changes.get(key), "maintenance_started", _audience(change), round_="started",
                         extra=context)
    rt.notifier.deliver(change_key=key)

    if services.changes.get(key).state == ChangeState.scheduled.value:
        pre = run_phase(key, "pre")
        if not pre.ok:
            services.changes.transition(key, ChangeState.cancelled, actor="maintenance",
                               reason=f"pre-checklist failed: {', '.join(pre.failed_required)}")
            finish(key, window, context, "pre-checklist failed")
            return run_ended(key)
        try:
            # The same gate as every change: a freeze declared since the approval holds the window.
            services.scheduling.begin_implementation(key, actor="maintenance")
        except PolicyViolation as exc:
            services.changes.transition(key, ChangeState.cancelled, actor="maintenance", reason=str(exc))
            finish(key, window, context, str(exc))
            return run_ended(key)

    if services.changes.get(key).state == ChangeState.implementing.value:
        run_activities(key, plan.activities, window)
    finish(key, window, context, "")
    return run_ended(key)


def run_activities(key: str, names: list[str], window: WindowSpec) -> None:
    services = wiring().services
    progress = create_progress_artifact(progress=0.0, key=f"{key.lower()}-progress",
                                        description=f"{key}: maintenance activities")
    done = services.checklists.done_steps(key)
    interrupted = services.recovery.interrupted_steps(key, attempt=run_attempt())  # by a run that died
    failed = False
    for step, name in enumerate(names, start=1):
        if step not in done:
            remaining = (window.ends_at - utcnow()).total_seconds()
            activity = services.org.maintenance.activities[name]
            rerun = rerun_of(step in interrupted, activity.idempotent)
            if failed:
                outcome = {"activity": name, "ok": False, "skipped": "an earlier activity failed"}
            elif rerun is Rerun.not_blindly:
                # Whether it took effect is unknown, and a window does not wait for a person: skipped, said why.
                outcome = {"activity": name, "ok": False,
                           "skipped": "interrupted by a crash; not run again (declare it idempotent to allow that)"}
            elif remaining <= 1:
                outcome = {"activity": name, "ok": False, "skipped": "window closed before it could start"}
            else:
                if rerun is Rerun.run_again:
                    services.recovery.record_retry(key, step)
                services.recovery.begin_step(key, step, attempt=run_attempt())
                outcome = run_activity(name, min(activity.timeout_s, remaining))
                if not outcome["ok"] and outcome.get("timed_out"):
                    outcome["stopped"] = "stopped at the end of the window"
            services.checklists.record_step(key, step, outcome)
            failed = failed or (not outcome["ok"] and "skipped" not in outcome and "stopped" not in outcome)
            if "skipped" not in outcome:
                run_phase(key, "during", step)
        update_progress_artifact(progress, progress=100.0 * step / len(names))  # type: ignore[arg-type]
    results = list(services.checklists.done_steps(key).values())
    hard_failures = [r for r in results if not r["ok"] and "skipped" not in r and "stopped" not in r]
    if hard_failures:
        services.changes.transition(key, ChangeState.failed, actor="maintenance",
                                    reason=f"activity failed: {', '.join(r['activity'] for r in hard_failures)}",
                                    data={"activities": results},
                                    then=(ChangeState.review_pending, "review the failure"))
        return
    services.changes.transition(key, ChangeState.verifying, actor="maintenance", reason="activities done",
                       data={"activities": results})
    post = run_phase(key, "post")
    if post.ok:
        services.changes.transition(key, ChangeState.completed, actor="maintenance", reason="post-checklist passed")
    else:
        services.changes.transition(key, ChangeState.failed, actor="maintenance",
                                    reason=f"post-checklist failed: {', '.join(post.failed_required)}",
                                    then=(ChangeState.review_pending, "review the failure"))


def finish(key: str, window: WindowSpec, context: dict, note: str) -> str:
    rt = wiring()
    services = rt.services
    change = services.changes.get(key)
    if change.state == ChangeState.completed.value:
        change = services.changes.transition(key, ChangeState.closed, actor="maintenance", reason="window complete")
    results = list(services.checklists.done_steps(key).values())
    not_done = [r["activity"] for r in results if "skipped" in r or "stopped" in r]
    report = note or (f"Not done (reported): {', '.join(not_done)}." if not_done else "All activities done.")
    rows = ["| activity | result | seconds |", "|---|---|---|"] + [
        f"| {r['activity']} | {'ok' if r['ok'] else r.get('skipped') or r.get('stopped') or 'FAILED'} | "
        f"{r.get('seconds', '-')} |" for r in results]
    create_markdown_artifact(key=f"{key.lower()}-maintenance", description=f"{key} maintenance report",
                             markdown=f"# {key} {window.kind} maintenance\n\n{report}\n\n" + "\n".join(rows))
    rt.notifier.announce(change, "maintenance_completed", _audience(change), round_="done", reason=report,
                         extra=context)
    rt.notifier.deliver(change_key=key)
    return change.state

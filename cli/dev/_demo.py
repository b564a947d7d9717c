"""`changeflow demo`: the whole story on the embedded default, through the real flows.

A throw-away HOME (SQLite, console and file notifications), a local Prefect server, the deployments of
prefect.yaml and a process worker, and three canary labs (the sample service as stable + canary, behind nginx
when it is installed). Eight scenarios run side by side (a pipeline waiting on its gate and an abort of a
baking canary among them, `_demo_scenes.py`); approvers answer with their personal codes through
the API the UI's Resume button calls. Everything started is stopped at the end.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import threading
import time
from typing import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import typer
from rich.table import Table

from models import Act, Settings, next_window, parse_action_items, utcnow

from ._canary_lab import Lab, TrafficLoad, nginx_available
from ._demo_approvers import EndpointApprovers
from ._demo_config import DEMO_WATCH_S, INBOX_PERSON, write_demo_config
from ._demo_requests import EMERGENCY, MAJOR, STANDARD_CART, STANDARD_PAYMENTS, STANDARD_SHOP, STANDARD_WEB
from ._demo_scenes import canary_aborted_mid_bake, pipeline_waits_on_its_gate
from ._requester import confirm_filing_in_form
from .._output import console
from ._stack import (
    FAST_POLLING,
    Stack,
    create_pool_and_deploy,
    free_port,
    prefect_env,
    start_endpoint,
    start_server,
    start_worker,
)

# The scenarios the demo plays side by side, in the order its summary lists them.
SCENARIOS = ("canary", "rollback", "abort", "pipeline", "major", "emergency", "weekly", "early-resume")


class Demo:
    def __init__(self, home: Path, started: float, services, approvers: EndpointApprovers, step_timeout_s: float,
                 api_url: str, app: Callable[..., object]):
        self.home, self.started, self.services, self.approvers = home, started, services, approvers
        self.api_url, self.app = api_url, app
        # How long any one step of a scenario may take (a run reaching its gate, a refusal recorded, a run ending):
        # seconds when idle, minutes on a machine busy with other work (Settings.demo_step_timeout_s).
        self.step_timeout_s = step_timeout_s
        self.outcomes: dict[str, tuple[str, str, bool]] = {}
        self.lock = threading.Lock()

    # ---- talking to Prefect the way the UI does ---------------------------------------------------------
    def say(self, tag: str, text: str) -> None:
        with self.lock:
            console.print(f"[dim]{time.perf_counter() - self.started:6.1f}s[/] [bold]{tag:<10}[/] {text}")

    def submit(self, request: dict) -> str:
        """The run form, then the requester confirms the filing with the code sent to them."""
        from prefect.deployments import run_deployment

        run_id = str(run_deployment("change-request/submit", parameters={"request": request}, timeout=0).id)
        confirm_filing_in_form(self.services, self.api_url, run_id, timeout_s=self.step_timeout_s)
        return run_id

    def awaiting_approval(self, run_id: str):
        """The change the run recorded, once its approval has been requested."""
        def probe():
            change = self.services.changes.find_by_idempotency_key(f"flow-run:{run_id}")
            return change if change is not None and change.state == "awaiting_approval" else None

        return self.wait(probe, "the approval request")

    def wait(self, probe, what: str):
        deadline = time.monotonic() + self.step_timeout_s
        while time.monotonic() < deadline:
            value = probe()
            if value:
                return value
            time.sleep(0.25)
        raise TimeoutError(f"timed out waiting for {what}")

    def paused_at(self, run_id: str, prefix: str) -> str:
        import asyncio

        from flows import paused_key

        def probe():
            key = asyncio.run(paused_key(run_id))
            return key if key and key.startswith(prefix) else None

        return self.wait(probe, f"a pause at {prefix}")

    def resume(self, run_id: str, prefix: str, run_input: dict) -> None:
        """Press Resume on the run's form at the gate `prefix` names, as a person in the UI would."""
        import asyncio

        from flows import ResumeRefused, resume_with_input

        def pressed() -> bool:
            self.paused_at(run_id, prefix)
            try:
                asyncio.run(resume_with_input(run_id, run_input))
                return True
            except ResumeRefused as refused:
                # Between two waits of the same gate (a hot wait giving way to a suspended one: "not paused"; or
                # paused before its form's schema is saved: "schema not found", the CI of the seventh stop),
                # Prefect refuses and nothing was applied: the gate is looked up again and Resume pressed again.
                if "not paused" in str(refused) or "schema not found" in str(refused):
                    return False
                raise

        self.wait(pressed, f"the Resume form at {prefix}")

    def approve(self, tag: str, run_id: str, key: str, person: str, comment: str) -> None:
        """Through the approval endpoint, from the notification (_demo_approvers.py)."""
        self.paused_at(run_id, "approval-")
        self.say(tag, self.approvers.approve(key, person, comment, self.wait))

    def final_state(self, run_id: str, key: str) -> str:
        import asyncio
        from uuid import UUID

        from prefect.client.orchestration import get_client

        async def state():
            async with get_client() as client:
                return (await client.read_flow_run(UUID(run_id))).state

        self.wait(lambda: asyncio.run(state()).is_final(), f"{key} to finish")
        return self.services.changes.get(key).state

    def record(self, name: str, key: str, got: str, expected: str) -> None:
        self.outcomes[name] = (key, got, got == expected)

    # ---- scenarios --------------------------------------------------------------------------------------
    def canary_change(self, tag: str, request: dict, lab: Lab, *, fail_at_50: bool) -> None:
        run_id = self.submit(request)
        change = self.awaiting_approval(run_id)
        key = change.key
        self.say(tag, f"{key} submitted by grace: {change.title} (risk {change.risk_level}); waiting for "
                      "team lead + peer reviewer")
        self.approve(tag, run_id, key, "alice", "plan and rollback look right")
        self.approve(tag, run_id, key, "bob", "reviewed the diff")
        if fail_at_50:
            self.wait(lambda: 1 in self.services.canary.decisions(key), "step 1")
            lab.canary.set(error_rate=0.6)
            self.say(tag, "10 % step healthy; the canary starts answering 60 % errors during the 50 % step")
        state = self.final_state(run_id, key)
        decisions = self.services.canary.decisions(key)
        steps = ", ".join(f"{d['weight']}%: {d['action']}" for _, d in sorted(decisions.items()))
        checks = self.services.checklists.check_results(key)
        passed = sum(1 for c in checks if c.passed)
        self.say(tag, f"{key} canary [{steps}]; checklist {passed}/{len(checks)} items passed; "
                      f"outcome {self.services.changes.get(key).outcome}, state {state}")
        watched = self.services.watch.decision(key)
        if watched is not None:
            self.say(tag, f"post-change watch of {lab.service} before it completed: {watched['action']}, "
                          f"{watched['measured']} measurements of its error rate over {DEMO_WATCH_S} s")
        if fail_at_50 and lab.nginx_port:
            self.say(tag, f"20 requests through nginx afterwards reach: {lab.traffic_split(20)}")
        elif fail_at_50:
            weights = (self.home / f"weights-{lab.service}.log").read_text().split()
            self.say(tag, f"canary weights sent to the router: {' -> '.join(weights)} %")
        self.record(tag, key, self.services.changes.get(key).outcome or state,
                    "rolled_back" if fail_at_50 else "succeeded")

    def next_weekly_window(self, *, after: timedelta) -> datetime:
        windows = self.services.org.policies.windows
        return next_window(windows, "weekly", datetime.now(timezone.utc) + after).starts_at

    def major_change(self, tag: str) -> None:
        # Major changes need 14 days' notice and a maintenance window: the first weekly window after that.
        start = self.next_weekly_window(after=timedelta(days=15))
        run_id = self.submit({**MAJOR, "planned_start": start.isoformat(),
                              "planned_end": (start + timedelta(hours=2)).isoformat()})
        key = self.awaiting_approval(run_id).key
        quorum = self.services.approvals.evaluation(key).describe_missing()
        self.say(tag, f"{key} submitted by frank for {start:%Y-%m-%d %H:%M} UTC; needs {quorum}")
        self.resume(run_id, "approval-", {"approver": "frank", "decision": "approve", "comment": "my own change",
                             "approval_code": self.services.approvals.approval_code_for(key, "frank")})
        refused = self.wait(lambda: next((e for e in self.services.changes.view(key).events
                                          if e.action == "approval_refused"), None), "the refusal")
        self.say(tag, f"[red]refused[/]: {refused.data.get('reason', refused.data)}")
        for person in ("alice", "carol", "dave"):
            self.approve(tag, run_id, key, person, "CAB vote: in favour")
        change = self.wait(lambda: (c := self.services.changes.get(key)).state == "scheduled" and c, "scheduling")
        self.say(tag, f"{key} has its quorum and is {change.state}: the run is suspended until the window "
                      f"({change.planned_start:%Y-%m-%d %H:%M} UTC) and holds no worker")
        self.record(tag, key, change.state, "scheduled")

    def early_resume(self, tag: str) -> None:
        """Someone presses Resume on a change waiting for its window: nothing starts, the refusal is recorded."""
        start = self.next_weekly_window(after=timedelta(days=1))
        run_id = self.submit({**STANDARD_PAYMENTS, "planned_start": start.isoformat(),
                              "planned_end": (start + timedelta(hours=1)).isoformat()})
        key = self.awaiting_approval(run_id).key
        for person in ("alice", "bob"):
            self.approve(tag, run_id, key, person, "approved for its window")
        self.paused_at(run_id, "window-")
        self.say(tag, f"{key} is scheduled for {start:%Y-%m-%d %H:%M} UTC; someone presses Resume in the UI now")
        self.resume(run_id, "window-", {})
        refused = self.wait(lambda: next((e for e in self.services.changes.view(key).events
                                          if e.action == "window_gate_refused"), None), "the refusal")
        self.paused_at(run_id, "window-r1-2")
        change = self.services.changes.get(key)
        self.say(tag, f"[red]refused[/] ({refused.actor}): {refused.data['refusal'][:90]}...; {key} is still "
                      f"{change.state} and waits again")
        self.record(tag, key, change.state, "scheduled")

    def emergency_change(self, tag: str) -> None:
        run_id = self.submit(EMERGENCY)
        key = self.awaiting_approval(run_id).key
        self.say(tag, f"{key} for P1 incident INC-2041, filed by bob; paging the incident commander")
        self.approve(tag, run_id, key, "erin", "go, P1 in progress")
        # No automation: the change is done when its implementer says so, with his own code, not before.
        bob = self.services.approvals.approval_code_for(key, "bob", Act.confirm_work)
        for stage, note in (("implemented", "POOL_SIZE=200 set, pods restarted"),
                            ("verified", "checkout error rate back under 0.1 %")):
            self.resume(run_id, f"work-{stage}-", {"person": "bob", "approval_code": bob, "outcome": "done",
                                                   "note": note})
            self.say(tag, f"bob confirms {key} {stage}: {note}")
        state = self.final_state(run_id, key)
        due = self.services.changes.get(key).review_due_at
        self.say(tag, f"{key} implemented, now {state}; post-implementation review due {due:%Y-%m-%d %H:%M} UTC")
        code = self.services.approvals.approval_code_for(key, "erin", Act.review)
        due = (utcnow() + timedelta(days=7)).date().isoformat()
        change = self.services.reviews.record(
            key, actor="erin", code=code, summary="pool exhausted by a retry storm; fixed by raising the pool",
            root_cause="unbounded client retries", went_well="paged and fixed within the hour",
            went_wrong="no alert on pool saturation",
            action_items=parse_action_items(f"Alert on pool saturation | alice | {due}"))
        (item,) = self.services.reviews.items_of(key)
        self.say(tag, f"erin records the review: {change.key} {change.state}; action item {item.number} for "
                      f"{item.owner}, due {item.due_at:%Y-%m-%d %H:%M} UTC: {item.what} (reminded then, escalated "
                      "after 3 and 7 days while open)")
        self.record(tag, key, change.state, "closed")

    def maintenance(self, tag: str) -> None:
        from prefect.deployments import run_deployment

        start = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=25)
        # Five minutes, not the config's hours: the run ends when its activities do, and a window this long still
        # holds them when a busy machine starts the runs late.
        window = {"kind": "weekly", "window_start": start.isoformat(), "window_minutes": 5}
        run_deployment("maintenance-announcement/weekly", parameters=window, timeout=self.step_timeout_s)
        change = self.services.changes.find_by_idempotency_key(f"maintenance:weekly:{start.isoformat()}")
        key = change.key
        self.say(tag, f"{key} weekly window announced for {start:%H:%M:%S} UTC (compressed to 5 min)")
        for person in ("alice", "bob"):
            self.services.approvals.decide(key, approver=person, decision="approve",
                                code=self.services.approvals.approval_code_for(key, person), comment="window approved")
        self.say(tag, f"{key} approved by alice and bob; the window run starts at its time")
        # (It sleeps until the window opens, 25 s from the announcement.)
        run = run_deployment("maintenance/weekly", parameters=window, timeout=25 + self.step_timeout_s)
        steps = self.services.checklists.done_steps(key)
        done = ", ".join(f"{n}: {'ok' if s.get('ok') else s.get('skipped') or 'failed'}"
                         for n, s in sorted(steps.items()))
        state = self.services.changes.get(key).state
        self.say(tag, f"{key} run {run.state.name.lower()}: activities [{done}]; change {state}")
        self.record(tag, key, state, "closed")

    def run_all(self, labs: dict[str, Lab]) -> None:
        scenarios = {
            "canary": lambda: self.canary_change("canary", STANDARD_SHOP, labs["shop"], fail_at_50=False),
            "rollback": lambda: self.canary_change("rollback", STANDARD_CART, labs["cart"], fail_at_50=True),
            "abort": lambda: canary_aborted_mid_bake(self, "abort", STANDARD_WEB, labs["web"], self.app),
            "pipeline": lambda: pipeline_waits_on_its_gate(self, "pipeline", self.approvers.approval_url, self.app),
            "major": lambda: self.major_change("major"),
            "emergency": lambda: self.emergency_change("emergency"),
            "weekly": lambda: self.maintenance("weekly"),
            "early-resume": lambda: self.early_resume("early-resume"),
        }
        threads = [threading.Thread(target=self._guard, args=(name, body), daemon=True)
                   for name, body in scenarios.items()]
        for thread in threads:
            thread.start()
        # Every wait of a scenario is bounded; this bounds what is not (a hung call), at a few steps' worth.
        deadline = time.monotonic() + 4 * self.step_timeout_s
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def _guard(self, name: str, body) -> None:
        try:
            body()
        except Exception as exc:  # noqa: BLE001 - one scenario's failure is reported, the others go on
            self.say(name, f"[red]failed[/]: {type(exc).__name__}: {exc}")
            self.outcomes[name] = ("-", f"error: {exc}", False)


def run_demo(home: Path, app: Callable[..., object]) -> bool:
    """`app` is the changeflow command itself: the demo drives it as a person would (init, log, reports)."""
    started = time.perf_counter()
    os.environ["CHANGEFLOW_HOME"] = str(home)
    for name in ("CHANGEFLOW_DATABASE_URL", "CHANGEFLOW_CONFIG_DIR", "CHANGEFLOW_SECRET"):
        os.environ.pop(name, None)
    from .._context import AppContext

    console.rule("[bold]changeflow demo")
    console.print(f"throw-away HOME: {home}")
    app(["init"], standalone_mode=False)
    settings = Settings()
    port, endpoint_port = free_port(), free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    approval_url, slack_secret = f"http://127.0.0.1:{endpoint_port}", secrets.token_hex(16)
    stack = Stack(api_url, prefect_env(api_url, home / "prefect", {
        **FAST_POLLING, "CHANGEFLOW_PREFECT_UI_URL": api_url.removesuffix("/api"), "CHANGEFLOW_HOME": str(home),
        "CHANGEFLOW_APPROVAL_URL": approval_url, "CHANGEFLOW_SLACK_SIGNING_SECRET": slack_secret,
    }))
    labs = {name: Lab(home / f"lab-{name}", service=name) for name in ("shop", "cart", "web")}
    try:
        for lab in labs.values():
            lab.start()
        write_demo_config(settings.config_dir, home, labs, {n: home / f"weights-{n}.log" for n in labs})
        router = "nginx" if nginx_available() else "a command router (nginx is not installed)"
        console.print(f"sample service: {', '.join(labs)}, each v1 (stable) + v2 (canary) behind {router}")
        # This process talks to the demo's server too (prefect reads PREFECT_API_URL when first imported).
        os.environ.update({k: stack.env[k] for k in ("PREFECT_API_URL", "PREFECT_HOME",
                                                     "PREFECT_SERVER_ANALYTICS_ENABLED")})
        console.print(f"starting a Prefect server on 127.0.0.1:{port}, work pool `changeflow`, a process worker")
        start_server(stack, port, home / "logs")
        create_pool_and_deploy(stack)
        start_endpoint(stack, endpoint_port, home / "logs")
        start_worker(stack, home / "logs")
        console.print(f"approval endpoint on {approval_url}: {INBOX_PERSON} approves from her inbox's links, "
                      "the others with signed Slack clicks")
        now = datetime.now(timezone.utc).replace(microsecond=0)
        app(["window", "add", "--start", now.isoformat(), "--end", (now + timedelta(hours=1)).isoformat(),
             "--title", "Release window for the demo", "--as", "alice"], standalone_mode=False)
        console.print(f"[bold green]Prefect UI while the demo runs:[/] {api_url.removesuffix('/api')}/runs")
        services = AppContext(Settings()).services
        demo = Demo(home, started, services, EndpointApprovers(home, services, approval_url, slack_secret),
                    settings.demo_step_timeout_s, api_url, app)
        loads = [TrafficLoad(lab.entry_url, per_second=10) for lab in labs.values() if lab.nginx_port]
        for load in loads:
            load.__enter__()
        console.rule(f"{len(SCENARIOS)} scenarios, side by side")
        try:
            demo.run_all(labs)
        finally:
            for load in loads:
                load.__exit__(None, None, None)
        ok = _summary(demo)
        console.rule("changeflow log")
        app(["log"], standalone_mode=False)
        console.rule("DORA report")
        app(["report", "dora"], standalone_mode=False)
        console.rule("compliance report")
        app(["report", "compliance"], standalone_mode=False)
        console.rule("audit")
        app(["audit", "verify"], standalone_mode=False)
    finally:
        console.print("stopping the worker, the Prefect server and the sample services")
        stack.stop()
        for lab in labs.values():
            lab.stop()
    console.print(f"[bold]demo finished in {time.perf_counter() - started:.1f} s[/]"
                  f"{'' if ok else ' [red](a scenario did not end as expected)[/]'}")
    return ok


def _summary(demo: Demo) -> bool:
    table = Table(title="scenarios")
    for column in ("scenario", "change", "outcome", "as expected"):
        table.add_column(column)
    for name in SCENARIOS:
        key, got, fine = demo.outcomes.get(name, ("-", "did not finish", False))
        table.add_row(name, key, got, "[green]yes[/]" if fine else "[red]no[/]")
    console.print(table)
    return len(demo.outcomes) == len(SCENARIOS) and all(fine for _, _, fine in demo.outcomes.values())


def play_demo(app: Callable[..., object], keep: bool) -> None:
    """Play every scenario through the real flows on a local Prefect server, then stop everything."""
    home = Path(tempfile.mkdtemp(prefix="changeflow-demo-"))
    try:
        ok = run_demo(home, app)
    finally:
        if keep:
            console.print(f"kept {home}: CHANGEFLOW_HOME={home} changeflow show CHG-000001")
        else:
            shutil.rmtree(home, ignore_errors=True)
    if not ok:
        raise typer.Exit(1)

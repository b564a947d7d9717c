"""The canary rollout of a change: each step a Prefect task (set weight, bake, decide), gates between steps.

Runs inside the change-request flow as its implementation. Resumable like the rest of the flow: decided
steps are in the audit trail and are not baked again; a bake its run died in resumes from the measurements it
stored (each interval's are stored as they are taken); a gate's answer is on the audit record (Prefect's copy of
the Resume form is deleted once read: it carries a code), so a resumed run finds it there.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.input import RunInput
from pydantic import Field

from flows._canary_bake import Analyzer, StepResult, bake_step
from flows._change_page import publish_change_page
from flows._gate import Gate, wait_at
from flows._pause_key import GateKind, PauseKey
from flows._wiring import wiring
from flows.traffic import RouterError, router_for
from models import TEXT_LIMIT, PolicyViolation, responsible_and_on_call, utcnow

DONE = {"continue", "promote", "proceed"}


class CanaryGateAnswer(RunInput):
    """A person's answer at a canary gate, in the Resume dialog."""

    person: str = Field(default="", description="Your user name in the approver directory.")
    approval_code: str = Field(default="", description="Your personal approval code for this change.")
    answer: Literal["proceed", "roll_back"] = Field(
        default="proceed", description="proceed: go on with the rollout; roll_back: send all traffic back to stable."
    )
    comment: str = Field(default="", max_length=TEXT_LIMIT, description="What you looked at, for the record.")


def router_of(change, plan):
    """The traffic router of the change's service (canary.yaml), set up for this plan's versions."""
    target = wiring().services.canary.target(change)
    return target, router_for(target.router, service=change.service, stable_version=plan.stable_version,
                              canary_version=plan.canary_version)


@task(name="canary step", task_run_name="canary step {index}")
def run_step(key: str, index: int, bake: str, progress_id: str | None) -> StepResult:
    rt = wiring()
    change = rt.services.changes.get(key)
    plan = rt.services.canary.plan(change)
    step = plan.steps[index - 1]
    target, router = router_of(change, plan)
    analyzer = Analyzer(plan, target, service=change.service,
                        prometheus_url=rt.services.org.canary_config.prometheus_url,
                        timeout_s=rt.settings.http_timeout_s)

    def on_tick(done: int, total: int) -> None:
        if progress_id:
            update_progress_artifact(uuid.UUID(progress_id), progress=plan.progress_percent(index, done))

    # A bake its run died in resumes from what it stored (canary.yaml resume_after_crash; Argo resumes too).
    stored = [row.model_dump(exclude={"id", "change_key"}) for row in rt.services.canary.measurements(key, step=index)
              if row.bake == bake]
    try:
        result = bake_step(plan, step, index=index, router=router, analyzer=analyzer, bake=bake, on_tick=on_tick,
                           stored=stored, on_measured=lambda rows: rt.services.canary.record_measurements(key, rows))
    finally:
        analyzer.close()
    rt.services.canary.record_decision(key, step=index, bake=bake,
                                      decision={**result.as_decision(), "weight": step.weight,
                                                "router": result.router})
    get_run_logger().info("step %d (%d%%): %s - %s", index, step.weight, result.action, "; ".join(result.reasons))
    publish_change_page(key)  # the step on the change's page chart (issue 30)
    return result


class CanaryGate(Gate[str]):
    """Waits until a person in the directory answers with a valid code (`changeflow canary` or the Resume form):
    proceed or roll_back; or `timed_out` when nobody answered within canary.yaml's gate_timeout_s (the caller
    then rolls back: fail-safe). An empty Resume is a refused answer."""

    kind = GateKind.canary
    empty_resume_is_an_attempt = True

    def __init__(self, key: str, gate: str, description: str):
        self.key, self.name, self.description = key, gate, description
        self.full_name = PauseKey(GateKind.canary, gate, 0).gate_name  # what the records name (`canary-confirm-s2`)
        self.deadline = wiring().services.canary.gate_deadline(key, self.full_name)

    def settled(self) -> str | None:
        on_record = wiring().services.canary.gate_answer(self.key, self.full_name)
        if on_record is not None:
            return on_record
        return "timed_out" if utcnow() >= self.deadline else None

    def gate(self) -> str:
        return self.name

    def before_wait(self, attempt: int) -> None:
        if attempt:
            return
        rt = wiring()
        change = rt.services.changes.get(self.key)
        told = responsible_and_on_call(change, rt.services.org.directory, rt.services.org.policies.on_call_role)
        rt.notifier.announce(change, "canary_gate_waiting", told, round_=self.full_name, deadline=self.deadline,
                             extra={"gate": self.full_name}, personal_code=True)
        rt.notifier.deliver(change_key=self.key)

    def form(self, refusal: str | None) -> Any:
        text = self.description + (f"\n\n> **The last answer was refused:** {refusal}" if refusal else "")
        return CanaryGateAnswer.with_initial_data(description=text)

    def apply(self, answer: RunInput, key: PauseKey) -> str | None:
        assert isinstance(answer, CanaryGateAnswer)
        try:
            wiring().services.canary.confirm(self.key, person=answer.person.strip(), code=answer.approval_code,
                                              action=answer.answer, comment=answer.comment, gate=self.full_name)
        except PolicyViolation as exc:
            return str(exc)
        return None


def canary_gate(key: str, gate: str, description: str) -> str:
    """proceed, roll_back or timed_out: see CanaryGate."""
    return wait_at(CanaryGate(key, gate, description))


def analysis_table(key: str) -> None:
    rows = wiring().services.canary.measurements(key)
    create_table_artifact(
        key=f"{key.lower()}-canary-analysis",
        table=[{"step": r.step, "weight %": r.weight, "metric": r.metric, "version": r.version,
                "value": None if r.value is None else round(r.value, 4), "error": r.error or "",
                "fails when": f"{r.operator} {r.threshold:g}" if r.operator else "",
                "at": r.taken_at.strftime("%H:%M:%S")} for r in rows],
        description=f"Canary analysis of {key}: every measurement each decision was based on",
    )


def run_canary(key: str, *, during) -> tuple[str, str, list[dict]]:
    """Roll the change's canary out. Returns (promoted | rolled_back | failed, reason, the failing measurements).

    `during(index)` runs the during-checklist after a step and returns a failure reason or "".
    """
    rt = wiring()
    change = rt.services.changes.get(key)
    plan = rt.services.canary.plan(change)
    decided = rt.services.canary.decisions(key)
    # Steps are decided in order, so the decided ones are the first few.
    first_open = 1 + sum(1 for i in range(1, len(plan.steps) + 1) if decided.get(i, {}).get("action") in DONE)
    # Only the first open step can have a bake a previous run died in (steps are baked in order).
    open_bake = rt.services.canary.unfinished_bake(key, first_open)
    abort = rt.services.recovery.canary_abort_to_take_up(key)
    if abort is not None:
        # Its previous run died mid-rollout and the sweep sent the traffic back to stable.
        if not rt.services.org.canary_config.resume_after_crash:
            return "rolled_back", abort.reason, []
        stored = sum(1 for row in rt.services.canary.measurements(key, step=first_open) if row.bake == open_bake)
        rt.services.recovery.resume_canary(key, abort, step=first_open, stored_measurements=stored)
    progress = create_progress_artifact(progress=plan.progress_percent(first_open),
                                        key=f"{key.lower()}-canary-progress",
                                        description=f"{key}: canary {plan.canary_version} on {change.service}")
    progress_id = str(progress) if progress else None
    for index, step in enumerate(plan.steps, start=1):
        previous = decided.get(index)
        if previous and previous["action"] in DONE:
            continue
        aborted = hold_while_locked_down(key, change.type, index)
        if aborted:  # a lockdown (`canaries: stable`) or `changeflow abort` whose run was not stopped
            analysis_table(key)
            return _roll_back(key, plan, change, aborted, [])
        where = f"## {key}: canary {plan.canary_version} on {change.service}\n\nStep {index} of {len(plan.steps)}"
        if step.confirm:
            answer = canary_gate(key, f"confirm-s{index}",
                                 f"{where}: send **{step.weight} %** of traffic to the canary?")
            if answer != "proceed":
                return _roll_back(key, plan, change, _gate_reason(answer, f"before step {index}"), [])
        if previous and previous["action"] == "rollback":
            # Decided (and the weight set to 0) before its run died: the rollback stands.
            analysis_table(key)
            return _roll_back(key, plan, change, "; ".join(previous["reasons"]), [])
        if previous and previous["action"] == "pause":
            result_action, reasons, failing = "pause", previous["reasons"], []
            bake = previous["bake"]
        else:
            bake = (open_bake if index == first_open else None) or uuid.uuid4().hex[:12]
            result = run_step(key, index, bake, progress_id)
            result_action, reasons, failing = result.action, result.reasons, result.failing
        if result_action == "router_failed":
            analysis_table(key)
            return "failed", reasons[0], []
        if result_action == "rollback":
            analysis_table(key)
            return _roll_back(key, plan, change, "; ".join(reasons), failing, weight_already_zero=True)
        if result_action == "pause":
            answer = canary_gate(key, f"inconclusive-s{index}-{bake}",
                                 f"{where} at {step.weight} %: the analysis was **inconclusive**: "
                                 f"{'; '.join(reasons)}.\n\nProceed as if healthy, or roll back?")
            if answer != "proceed":
                analysis_table(key)
                return _roll_back(key, plan, change, _gate_reason(answer, "after an inconclusive analysis"), [])
            rt.services.canary.record_decision(key, step=index, bake=f"{bake}-confirmed",
                                              decision={"action": "proceed", "reasons": ["confirmed by a person"],
                                                        "weight": step.weight})
        problem = during(index)
        if problem:
            analysis_table(key)
            return _roll_back(key, plan, change, problem, [])
    analysis_table(key)
    return "promoted", f"promoted {plan.canary_version} to 100 %", []


def hold_while_locked_down(key: str, change_type: str, index: int) -> str | None:
    """Before a canary step: a lockdown with `canaries: hold` keeps the canary at its weight, taking no step until
    it is lifted (issue 32). Returns the reason of an abort recorded meanwhile (the run then rolls back at once,
    even if nobody could stop it), or None."""
    rt = wiring()
    held = False
    while (reason := rt.services.lockdown.hold_canary(key, change_type, index)) is not None:
        if not held:
            get_run_logger().warning("canary held before step %d: %s", index, reason)
            publish_change_page(key)
            held = True
        if rt.services.recovery.abort_reason(key):
            break
        time.sleep(rt.settings.lockdown_hold_poll_s)
    aborted = rt.services.recovery.abort_reason(key)
    if held and not aborted:
        get_run_logger().info("lockdown lifted: step %d goes ahead", index)
    return aborted


def _gate_reason(answer: str, where: str) -> str:
    if answer == "timed_out":
        timeout = wiring().services.org.canary_config.gate_timeout_s
        return f"nobody answered the canary gate {where} within {timeout:g} s: rolled back (fail-safe)"
    return f"rolled back by a person {where}"


def _roll_back(key, plan, change, reason, failing, *, weight_already_zero: bool = False):
    if not weight_already_zero:
        _, router = router_of(change, plan)
        try:
            router.set_weight(0)
        except RouterError as exc:
            reason += f"; setting the canary weight to 0 failed: {exc}"
    return "rolled_back", reason, failing

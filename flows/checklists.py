"""The checklist runner: automated items as concurrent Prefect tasks (with their retries and timeouts),
manual items through one Resume form per phase or `changeflow confirm`; results stored with evidence.

Idempotent like the rest of the flow: an item with a stored result is never run again, so a resumed run
picks up where it stopped.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.input import RunInput
from pydantic import Field, create_model

from flows._checks import CHECKS
from flows._gate import Gate, wait_at
from flows._pause_key import GateKind, PauseKey
from flows._wiring import run_attempt, wiring
from models import (
    interrupted_check_question,
    ItemOutcome,
    phase_verdict,
    PhaseVerdict,
    PolicyViolation,
    Rerun,
    rerun_of,
    responsible,
    utcnow,
)


class CheckFailed(Exception):
    """Raised by a failing check so Prefect applies the item's retries; carries the last outcome."""

    def __init__(self, outcome: ItemOutcome):
        super().__init__(outcome.detail)
        self.outcome = outcome


@task(name="check")
def run_check(item) -> ItemOutcome:
    outcome = CHECKS[item.kind](item)
    if not outcome.passed:
        raise CheckFailed(outcome)
    return outcome


def field_name(item_id: str) -> str:
    return item_id.replace("-", "_")


def confirmation_form(phase: str, items: list, description: str):
    """A RunInput with one checkbox per manual item of the phase."""
    fields: dict[str, Any] = {field_name(i.id): (bool, Field(default=False, description=i.title)) for i in items}
    fields["confirmed_by"] = (str, Field(default="", description="Your user name in the approver directory"))
    fields["approval_code"] = (str, Field(default="", description="Your personal approval code for this change"))
    fields["note"] = (str, Field(default="", description="What you checked, or a deviation to record"))
    model = create_model(f"Confirm{phase.title()}Checklist", __base__=RunInput, **fields)
    return model.with_initial_data(description=description)


def _stored(key: str, phase: str, step: int) -> dict:
    return {r.item_id: r for r in wiring().services.checklists.check_results(key, phase=phase, step=step)}


def run_automated(key: str, phase: str, step: int, items: list) -> list:
    """Run the automated items that have no result yet; returns the command items a crash interrupted and that
    are not idempotent: their outcome is unknown, and a person is asked (never run again blindly)."""
    logger = get_run_logger()
    services = wiring().services
    done = _stored(key, phase, step)
    interrupted = services.recovery.interrupted_checks(key, phase, step, attempt=run_attempt())
    futures = {}
    unknown = []
    for item in items:
        if item.id in done:
            continue
        if item.kind == "command":
            rerun = rerun_of(item.id in interrupted, item.idempotent)
            if rerun is Rerun.not_blindly:
                unknown.append(interrupted_check_question(item))
                continue
            if rerun is Rerun.run_again:
                services.recovery.record_check_retry(key, phase, step, item.id)
            services.recovery.begin_check(key, phase, step, item.id, run_attempt())
        options = run_check.with_options(retries=item.retries, retry_delay_seconds=1,
                                         timeout_seconds=item.timeout_s + 5, task_run_name=f"{phase}: {item.id}")
        futures[item.id] = (item, options.submit(item))
    for item, future in futures.values():
        result = future.result(raise_on_failure=False)
        if isinstance(result, CheckFailed):
            outcome = result.outcome
        elif isinstance(result, ItemOutcome):
            outcome = result
        else:
            outcome = ItemOutcome(item_id=item.id, passed=False, required=item.required,
                                  detail=f"check did not finish: {type(result).__name__}", evidence={})
        services.checklists.record_check(key, phase=phase, step=step, item=item, outcome=outcome)
        logger.info("%s %s: %s (%s)", phase, item.id, "passed" if outcome.passed else "FAILED", outcome.detail)
    return unknown


class ChecklistGate(Gate[bool]):
    """Waits until every manual item of the phase has a result: confirmed by a person with their code (a ticked
    box on the form, or `changeflow confirm`), or failed at its timeout, counted from the first time the phase
    waited for people, across suspends and restarts."""

    kind = GateKind.checklist

    def __init__(self, key: str, phase: str, step: int, items: list):
        self.key, self.phase, self.step, self.items = key, phase, step, items
        self.first = wiring().services.checklists.phase_waiting_since(key, phase, step)
        self.waiting: list = []

    def settled(self) -> bool | None:
        services = wiring().services
        done = _stored(self.key, self.phase, self.step)
        waiting = [i for i in self.items if i.id not in done]
        expired = [i for i in waiting if utcnow() >= self.first + timedelta(seconds=i.timeout_s)]
        for item in expired:
            services.checklists.record_check(self.key, phase=self.phase, step=self.step, item=item,
                                             outcome=ItemOutcome(item_id=item.id, passed=False, required=item.required,
                                                                 detail=f"not confirmed within {item.timeout_s:g} s"))
        self.waiting = [i for i in waiting if i not in expired]
        return True if not self.waiting else None

    def gate(self) -> str:
        return f"{self.phase}-{self.step}"

    def before_wait(self, attempt: int) -> None:
        notify_people(self.key, self.phase, self.waiting)

    def form(self, refusal: str | None) -> Any:
        lines = [f"## {self.key} {self.phase}-checklist{f' (step {self.step})' if self.step else ''}",
                 "Tick each item you have confirmed and give your user name and personal approval code; or run "
                 f"`changeflow confirm {self.key} ITEM --as NAME --code CODE`."]
        runbooks = wiring().services.runbooks
        lines += [f"- **{i.id}**: {i.title}" + ("" if i.required else " (advisory)")
                  + (f" ({line})" if (line := runbooks.step_line(self.key, getattr(i, "runbook_step", None))) else "")
                  for i in self.waiting]
        if refusal:
            lines.append(f"> **The last confirmation was refused:** {refusal}")
        return confirmation_form(self.phase, self.waiting, "\n".join(lines))

    def apply(self, answer: RunInput, key: PauseKey) -> str | None:
        for item in (i for i in self.waiting if getattr(answer, field_name(i.id), False)):
            try:
                wiring().services.checklists.confirm_item(
                    self.key, person=getattr(answer, "confirmed_by"), code=getattr(answer, "approval_code"),  # noqa: B009
                    phase=self.phase, step=self.step, item=item, note=getattr(answer, "note"),  # noqa: B009
                    attempt_id=str(key))  # (the form's class is built at run time: its fields are not typed)
            except PolicyViolation as exc:
                # Shown at the top of the next form; one refusal per answer (the same name and code fail for every
                # item it ticked).
                return str(exc)
        return None


def run_manual(key: str, phase: str, step: int, items: list) -> None:
    if items:
        wait_at(ChecklistGate(key, phase, step, items))


def notify_people(key: str, phase: str, items: list) -> None:
    rt = wiring()
    change = rt.services.changes.get(key)
    people = responsible(change, rt.services.org.directory)
    for item in items:
        step = rt.services.runbooks.step_line(key, getattr(item, "runbook_step", None))
        rt.notifier.announce(change, "checklist_item_needs_person", people, round_=f"{phase}-{item.id}",
                             personal_code=True,
                             extra={"item": {"id": item.id, "title": item.title, "phase": phase, "runbook": step}})
    rt.notifier.deliver(change_key=key)


def run_phase(key: str, phase: str, step: int = 0) -> PhaseVerdict:
    """Run one phase of the change's checklist; the verdict is the worst of its items."""
    services = wiring().services
    change = services.changes.get(key)
    checklist = services.org.checklist_of(change)
    items = checklist.items(phase) if checklist else []
    if not items:
        return phase_verdict(phase, [])
    unknown = run_automated(key, phase, step, [i for i in items if i.kind != "manual"])
    manual = [i for i in items if i.kind == "manual"] + unknown
    checked = _stored(key, phase, step)
    failed = [i.id for i in items if i.required and i.id in checked and not checked[i.id].passed]
    if failed:
        # The phase has failed already: nobody is asked to tick items of a change that stops anyway (issue 30:
        # the dialog asked for ticks after a required check had failed, then cancelled the change).
        for item in (i for i in manual if i.id not in checked):
            services.checklists.record_check(key, phase=phase, step=step, item=item, outcome=ItemOutcome(
                item_id=item.id, passed=False, required=item.required,
                detail=f"not asked: the required check {', '.join(failed)} had failed already"))
    else:
        run_manual(key, phase, step, manual)
    stored = _stored(key, phase, step)
    outcomes = [ItemOutcome(item_id=i.id, passed=stored[i.id].passed, required=i.required) for i in items]
    verdict = phase_verdict(phase, outcomes)
    services.checklists.record_phase(key, verdict, step=step)
    if verdict.failed_advisory:
        rt = wiring()
        rt.notifier.announce(change, "change_failed", [change.requester] if change.requester in
                             services.org.directory.people else [], round_=f"advisory-{phase}-{step}",
                             reason=f"advisory {phase} items failed: {', '.join(verdict.failed_advisory)}")
    publish_results(key)
    return verdict


def publish_results(key: str) -> None:
    """The change's checklist results as a Markdown artifact on the run."""
    results = wiring().services.checklists.check_results(key)
    rows = ["| phase | step | item | result | detail | by |", "|---|---|---|---|---|---|"]
    for r in results:
        mark = "passed" if r.passed else ("FAILED" if r.required else "failed (advisory)")
        rows.append(f"| {r.phase} | {r.step} | {r.title} | {mark} | {r.detail[:80]} | {r.actor} |")
    create_markdown_artifact(key=f"{key.lower()}-checklist", markdown=f"# {key} checklist\n\n" + "\n".join(rows),
                             description=f"Checklist results of {key}")

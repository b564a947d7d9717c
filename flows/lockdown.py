"""The incident button from the Prefect UI (issue 32): the `lockdown/press` deployment's run form asks only whether
to turn the lockdown on or off; the run then waits at a lockdown gate (flows/_gate.py, the one gate protocol)
whose Resume form asks the presser's name, their code for the next lockdown act and the reason. A person of a
`lockdown.declared_by` role with that code turns it on or off; anyone else is refused on the record and the run
waits again. `changeflow lockdown on|off` does the same from a shell.

The code goes in the Resume form, never in the run's parameters: Prefect keeps parameters where anyone with UI
access reads them, and the gate deletes the form's stored input once applied (DESIGN.md "Trust boundaries")."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.input import RunInput
from prefect.runtime import flow_run
from prefect.states import State
from pydantic import Field

from flows._heartbeat import heartbeating
from flows._gate import Gate, form_description, wait_at
from flows._pause_key import GateKind, PauseKey
from flows._calling_off import stop_run
from flows._prefect_api import final_state, name_run
from flows._wiring import wiring
from models import (LOCKDOWN_LIFTED, LOCKDOWN_ON, REFUSED, TEXT_LIMIT, InputError, Lockdown, LockdownResult,
                    PolicyViolation)
from notifications import Notifier


class LockdownInput(RunInput):
    """The Resume form of a lockdown pressed from the UI."""

    person: str = Field(default="", description="Your user name in the approver directory.")
    lockdown_code: str = Field(default="", description="Your code for the next lockdown act (`changeflow lockdown "
                                                       "code --for YOU` sends it to your own channel).")
    reason: str = Field(default="", max_length=TEXT_LIMIT, description="Why (announced to everyone and recorded).")


class LockdownGate(Gate[Lockdown]):
    """Waits until the lockdown is as asked (pressed here, or on the CLI meanwhile)."""

    kind = GateKind.lockdown
    key = ""  # it concerns no change
    empty_resume_is_an_attempt = True
    waits_for_a_person = False  # no change type's hot period applies: it suspends at once

    def __init__(self, on: bool):
        self.on = on
        self.pressed: LockdownResult | None = None  # by this run's form

    def settled(self) -> Lockdown | None:
        lockdown = wiring().services.lockdown.status()
        return lockdown if lockdown.on == self.on else None

    def gate(self) -> str:
        return "on" if self.on else "off"

    def form(self, refusal: str | None) -> Any:
        services = wiring().services
        policy = services.org.policies.lockdown
        lines = [f"## {'Declare a lockdown' if self.on else 'Lift the lockdown'}",
                 f"Now: {services.lockdown.status().describe()}.",
                 "While a lockdown is on, no change starts and only "
                 f"**{', '.join(policy.admits) or 'no'}** changes are filed; canaries being rolled out "
                 + ("go back to stable." if policy.canaries == "stable" else "hold at their weight."),
                 f"A person holding **{', '.join(policy.declared_by)}** presses it with their code for the next "
                 "lockdown act (`changeflow lockdown code --for YOU` sends it to your own channel)."]
        return LockdownInput.with_initial_data(description=form_description(lines, refusal))

    def apply(self, answer: RunInput, key: PauseKey) -> str | None:
        assert isinstance(answer, LockdownInput)
        lockdown = wiring().services.lockdown
        press = lockdown.declare if self.on else lockdown.lift
        try:
            self.pressed = press(person=answer.person, code=answer.lockdown_code, reason=answer.reason)
        except (PolicyViolation, InputError) as exc:
            return str(exc)
        return None


def carry_out(result: LockdownResult, notifier: Notifier) -> list[str]:
    """What follows a lockdown act, wherever it was pressed: everyone is told; the runs of the canaries it aborted
    are stopped (the sweep then rolls each back, as after `changeflow abort`); once lifted, the runs waiting at
    their window gate look again. Returns the changes whose run could not be reached (each rolls back at its next
    step anyway)."""
    notifier.announce_lockdown(result.lockdown, [c.key for c in result.aborted])
    notifier.deliver()
    if not result.lockdown.on:
        # Lifted: the changes waiting at their window gate look again now (a bare "look again", which authorises
        # nothing: each gate re-checks its window), not at the next sweep.
        from flows.sweep import nudge_runs_that_can_continue

        try:
            nudge_runs_that_can_continue()
        except Exception as exc:  # noqa: BLE001 - the sweep nudges them within its interval anyway
            logging.getLogger("changeflow.lockdown").warning("the waiting runs were not nudged (the sweep will): %s",
                                                             exc)
    # Each aborted canary's traffic goes back to stable now and its run is stopped; a run Prefect could not stop
    # rolls back at its next step anyway (the abort is on the record).
    return [change.key for change in result.aborted
            if not stop_run(change, f"{change.key} aborted: lockdown declared by {result.lockdown.by}")]


@flow(name="lockdown", log_prints=True)
@heartbeating
def lockdown(action: Literal["on", "off"]) -> State:
    """Turn the lockdown on or off: the run waits for a person who may, with their code, in its Resume form."""
    rt = wiring()
    on = action == "on"
    now = rt.services.lockdown.status()
    if now.on == on:
        return final_state(REFUSED, f"action: {now.describe() if on else 'there is no lockdown to lift'}")
    asyncio.run(name_run(str(flow_run.id), f"lockdown {action}", ["changeflow", "lockdown"]))
    gate = LockdownGate(on)
    settled = wait_at(gate)
    if gate.pressed is not None:  # (pressed on the CLI meanwhile: the CLI did this part)
        unreached = carry_out(gate.pressed, rt.notifier)
        if unreached:
            get_run_logger().warning("runs not reached, each rolls back at its next step: %s", ", ".join(unreached))
    return final_state(LOCKDOWN_ON if on else LOCKDOWN_LIFTED, settled.describe() if on else
                       f"lifted by {settled.by}: {settled.reason}")

"""The one gate protocol: every place a change's run waits for a person (its requester's confirmation of the
filing, approval, window, manual work, checklist item, canary) waits here, the same way.

A gate suspends its run (holding no worker) under a fresh key and, when the run comes back, looks at the record
first: a suspend whose key already fired returns at once on a re-run (Prefect), so the gate is the check after
the suspend, never the suspend itself (DESIGN.md, "Trust boundaries"). What came back is one of:

- a bare "look again" (no input, or a form left as it was): a path that records through the services (CLI,
  approval link, Slack click, sweep) decided, or someone pressed Resume on an untouched form. The gate re-reads
  its record. Where an empty Resume is itself an attempt to get past (starting before the window, skipping manual
  work or a canary question: `empty_resume_is_an_attempt`), one that the record does not justify is applied, and
  so refused on the record.
- a filled Resume form: applied once, by the services (`Gate.apply`), unless the record already settled the gate;
  either way the run input, code and all, is deleted from Prefect's storage afterwards.
"""

from __future__ import annotations

import time
from typing import Any, Generic, TypeVar

from pydantic import ValidationError
from prefect import get_run_logger
from prefect.input import RunInput

from flows._change_page import publish_change_page
from flows._pause_key import GateKind, PauseKey
from flows._prefect_api import (
    empty_answer,
    forget_answer,
    has_fired,
    pause_in_process,
    stored_answer,
    suspend_at,
    was_resumed,
)
from flows._wiring import wiring
from models import InputError

Settled = TypeVar("Settled")


def is_bare(answer: RunInput) -> bool:
    """A resume that carries nothing: the bare "look again" of a path that recorded its decision through the
    services first, or a Resume form left untouched. It authorises nothing; the gate re-reads the record."""
    return answer.model_dump() == type(answer)().model_dump()


class Gate(Generic[Settled]):
    """One gate of a change. Subclasses say what settles it, what its Resume form shows and how a filled form is
    applied; `wait_at` does the waiting."""

    kind: GateKind
    key: str  # the change's key ("" for a gate of no change: the lockdown's)
    empty_resume_is_an_attempt = False
    # A gate a person answers waits hot first, for its type's `hot_gate`; the window waits for the clock.
    waits_for_a_person = True

    def settled(self) -> Settled | None:
        """What the record says ended the wait (read through the services), or None while it must wait on."""
        raise NotImplementedError

    def gate(self) -> str:
        """The gate within its kind (`r2`, `pre-0`): may change while it waits (an amendment opens a new round)."""
        raise NotImplementedError

    def form(self, refusal: str | None) -> Any:
        """The Resume form (`SomeInput.with_initial_data(description=...)`; every field has a default, so a bare
        resume validates), its Markdown saying why the last filled form was not applied (`refusal`)."""
        raise NotImplementedError

    def apply(self, answer: RunInput, key: PauseKey) -> str | None:
        """Record a filled form through the services, once per `key` (its attempt id); the refusal, or None."""
        raise NotImplementedError

    def before_wait(self, attempt: int) -> None:
        """Before each wait, e.g. tell the people it waits for (the outbox sends each message once)."""


def form_description(lines: list[str], refusal: str | None) -> str:
    """A Resume form's Markdown: its paragraphs, then why the last filled form was not applied, when it was not."""
    return "\n\n".join([*lines, *([f"> **The last attempt was refused:** {refusal}"] if refusal else [])])


def hot_period_s(gate: Gate) -> float:
    """How long the gate waits in its run's process before it suspends: its change type's `hot_gate`."""
    if not gate.waits_for_a_person or not gate.key:
        return 0.0
    services = wiring().services
    return services.rules(services.changes.get(gate.key)).policy.hot_gate.total_seconds()


def wait_at(gate: Gate[Settled]) -> Settled:
    """Wait until the record settles the gate, first in the run's process (the type's hot period: an answer moves
    the run within about a second), then suspended (holding no worker); apply each filled Resume form that comes
    back meanwhile."""
    logger = get_run_logger()
    refusal: str | None = None
    attempt = 0
    hot_left = hot_period_s(gate)  # per process: a restarted or resumed run waits hot again, once
    while True:
        settled = gate.settled()
        if settled is not None:
            return settled
        if gate.key:
            publish_change_page(gate.key)  # the change's page shows what it waits for now (issue 30)
        gate.before_wait(attempt)
        attempt += 1
        key = PauseKey(gate.kind, gate.gate(), attempt)
        form = gate.form(refusal)  # once per wait: it reads the change and its brief
        try:
            if has_fired(str(key)):
                # A re-run replaying its gates: the answer this key got and nobody applied yet (a crash came
                # between); nothing when it was applied (and deleted), or never came.
                replayed = stored_answer(form, str(key))
                if replayed is None:
                    if not was_resumed(str(key)):
                        continue  # it ran out (hot) or the run died waiting: nobody answered
                    replayed = empty_answer(form, str(key))  # an empty Resume, or one applied
                answer = replayed
            elif hot_left > 0:
                started = time.monotonic()
                settings = wiring().settings
                hot_answer = pause_in_process(form, str(key), hot_left, settings.hot_gate_poll_s,
                                              settings.hot_gate_yield_after_s)
                # (Given up early for a run that waits for a slot: the rest of the hot period goes with it.)
                hot_left = 0 if hot_answer is None else hot_left - (time.monotonic() - started)
                if hot_answer is None:
                    continue  # nobody answered while it was hot: look at the record, then suspend
                answer = hot_answer
            else:
                answer = suspend_at(form, str(key))
        except ValidationError:
            # A stored answer that does not fit the form any more (a checklist whose items changed): nothing to
            # apply; wait again under the next key.
            logger.warning("%s: its stored answer does not fit the form; waiting again", key)
            continue
        if is_bare(answer) and not gate.empty_resume_is_an_attempt:
            refusal = None
            continue
        try:
            # Settled meanwhile by a path that records first (the CLI's answer to a canary gate): the form beside
            # it is not applied.
            refusal = None if gate.settled() is not None else gate.apply(answer, key)
        except InputError as exc:
            refusal = str(exc)  # malformed (a control character in a name): refused, and nothing was written
        finally:
            forget_answer(answer)  # applied or refused: the code it carried stays out of Prefect's storage
        if refusal:
            logger.warning("%s refused: %s", key, refusal)

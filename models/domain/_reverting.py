"""Rolling back a change after it completed (issue 32): a change of its own, of the type policies.yaml `rollback.as`
names (approved as an emergency is, at any time), filed within `rollback.within` of the completion, linked to the
change it reverts (`rolls_back`). Its steps are the reverted change's: its template's rollback commands and, for
a canary, the service's traffic back to the stable version; its verification is the reverted change's."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from ._change_types import article
from ._errors import FieldProblem
from ._lifecycle import implemented_successfully
from ._policy_file import PolicySet
from ._templates import ChangeTemplate


class Revertible(Protocol):
    key: str | None
    type: str
    title: str
    service: str
    environment: str | None
    state: str
    outcome: str | None
    ended_at: datetime | None
    template: str | None
    canary: dict[str, Any] | None
    risk_answers: dict[str, Any]


class Reverting(Protocol):
    """What the rules read of a rollback request."""

    type: str
    service: str
    environment: str | None
    rolls_back: str | None


def rollback_refusal(policies: PolicySet, original: Revertible, now: datetime) -> str | None:
    """Why `original` may not be rolled back this way now (None: it may)."""
    if not implemented_successfully(original.state, original.outcome):
        return (f"{original.key} is {original.state} (outcome {original.outcome or 'none'}): only a change that "
                "completed successfully is rolled back after the fact; a running one is aborted (changeflow abort)")
    within = policies.rollback.within
    if original.ended_at is None or now - original.ended_at > within:
        ended = f"{original.ended_at:%Y-%m-%d %H:%M} UTC" if original.ended_at else "at an unknown time"
        return (f"{original.key} completed {ended}, longer ago than policies.yaml rollback.within allows "
                f"({within}): undo it with a change of its own")
    return None


def reverting_problems(policies: PolicySet, request: Reverting, original: Revertible | None, now: datetime,
                       already: str | None) -> list[FieldProblem]:
    """What is wrong with a request that rolls back `original` (its `rolls_back`); `already`: another rollback of
    it, running or done."""
    if not request.rolls_back:
        return []
    if original is None:
        return [FieldProblem("rolls_back", f"no change {request.rolls_back!r}")]
    as_type = policies.rollback.as_
    problems = []
    if request.type != as_type:
        problems.append(FieldProblem("type", f"a rollback is filed as {article(as_type)} {as_type} change "
                                             "(policies.yaml rollback.as)"))
    where = original.environment or policies.default_environment  # (NULL: filed before environments existed)
    if (request.service, request.environment or policies.default_environment) != (original.service, where):
        problems.append(FieldProblem("rolls_back", f"{original.key} changed {original.service} in {where}: its "
                                                   "rollback names the same service and environment"))
    refusal = rollback_refusal(policies, original, now)
    if refusal is not None:
        problems.append(FieldProblem("rolls_back", refusal))
    if already is not None:
        problems.append(FieldProblem("rolls_back", f"{original.key} is already rolled back by {already}"))
    return problems


def rollback_request(policies: PolicySet, original: Revertible, *, person: str, reason: str,
                     incident_id: str | None, incident_severity: str | None) -> dict[str, Any]:
    """The request that rolls back `original`: what `changeflow rollback` files (and anyone may file by hand)."""
    undo = "its template's rollback commands" if original.template else "a person's confirmed manual rollback"
    if original.canary:
        undo = f"all traffic back to {original.canary.get('stable_version', 'the stable version')}, then {undo}"
    request: dict[str, Any] = {
        "type": policies.rollback.as_, "title": f"Roll back {original.key}: {original.title}"[:200],
        "service": original.service, "environment": original.environment, "requester": person,
        "rolls_back": original.key, "description": reason,
        "implementation_plan": f"Undo {original.key}: {undo}.",
        "rollback_plan": f"File {original.key}'s change again.", "risk": original.risk_answers or None,
    }
    extra = {"incident_id": incident_id, "incident_severity": incident_severity}
    return {**request, **{name: value for name, value in extra.items() if value}}


def reverting_template(template: ChangeTemplate | None) -> ChangeTemplate | None:
    """The steps of a rollback, from the reverted change's template: its rollback commands are the
    implementation; its verification checks the service again; nothing automatic undoes a failed rollback (a
    person says what happened)."""
    if template is None:
        return None
    return template.model_copy(update={"implementation_commands": list(template.rollback_commands),
                                       "rollback_commands": [], "idempotent": False})

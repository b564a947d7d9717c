"""Staging first (policies.yaml `environments.<name>.promotion`): a release reaches an environment only after the
same release of the same service shipped, closed and succeeded, in the environment the rule names. Checked when a
change is filed and again when its implementation would begin (the earlier change may have been rolled back
since)."""

from __future__ import annotations

from typing import Protocol

from ._change_types import article
from ._errors import FieldProblem
from ._lifecycle import implemented_successfully
from ._policy_file import PolicySet


class Promoted(Protocol):
    """What the rule reads of the change being filed or started."""

    type: str
    service: str
    environment: str | None
    release: str | None
    promoted_from: str | None


class Proving(Protocol):
    """What the rule reads of the change that shipped the release before."""

    key: str | None
    service: str
    environment: str | None
    release: str | None
    state: str
    outcome: str | None


def promotion_problems(policies: PolicySet, change: Promoted, proving: Proving | None) -> list[FieldProblem]:
    """Why `change` may not ship its release to its environment yet (empty: it may, or no rule holds for it).
    `proving`: the change its `promoted_from` names, as recorded (None: no such change)."""
    environment, place = policies.environment(change.environment)
    rule = place.promotion
    if rule is None or str(change.type) not in rule.types:
        return []
    where = f"{article(str(change.type))} {change.type} change in {environment}"
    problems = []
    if not change.release:
        problems.append(FieldProblem("release", f"{where} names the release it ships (the one shipped in "
                                                f"{rule.from_} first)"))
    if not change.promoted_from:
        return problems + [FieldProblem("promoted_from", f"{where} names the closed change that shipped the same "
                                                         f"release of {change.service} in {rule.from_} first")]
    if proving is None:
        return problems + [FieldProblem("promoted_from", f"no change {change.promoted_from!r}")]
    proving_environment = proving.environment or policies.default_environment
    mismatch = [what for what, ok in (
        (f"it ran in {proving_environment}, not {rule.from_}", proving_environment == rule.from_),
        (f"it changed {proving.service}, not {change.service}", proving.service == change.service),
        (f"it shipped release {proving.release or '(none)'}, not {change.release}",
         not change.release or proving.release == change.release),
        (f"it has not finished successfully (state {proving.state}, outcome {proving.outcome or 'none'})",
         implemented_successfully(proving.state, proving.outcome)),
    ) if not ok]
    if mismatch:
        problems.append(FieldProblem("promoted_from", f"{proving.key} does not prove the release: "
                                                      + "; ".join(mismatch)))
    return problems

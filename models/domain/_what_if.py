"""Policy what-if (issue 34): what a policy set would have decided for a change already filed, with the same rules
submission applies (`change_type(...).request_problems`, the notice, `required_approvals`, `evaluate`), so a replay
is never a second implementation of any rule. The service compares two policy sets over the record."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from ._change_types import change_type
from ._directory import Directory
from ._enums import RiskLevel
from ._errors import InputError
from ._escalation import format_wait
from ._policy import GivenApproval, RequiredApproval, evaluate, required_approvals
from ._policy_file import PolicySet, RiskPolicy


@dataclass(frozen=True)
class FiledChange:
    """A recorded change as the rules read it: its request fields (`request`: anything with the request's attribute
    names, a stored row will do), when it was filed, its risk score and who approved it in its last round."""

    key: str
    type: str
    environment: str | None
    created_at: datetime
    planned_start: datetime | None
    risk_score: int
    request: object
    approvals: tuple[GivenApproval, ...] = ()


@dataclass(frozen=True)
class Judgement:
    """What one policy set decides for a filed change."""

    refused: tuple[str, ...]
    risk_level: RiskLevel | None
    required: tuple[RequiredApproval, ...]
    approvers_suffice: bool | None  # None: nobody approved it (not approved, or pre-approved)
    notice_short_by: timedelta | None  # how much earlier it would have had to be filed


def risk_level_of(score: int, policy: RiskPolicy) -> RiskLevel:
    """The level a risk score reaches under `policy`'s thresholds (the score itself is the answers' and the
    service's history at filing, as recorded)."""
    if score >= policy.high_from:
        return RiskLevel.high
    if score >= policy.medium_from:
        return RiskLevel.medium
    return RiskLevel.low


def judge(change: FiledChange, policies: PolicySet, directory: Directory) -> Judgement:
    """The decisions `policies` would have made when `change` was filed: refusals at submit (a type or environment
    it lacks, a required field, a severity its type is not for, the notice), the risk level, the approvals it would
    have needed, and whether the people who approved it would have sufficed."""
    try:
        rules = change_type(policies, change.type, change.environment)
    except InputError as exc:
        return Judgement((str(exc).removeprefix("invalid change request: "),), None, (), None, None)
    refused = [f"{p.field}: {p.message}" for p in rules.request_problems(change.request)]
    short_by = None
    if rules.scheduled and change.planned_start is not None and rules.policy.notice:
        earliest = change.created_at + rules.policy.notice
        if change.planned_start < earliest:
            short_by = earliest - change.planned_start
            refused.append(f"planned_start: {rules.name} needs {format_wait(rules.policy.notice)} notice; filed "
                           f"{format_wait(max(change.planned_start - change.created_at, timedelta(0)))} ahead")
    level = risk_level_of(change.risk_score, policies.risk)
    required = tuple(required_approvals(change.type, level, policies, directory, change.environment))
    suffice = (evaluate(required, change.approvals, reject_on_any_rejection=False).satisfied
               if change.approvals else None)
    return Judgement(tuple(refused), level, required, suffice, short_by)


def differences(before: Judgement, after: Judgement) -> list[str]:
    """What changes between two judgements of one change, each said in a line."""
    found = [f"refused: {reason}" for reason in after.refused if reason not in before.refused]
    found += [f"no longer refused: {reason}" for reason in before.refused if reason not in after.refused]
    if before.risk_level != after.risk_level and after.risk_level is not None:
        found.append(f"risk {getattr(before.risk_level, 'value', before.risk_level)} -> {after.risk_level.value}")
    if set(before.required) != set(after.required) and after.risk_level is not None:
        found.append(f"approvals {_describe(before.required)} -> {_describe(after.required)}")
    if before.approvers_suffice and after.approvers_suffice is False:
        found.append("its approvers would not have sufficed")
    return found


def _describe(required: tuple[RequiredApproval, ...]) -> str:
    return " + ".join(f"{r.count} x {r.role}" for r in sorted(required, key=lambda r: r.role)) or "none"

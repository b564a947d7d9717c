"""The policy engine: who must approve a change, whether the approvals given satisfy it, and who may act.

Segregation of duties (operations spec, change control): the requester never approves their own change,
one person fills one role per change, and authority comes from the approver directory, never from a form.
Because the Prefect UI carries no identity, each approver proves who they are with a personal approval
code: an HMAC of change key, approver and round under the server secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from ._enums import Act, Decision, RiskLevel
from ._directory import Directory
from ._policy_file import ApprovalRequirement, PolicySet
from ._errors import PolicyViolation
from ._score import Standing, score_rule_approvals


@dataclass(frozen=True)
class RequiredApproval:
    role: str
    count: int


@dataclass(frozen=True)
class GivenApproval:
    approver: str
    role: str
    decision: Decision
    on_behalf_of: str | None = None  # the delegator a delegate acted for (models.domain._delegation)

    @property
    def party(self) -> str:
        """Who the approval speaks for: a delegate's approval is their delegator's."""
        return self.on_behalf_of or self.approver


@dataclass(frozen=True)
class PolicyEvaluation:
    satisfied: bool
    rejected: bool
    missing: dict[str, int] = field(default_factory=dict)
    approved_by: tuple[str, ...] = ()

    def describe_missing(self) -> str:
        return ", ".join(f"{count} x {role}" for role, count in sorted(self.missing.items())) or "nothing"


def _resolve_count(requirement: ApprovalRequirement, directory: Directory) -> int:
    if requirement.quorum == "majority":
        return len(directory.holders(requirement.role)) // 2 + 1
    return requirement.count or 1


def required_approvals(
    change_type: str, risk_level: RiskLevel, policies: PolicySet, directory: Directory, environment: str | None = None,
    standing: Standing | None = None,
) -> list[RequiredApproval]:
    """The roles and counts a change needs: its type's approvals (in its environment), what its risk adds, and what
    policies.yaml `score.rules` add for its service's `standing` when it was filed (None: no rule reads one)."""
    policy = policies.for_type(change_type, environment)
    by_score = score_rule_approvals(policies.score.rules, change_type, standing) if standing is not None else []
    needed: dict[str, int] = {}
    for requirement in (*policy.approvals, *policy.extra_for_risk.get(RiskLevel(risk_level), []), *by_score):
        # Several rules naming the same role ask for the larger count, not the sum.
        needed[requirement.role] = max(needed.get(requirement.role, 0), _resolve_count(requirement, directory))
    return [RequiredApproval(role, count) for role, count in needed.items()]


def evaluate(
    required: Iterable[RequiredApproval], given: Iterable[GivenApproval], *, reject_on_any_rejection: bool = True
) -> PolicyEvaluation:
    given = list(given)
    approvals = [g for g in given if g.decision == Decision.approve]
    rejected = reject_on_any_rejection and any(g.decision == Decision.reject for g in given)
    counted = Counter(g.role for g in approvals)
    missing = {r.role: r.count - counted[r.role] for r in required if counted[r.role] < r.count}
    return PolicyEvaluation(
        satisfied=not missing and not rejected,
        rejected=rejected,
        missing=missing,
        approved_by=tuple(g.approver for g in approvals),
    )


def authorise_decision(
    *,
    requester: str,
    approver: str,
    role: str | None,
    decision: Decision,
    required: list[RequiredApproval],
    given: list[GivenApproval],
    directory: Directory,
    stands_in_for: Mapping[str, str] | None = None,
) -> str:
    """Check that `approver` may decide now; return the role they act in, or raise PolicyViolation.

    `directory` is the one in force for this change (delegates hold their delegators' roles) and `stands_in_for`
    maps each role `approver` holds only as a delegate to the delegator: a person and their delegate are one party
    and fill one role per change."""
    if approver not in directory.people:
        raise PolicyViolation(f"{approver!r} is not in the approver directory")
    if approver == requester:
        raise PolicyViolation(f"{approver} requested this change and cannot approve or reject it (self-approval)")
    earlier = next((g for g in given if approver in (g.approver, g.on_behalf_of)), None)
    if earlier is not None:
        raise PolicyViolation(
            f"{approver} already acted on this change as {earlier.role}"
            f"{' (through ' + earlier.approver + ', their delegate)' if earlier.approver != approver else ''}; "
            "one person fills one role per change"
        )
    required_roles = [r.role for r in required]
    if role is not None:
        if role not in required_roles:
            raise PolicyViolation(f"role {role!r} is not needed for this change (needed: {', '.join(required_roles)})")
        if not directory.holds(approver, role):
            raise PolicyViolation(f"{approver} does not hold the role {role!r} in the approver directory")
    else:
        held = [r for r in required_roles if directory.holds(approver, r)]
        if not held:
            raise PolicyViolation(
                f"{approver} holds none of the roles this change needs ({', '.join(required_roles)})"
            )
        if decision == Decision.approve:
            still_open = evaluate(required, given).missing
            role = next((r for r in held if r in still_open), held[0])
        else:
            role = held[0]
    if decision == Decision.approve and role not in evaluate(required, given).missing:
        raise PolicyViolation(f"the {role} approvals this change needs are already given")
    delegator = (stands_in_for or {}).get(role)
    through = next((g for g in given if delegator in (g.approver, g.on_behalf_of)), None) if delegator else None
    if through is not None:
        raise PolicyViolation(f"{delegator}, for whom {approver} stands in as {role}, has already acted on this "
                              f"change as {through.role}; a person and their delegate fill one role per change")
    return role


# ---- approval codes -------------------------------------------------------------------------------------

def approval_code(secret: bytes, change_key: str, approver: str, round_: int, act: Act) -> str:
    """A short personal code, e.g. 'K7Q2-M9XA-3BTD' (60 bits), for one act of one person on one change in one
    round: shown only to that person. The fields are encoded as canonical JSON, so no field can borrow bytes from
    its neighbour (a name with a separator in it would otherwise make another person's message)."""
    message = json.dumps([change_key, approver, round_, Act(act).value], separators=(",", ":"))
    digest = hmac.new(secret, message.encode(), hashlib.sha256).digest()
    text = base64.b32encode(digest).decode()[:12]
    return "-".join(text[i : i + 4] for i in range(0, 12, 4))


def _normalise_code(code: str) -> str:
    return "".join(ch for ch in code.upper() if ch.isalnum())


def verify_code(secret: bytes, change_key: str, approver: str, round_: int, act: Act, code: str) -> bool:
    expected = _normalise_code(approval_code(secret, change_key, approver, round_, act))
    return hmac.compare_digest(expected.encode(), _normalise_code(code or "").encode())

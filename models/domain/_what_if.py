"""Policy what-if (issue 34): what a policy set would have decided for a change already filed, with the same rules
submission applies (`change_type(...).request_problems`, the notice, `required_approvals`, `evaluate`), so a replay
is never a second implementation of any rule. The service compares two policy sets over the record."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from ._change_types import ChangeTypeRules, change_type
from ._directory import Directory
from ._enums import RiskLevel
from ._errors import InputError
from ._fields import within_range
from ._escalation import format_wait
from ._policy import GivenApproval, RequiredApproval, evaluate, required_approvals
from ._policy_file import PolicySet
from ._risk import risk_level_of
from ._score import EndedHistory, Standing, pre_approval_withheld, score_rule_approvals
from ._scheduling import START_GRACE, WindowSpec, freezes_hit, inside_a_window, planned_span
from ._windows import scheduled_windows

# How far past a planned start a replay looks for a window the change would fit in.
_WINDOW_HORIZON = timedelta(days=100)


@dataclass(frozen=True)
class FiledChange:
    """A recorded change as the rules read it: its request fields (`request`: anything with the request's attribute
    names, a stored row will do), when it was filed, its risk score and who approved it in its last round."""

    key: str
    type: str
    environment: str | None
    created_at: datetime
    planned_start: datetime | None
    planned_end: datetime | None
    risk_score: int
    request: object
    approvals: tuple[GivenApproval, ...] = ()
    service: str = ""
    template: str | None = None


@dataclass(frozen=True)
class Judgement:
    """What one policy set decides for a filed change."""

    refused: tuple[str, ...]
    risk_level: RiskLevel | None
    required: tuple[RequiredApproval, ...]
    approvers_suffice: bool | None  # None: nobody approved it (not approved, or pre-approved)
    added_wait: timedelta | None  # how much later it could have started (a longer notice, the next window)
    score_rules: tuple[str, ...] = ()  # the score rules that added approvals, said
    pre_approval_withheld: str | None = None  # why its pre-approved template would not skip the gate


def judge(change: FiledChange, policies: PolicySet, directory: Directory,
          ad_hoc: Sequence[WindowSpec] = (), freezes: Sequence[WindowSpec] = ()) -> Judgement:
    """The decisions `policies` would have made when `change` was filed (see `Judge`)."""
    return Judge(policies, directory)(change, ad_hoc, freezes)


_NO_HISTORY = EndedHistory(())


class Judge:
    """The decisions one policy set and directory would have made, for many changes: each type's rules and each
    (type, risk level, environment)'s approvals are worked out once, not once per change (80,000 in a quarter of
    the 1M history)."""

    def __init__(self, policies: PolicySet, directory: Directory, histories: Mapping[str, EndedHistory] | None = None):
        """`histories`: each service's ended changes, for the standing a score rule reads (none: no change)."""
        self._policies, self._directory = policies, directory
        self._histories = histories or {}
        self._rules: dict[tuple[str, str | None], ChangeTypeRules | str] = {}
        self._required: dict[tuple[object, ...], tuple[RequiredApproval, ...]] = {}

    def __call__(self, change: FiledChange, ad_hoc: Sequence[WindowSpec] = (),
                 freezes: Sequence[WindowSpec] = ()) -> Judgement:
        """Refusals at submit (a type or environment the policy set lacks, a required field, a severity its type is
        not for, the notice, a planned span outside every window of its environment and of `ad_hoc`, the ad hoc
        windows recorded for its service, or inside one of `freezes` that its type does not override), the risk
        level, the approvals it would have needed, and whether the people who approved it would have sufficed."""
        policies = self._policies
        rules = self._rules_of(change.type, change.environment)
        if isinstance(rules, str):
            return Judgement((rules,), None, (), None, None)
        refused = [f"{p.field}: {p.message}" for p in rules.request_problems(change.request)]
        waits = []
        if rules.scheduled and change.planned_start is not None:
            start, end = planned_span(change.planned_start, change.planned_end)
            earliest = change.created_at + rules.policy.notice
            if rules.policy.notice and start < earliest - START_GRACE:  # the grace submission allows
                waits.append(earliest - start)
                refused.append(f"planned_start: {rules.name} needs {format_wait(rules.policy.notice)} notice; filed "
                               f"{format_wait(max(start - change.created_at, timedelta(0)))} ahead")
            windows = [*scheduled_windows(policies.windows_in(change.environment), start - timedelta(days=1),
                                          end + _WINDOW_HORIZON), *ad_hoc]
            if not inside_a_window(windows, start, end):
                fits = sorted((w for w in windows if w.starts_at >= max(start, earliest)
                               and w.ends_at - w.starts_at >= end - start), key=lambda w: w.starts_at)
                waits += [fits[0].starts_at - start] if fits else []
                place = change.environment or "its environment"
                following = (f"; the next it fits is {fits[0].title or fits[0].kind} "
                             f"{fits[0].starts_at:%Y-%m-%d %H:%M} UTC") if fits else ""
                refused.append(f"planned_start: outside every window of {place}{following}")
        if change.planned_start is not None and not rules.overrides_freeze:  # any type, as submission's clash check
            start, end = planned_span(change.planned_start, change.planned_end)
            if hit := freezes_hit(freezes, start, end):
                refused += [f"planned_start: {reason}" for reason in hit]
                waits.append(max(f.ends_at for f in freezes if f.freeze and f.overlaps(start, end)) - start)
        level = risk_level_of(change.risk_score, policies.risk)
        standing, fired = self._standing(change)
        required = self._required_for(change.type, level, change.environment, standing, fired)
        suffice = (evaluate(required, change.approvals, reject_on_any_rejection=False).satisfied
                   if change.approvals else None)
        said = tuple(f"{change.service or 'its service'} succeeded in {standing.success_rate:.0%} of "
                     f"{standing.changes} changes over {format_wait(policies.score.window)}, under "
                     f"{self._policies.score.rules[n].below:.0%}" for n in fired) if standing else ()
        return Judgement(tuple(refused), level, required, suffice, max(waits) if waits else None, said,
                         self._withheld(change))

    def _withheld(self, change: FiledChange) -> str | None:
        """Why a change from a pre-approved template would go through the gate after all: its service's record at
        its filing, short of `score.pre_approval` (None: it would not, or it is not from such a template)."""
        score = self._policies.score
        if not change.template or change.template not in self._policies.pre_approved_templates:
            return None
        if score.pre_approval is None:
            return None
        standing = self._histories.get(change.service, _NO_HISTORY).standing(change.created_at, score.window)
        return pre_approval_withheld(score.pre_approval, standing, score.window)

    def _standing(self, change: FiledChange) -> tuple[Standing | None, tuple[int, ...]]:
        """Its service's standing when it was filed, where a score rule reads one for its type, and which rules
        fire (their indexes)."""
        rules = self._policies.score.rules
        if not any(change.type in rule.types for rule in rules):
            return None, ()
        standing = self._histories.get(change.service, _NO_HISTORY).standing(change.created_at,
                                                                             self._policies.score.window)
        return standing, tuple(n for n, rule in enumerate(rules) if score_rule_approvals([rule], change.type, standing))

    def _rules_of(self, type_name: str, environment: str | None) -> ChangeTypeRules | str:
        """The type's rules in `environment`, or why there are none (a type or environment the set lacks)."""
        key = (type_name, environment)
        if key not in self._rules:
            try:
                self._rules[key] = change_type(self._policies, type_name, environment)
            except InputError as exc:
                self._rules[key] = str(exc).removeprefix("invalid change request: ")
        return self._rules[key]

    def _required_for(self, type_name: str, level: RiskLevel, environment: str | None, standing: Standing | None,
                      fired: tuple[int, ...]) -> tuple[RequiredApproval, ...]:
        key = (type_name, level, environment, fired)  # the standing matters only through the rules it fires
        if key not in self._required:
            self._required[key] = tuple(required_approvals(type_name, level, self._policies, self._directory,
                                                           environment, standing))
        return self._required[key]


def differences(before: Judgement, after: Judgement) -> list[str]:
    """What changes between two judgements of one change, each said in a line."""
    found = [f"refused: {reason}" for reason in after.refused if reason not in before.refused]
    found += [f"no longer refused: {reason}" for reason in before.refused if reason not in after.refused]
    if before.risk_level != after.risk_level and after.risk_level is not None:
        found.append(f"risk {getattr(before.risk_level, 'value', before.risk_level)} -> {after.risk_level.value}")
    if set(before.required) != set(after.required) and after.risk_level is not None:
        found.append(f"approvals {_describe(before.required)} -> {_describe(after.required)}")
    found += [f"score rule: {rule}" for rule in after.score_rules if rule not in before.score_rules]
    if after.pre_approval_withheld and not before.pre_approval_withheld:
        found.append(f"no longer pre-approved: {after.pre_approval_withheld}")
    if before.approvers_suffice and after.approvers_suffice is False:
        found.append("its approvers would not have sufficed")
    return found


def _describe(required: tuple[RequiredApproval, ...]) -> str:
    return " + ".join(f"{r.count} x {r.role}" for r in sorted(required, key=lambda r: r.role)) or "none"


def proposed_freeze(text: str, number: int) -> WindowSpec:
    """`START/END` (ISO 8601, UTC when it names no zone) as a proposed freeze for every service, "proposed freeze
    N"; anything else is an input error naming the field `freeze`."""
    start, slash, end = text.partition("/")
    try:
        if not slash:
            raise ValueError("not START/END")
        starts_at, ends_at = (_moment(part) for part in (start, end))
    except ValueError as exc:
        raise InputError(f"freeze: {text[:60]!r} is not START/END (e.g. 2026-12-20T00:00/2027-01-04T00:00): {exc}",
                         [("freeze", "not START/END")]) from None
    if ends_at <= starts_at:
        raise InputError(f"freeze: {text[:60]!r} ends before it starts", [("freeze", "ends before it starts")])
    return WindowSpec("freeze", starts_at, ends_at, f"proposed freeze {number}", freeze=True)


def _moment(text: str) -> datetime:
    moment = datetime.fromisoformat(text.strip())
    return within_range(moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc))

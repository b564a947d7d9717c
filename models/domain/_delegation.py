"""Delegation (issue 27): a person who will be away names a delegate for a period. During it the delegate holds
the person's roles and owns their services, so every gate that asks "who may act" (approvals, early starts, work,
reviews, canary gates, withdrawals) lets the delegate act for them; outside it the delegate is who they always
were. The delegate proves who they are with their own code: a delegation moves authority, never a secret.

Segregation of duties holds through a delegate: nobody acts for the requester on the requester's own change (a
requester's delegate approving would be self-approval by proxy), and a person and their delegate are one party
on a change (one fills a role, the other may not fill another).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterable

from ._errors import FieldProblem
from ._directory import Directory


@dataclass(frozen=True)
class Delegation:
    delegator: str
    delegate: str
    starts_at: datetime
    ends_at: datetime
    reason: str = ""

    def active_at(self, at: datetime) -> bool:
        """The period is half-open: from `starts_at` up to, not including, `ends_at`."""
        return self.starts_at <= at < self.ends_at


def delegation_problems(delegation: Delegation, directory: Directory, *, now: datetime,
                        longest: timedelta) -> list[FieldProblem]:
    """What is wrong with a delegation someone asks to record (empty: nothing)."""
    problems = []
    for field, name in (("delegator", delegation.delegator), ("delegate", delegation.delegate)):
        if name not in directory.people:
            problems.append(FieldProblem(field, f"{name!r} is not a person of the approver directory"))
    if delegation.delegate == delegation.delegator:
        problems.append(FieldProblem("delegate", "a person cannot delegate to themselves"))
    if delegation.ends_at <= delegation.starts_at:
        problems.append(FieldProblem("until", "the period must end after it starts"))
    elif delegation.ends_at <= now:
        problems.append(FieldProblem("until", "the period is already over"))
    elif delegation.ends_at - delegation.starts_at > longest:
        problems.append(FieldProblem("until", f"a delegation lasts at most {longest} (policies.yaml "
                                              "`longest_delegation`): name a new one when it ends"))
    if not delegation.reason.strip():
        problems.append(FieldProblem("reason", "say why (the auditor reads it beside every act of the delegate)"))
    return problems


def active_delegations(delegations: Iterable[Delegation], at: datetime, *, not_from: str | None = None,
                       directory: Directory | None = None) -> list[Delegation]:
    """The delegations in force at `at`, except those from `not_from` (a change's requester)."""
    return [d for d in delegations if d.active_at(at) and d.delegator != not_from
            and (directory is None or (d.delegator in directory.people and d.delegate in directory.people))]


def with_delegates(directory: Directory, delegations: Iterable[Delegation], at: datetime, *,
                   requester: str | None = None) -> Directory:
    """The directory as it stands at `at` for a change filed by `requester`: each delegate also holds their
    delegators' roles and owns their services. Not transitive: a delegate's delegate gets the delegate's own
    roles only."""
    active = active_delegations(delegations, at, not_from=requester, directory=directory)
    if not active:
        return directory
    people = dict(directory.people)
    for d in active:
        added = set(directory.people[d.delegator].roles) - set(people[d.delegate].roles)
        if added:
            people[d.delegate] = people[d.delegate].model_copy(
                update={"roles": [*people[d.delegate].roles, *sorted(added)]})
    services = {
        name: entry.model_copy(update={"owners": [*entry.owners, *sorted(
            {d.delegate for d in active if d.delegator in entry.owners} - set(entry.owners))]})
        for name, entry in directory.services.items()
    }
    return directory.model_copy(update={"people": people, "services": services})


def acting_for(person: str, role: str, directory: Directory, delegations: Iterable[Delegation], at: datetime, *,
               requester: str | None = None) -> str | None:
    """Whom `person` acts for when they act in `role` at `at`: None when the role is their own, else the
    delegator (other than the requester) whose role it is."""
    if directory.holds(person, role):
        return None
    return next((d.delegator for d in active_delegations(delegations, at, not_from=requester, directory=directory)
                 if d.delegate == person and directory.holds(d.delegator, role)), None)


def delegates_of(person: str, delegations: Iterable[Delegation], at: datetime) -> list[str]:
    return sorted({d.delegate for d in delegations if d.delegator == person and d.active_at(at)})

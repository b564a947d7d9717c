"""Who hears about a change: one rule per kind of message, so every flow tells the same people.

Only people in the directory are ever addressed: a requester or owner name that is not there has no channel.
"""

from __future__ import annotations

from typing import Iterable, Protocol

from ._directory import Directory


class AboutAService(Protocol):
    requester: str
    service: str


def _known(directory: Directory, people: Iterable[str]) -> list[str]:
    return sorted({p for p in people if p in directory.people})


def stakeholders(directory: Directory, service: str) -> list[str]:
    """The service's owners and stakeholders: told of maintenance on it."""
    entry = directory.services.get(service)
    return _known(directory, [*entry.owners, *entry.stakeholders] if entry else [])


def responsible(change: AboutAService, directory: Directory) -> list[str]:
    """The requester and the service's owners: the people who act on a change (checklist items, reviews)."""
    entry = directory.services.get(change.service)
    return _known(directory, [change.requester, *(entry.owners if entry else [])])


def responsible_and_on_call(change: AboutAService, directory: Directory, on_call_role: str | None) -> list[str]:
    """The requester, the service's owners and the people on call (policies.yaml `on_call`): told when something goes
    wrong while the change runs (its run crashed, a canary waits for a person). Not the type's approval ladder: a
    standard change's first rung is its team leads, who are not on call for a crash (issue 31)."""
    on_call = directory.holders(on_call_role) if on_call_role else []
    return sorted({*responsible(change, directory), *on_call})


def everyone_concerned(change: AboutAService, directory: Directory, deciders: Iterable[str] = ()) -> list[str]:
    """The requester, whoever decided on it, and the service's owners and stakeholders: told of its outcome."""
    return _known(directory, [change.requester, *deciders, *stakeholders(directory, change.service)])


def requester_and(change: AboutAService, directory: Directory, others: Iterable[str]) -> list[str]:
    """The requester and the given people (the approvers still asked, when a change expires)."""
    return _known(directory, [change.requester, *others])

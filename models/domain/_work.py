"""Manual work: a change without automation is carried out by a person, and only a person can say it was done.

The stages a person confirms, in order: `implemented` (or failed), `verified` (or failed) and, when a manual change
failed, `rolled_back`. Who may confirm them is the change type's policy (`implementers`, `separate_implementer`),
never a name typed in a form alone: the service checks the person's code, this module checks their standing.
"""

from __future__ import annotations

from enum import Enum
from typing import Iterable, Protocol

from ._change_types import ChangeTypeRules, article
from ._directory import Directory


class WorkStage(str, Enum):
    implemented = "implemented"
    verified = "verified"
    rolled_back = "rolled_back"


class WorkOutcome(str, Enum):
    done = "done"
    failed = "failed"


class ChangeOwnership(Protocol):
    requester: str
    service: str


def implementers(rules: ChangeTypeRules, change: ChangeOwnership, directory: Directory) -> list[str]:
    """The people who may confirm the change's manual work, from the type's `implementers`."""
    return people_named(rules.policy.implementers, change, directory)


def reviewers(rules: ChangeTypeRules, change: ChangeOwnership, directory: Directory) -> list[str]:
    """The people who may record the change's post-implementation review, from the type's `reviewers`."""
    return people_named(rules.policy.reviewers, change, directory)


def reviewer_refusal(rules: ChangeTypeRules, change: ChangeOwnership, directory: Directory, person: str) -> str | None:
    """Why `person` may not record this change's review (None: they may); identity is checked by the caller."""
    allowed = reviewers(rules, change, directory)
    if person in allowed:
        return None
    why = (f"{person} requested this change and its policy does not name the requester as a reviewer"
           if person == change.requester else f"{person} may not review this {rules.name} change")
    return f"{why} (its reviewers: {', '.join(allowed) or 'nobody in the directory'})"


def people_named(names: list[str], change: ChangeOwnership, directory: Directory) -> list[str]:
    """`requester`, `owner` (the service's owners) and role names, as the people of the directory they name."""
    entry = directory.services.get(change.service)
    people: set[str] = set()
    for who in names:
        if who == "requester":
            people.add(change.requester)
        elif who == "owner":
            people.update(entry.owners if entry else [])
        else:
            people.update(directory.holders(who))
    return sorted(p for p in people if p in directory.people)


def pipeline_implementer_refusal(rules: ChangeTypeRules, change: ChangeOwnership, automation: str) -> str | None:
    """Why the pipeline `automation` may not report the implementation of this change (None: it may). A pipeline
    deploys what it filed: only the change's requester, and only where the type's `implementers` name the
    requester (a policy that wants a person's word keeps it). Its token is checked by the caller."""
    if automation != change.requester:
        return f"{automation} did not file this change: a pipeline reports only on its own changes"
    if "requester" not in rules.policy.implementers:
        return (f"{article(rules.name)} {rules.name} change's implementers "
                f"({', '.join(rules.policy.implementers)}) do not include its requester: a person confirms its work")
    return None


def implementer_refusal(rules: ChangeTypeRules, change: ChangeOwnership, directory: Directory, person: str,
                        approvers: Iterable[str]) -> str | None:
    """Why `person` may not confirm this change's manual work (None: they may). Identity (the code) is checked
    by the caller; this is the policy's part."""
    allowed = implementers(rules, change, directory)
    if person not in allowed:
        return (f"{person} may not confirm the work on this {rules.name} change (its implementers: "
                f"{', '.join(allowed) or 'nobody in the directory'})")
    if rules.policy.separate_implementer and person in set(approvers):
        return f"{person} approved this change and its policy separates approving from implementing"
    return None

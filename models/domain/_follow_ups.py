"""Post-implementation reviews that lead somewhere (issue 33): the operations specification's review (timeline, root
cause, what went well, what could be improved, action items with an owner and a due date), the rules a review must
meet, and the ladder an overdue action item or review climbs. Pure: parsing, checks and dates."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, time, timedelta, timezone

from ._directory import Directory
from ._errors import FieldProblem, InputError
from ._fields import within_range
from ._policy_file import EscalationStep

ITEM_TEXT_MAX = 500
ITEMS_MAX = 20
FAILED_OUTCOMES = ("failed", "rolled_back")  # what DORA counts as a failed change, too


@dataclass(frozen=True)
class ActionItem:
    what: str
    owner: str
    due: datetime  # the moment it is overdue: the end of its due day (UTC) when a date was given


@dataclass(frozen=True)
class Review:
    """What a reviewer records. A review of a change that failed or was rolled back names its root cause."""

    summary: str
    root_cause: str = ""
    timeline: str = ""
    went_well: str = ""
    went_wrong: str = ""
    action_items: tuple[ActionItem, ...] = field(default_factory=tuple)

    def as_data(self) -> dict[str, object]:
        """The review as the audit event records it (its action items with their due moments, ISO 8601)."""
        data = {k: v for k, v in asdict(self).items() if k != "action_items" and v}
        data["action_items"] = [{"number": n, "what": i.what, "owner": i.owner, "due": i.due.isoformat()}
                                for n, i in enumerate(self.action_items, 1)]
        return data


def parse_action_items(text: str) -> list[ActionItem]:
    """One item a line, `what | owner | due` (due: a date, YYYY-MM-DD, or a moment in ISO 8601; UTC unless it says
    otherwise): the Resume form's and the CLI's way of writing them. A malformed line is an input error naming
    `action_items.N`."""
    items = []
    for n, line in enumerate((line for line in text.splitlines() if line.strip()), 1):
        parts = [part.strip() for part in line.split("|")]
        if len(parts) != 3 or not all(parts):
            raise InputError(f"action_items.{n}: {line.strip()[:80]!r} is not 'what | owner | YYYY-MM-DD'",
                             [(f"action_items.{n}", "not 'what | owner | due'")])
        items.append(ActionItem(parts[0], parts[1], _due(parts[2], n)))
    return items


def _due(text: str, n: int) -> datetime:
    try:
        if len(text) == 10:  # a date: due by the end of that day
            moment = datetime.combine(datetime.fromisoformat(text).date(), time(), timezone.utc) + timedelta(days=1)
        else:
            moment = datetime.fromisoformat(text)
            moment = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
        return within_range(moment)
    except ValueError:
        raise InputError(f"action_items.{n}.due: {text[:40]!r} is not a date like 2026-12-20",
                         [(f"action_items.{n}.due", "not a date")]) from None


def review_problems(review: Review, *, outcome: str | None, directory: Directory, now: datetime) -> list[FieldProblem]:
    """Why `review` may not be recorded as given (empty: it may): a summary; a root cause where the change failed or
    was rolled back; each action item something to do, owned by a person of the directory, due after now."""
    problems = []
    if not review.summary.strip():
        problems.append(FieldProblem("summary", "a post-implementation review needs a summary"))
    if outcome in FAILED_OUTCOMES and not review.root_cause.strip():
        problems.append(FieldProblem("root_cause", f"the change {outcome.replace('_', ' ')}: name its root cause"))
    if len(review.action_items) > ITEMS_MAX:
        problems.append(FieldProblem("action_items", f"at most {ITEMS_MAX} action items"))
    for n, item in enumerate(review.action_items, 1):
        if not item.what.strip() or len(item.what) > ITEM_TEXT_MAX:
            problems.append(FieldProblem(f"action_items.{n}.what", f"say what is to be done, in 1 to "
                                         f"{ITEM_TEXT_MAX} characters"))
        if item.owner not in directory.people:
            problems.append(FieldProblem(f"action_items.{n}.owner", f"{item.owner[:40]!r} is not a person of the "
                                         "approver directory"))
        if item.due <= now:
            problems.append(FieldProblem(f"action_items.{n}.due", f"{item.due:%Y-%m-%d %H:%M} UTC is not in the "
                                         "future"))
    return problems


@dataclass(frozen=True)
class Rung:
    """Who is told about something overdue, and which rung of the ladder that is (0: its owner, when due)."""

    level: int
    people: tuple[str, ...]


def rungs_due(due: datetime, now: datetime, owners: Sequence[str], ladder: Sequence[EscalationStep],
              directory: Directory, reached: int) -> list[Rung]:
    """The rungs of the ladder past `reached` (-1: none yet) whose moment has come: the owners when it falls due,
    then each step's role holders (and the owners again) `after` it is overdue."""
    rungs = [Rung(0, tuple(owners))] if now >= due else []
    rungs += [Rung(level, tuple(dict.fromkeys([*owners, *directory.holders(step.role)])))
              for level, step in enumerate(ladder, 1) if now >= due + step.after]
    return [rung for rung in rungs if rung.level > reached]

"""Post-implementation reviews and what follows them (issue 33): a review recorded by a person its type's policy names,
with their code, with the specification's fields and action items (each owned by a person of the directory, due
after now), bound to the audit trail; an action item closed by its owner with their code; the reminders an open
item (or an overdue review) is due, up policies.yaml `follow_ups.escalation`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update

from ..domain import (Act, ActionItem, AuditAction, ChangeState, InputError, PolicyViolation, Review, Rung,
                      checked_name, checked_text, reviewer_refusal, review_problems, rungs_due)
from ..storage import ActionItemRecord, ChangeRequest, append_event
from ._identity import Identities
from ._unit_of_work import UnitOfWork


@dataclass(frozen=True)
class Reminder:
    """A rung of the ladder due for an open action item: who to tell."""

    item: ActionItemRecord
    rung: Rung


class ReviewService:
    def __init__(self, uow: UnitOfWork, identities: Identities):
        self._uow = uow
        self._identities = identities

    def record(self, key: str, *, actor: str, code: str, summary: str, root_cause: str = "", timeline: str = "",
               went_well: str = "", went_wrong: str = "", action_items: Sequence[ActionItem] = ()) -> ChangeRequest:
        """Record the post-implementation review and close the change: by a person its policy names as reviewer,
        with their personal code (a refusal is recorded and raised, an empty Resume's too). Bad input (no summary,
        no root cause of a failure, an action item's owner outside the directory or due in the past) is refused
        naming the field, and nothing is written."""
        checked_name(actor, "reviewer")
        for name, text in (("summary", summary), ("root_cause", root_cause), ("timeline", timeline),
                           ("went_well", went_well), ("went_wrong", went_wrong)):
            checked_text(text, name)
        review = Review(summary, root_cause, timeline, went_well, went_wrong, tuple(action_items))
        uow = self._uow

        def attempt() -> ChangeRequest:
            with uow.write() as session:
                change = uow.load(session, key, for_update=True)
                refusal = (self._identities.refusal(change, actor, code, Act.review)
                           or reviewer_refusal(uow.rules(change), change, uow.directory_for(session, change), actor))
                if refusal is None:
                    now = uow.clock()
                    problems = review_problems(review, outcome=change.outcome, directory=uow.org.directory, now=now)
                    if problems:  # (raised inside the transaction: nothing is written)
                        raise InputError.of(problems)
                    append_event(session, actor=actor, action=AuditAction.review_recorded.value,
                                 change_key=change.key, data=review.as_data(), at=now)
                    for number, item in enumerate(review.action_items, 1):
                        session.add(ActionItemRecord(change_key=change.key, number=number, what=item.what,
                                                     owner=item.owner, due_at=item.due, created_at=now,
                                                     reviewer=actor))
                    return uow.apply_transition(session, change, ChangeState.closed, actor,
                                                "post-implementation review recorded", change.version)
                # The refusal is committed with this transaction, then raised.
                append_event(session, actor=actor or "unknown", action=AuditAction.confirmation_refused.value,
                             change_key=change.key, data={"review": True, "refusal": refusal}, at=uow.clock())
            raise PolicyViolation(f"review: {refusal}")

        return uow.retry(attempt, None)

    def close_item(self, key: str, number: int, *, actor: str, code: str, note: str = "") -> ActionItemRecord:
        """An action item done, said by its owner with their code for follow-ups (anyone else, or a wrong code, is
        refused on the record)."""
        checked_name(actor, "person")
        checked_text(note, "note")
        uow = self._uow
        with uow.write() as session:
            change = uow.load(session, key)
            item = session.execute(select(ActionItemRecord).where(
                ActionItemRecord.change_key == change.key, ActionItemRecord.number == number)
                .with_for_update()).scalars().first()
            if item is None:
                raise InputError(f"number: {change.key} has no action item {number}", [("number", "no such item")])
            refusal = (self._identities.refusal(change, actor, code, Act.follow_up)
                       or (None if actor == item.owner else f"{actor} does not own action item {number} "
                           f"(its owner: {item.owner})")
                       or (f"action item {number} was closed by {item.done_by}" if item.done_at else None))
            now = uow.clock()
            if refusal is None:
                item.done_at, item.done_by, item.note = now, actor, note
                append_event(session, actor=actor, action=AuditAction.action_item_closed.value, change_key=change.key,
                             data={"number": number, "note": note, "late": now > item.due_at}, at=now)
                return item
            append_event(session, actor=actor or "unknown", action=AuditAction.confirmation_refused.value,
                         change_key=change.key, data={"action_item": number, "refusal": refusal}, at=now)
        raise PolicyViolation(f"action item: {refusal}")

    def open_items(self, *, owner: str | None = None, overdue_at: datetime | None = None) -> list[ActionItemRecord]:
        """Open action items (of `owner`; overdue at `overdue_at`), soonest due first."""
        query = select(ActionItemRecord).where(ActionItemRecord.done_at.is_(None))
        if owner is not None:
            query = query.where(ActionItemRecord.owner == owner)
        if overdue_at is not None:
            query = query.where(ActionItemRecord.due_at <= overdue_at)
        with self._uow.read() as session:
            return list(session.execute(query.order_by(ActionItemRecord.due_at, ActionItemRecord.id)).scalars())

    def reminders_due(self) -> list[Reminder]:
        """For each open item fallen due, the rungs past the last one told: its owner at once, then each step of
        policies.yaml `follow_ups.escalation` after it."""
        now, ladder = self._uow.clock(), self._uow.org.policies.follow_ups.escalation
        return [Reminder(item, rung) for item in self.open_items(overdue_at=now)
                for rung in rungs_due(item.due_at, now, [item.owner], ladder, self._uow.org.directory, item.reminded)]

    def reminded(self, item_id: int, level: int) -> None:
        """Rung `level` of the item told (after its messages are in the outbox: a crash between repeats nothing,
        the outbox's keys make the second enqueue a no-op)."""
        with self._uow.write() as session:
            session.execute(update(ActionItemRecord).where(ActionItemRecord.id == item_id,
                                                           ActionItemRecord.reminded < level).values(reminded=level))

    def review_rungs(self, change: ChangeRequest, owners: Sequence[str]) -> list[Rung]:
        """The ladder's rungs due for a review still not recorded (its `owners`: the people who may record it)."""
        if change.review_due_at is None or change.state != ChangeState.review_pending.value:
            return []
        return rungs_due(change.review_due_at, self._uow.clock(), owners,
                         self._uow.org.policies.follow_ups.escalation, self._uow.org.directory, -1)

    def items_of(self, key: str) -> list[ActionItemRecord]:
        with self._uow.read() as session:
            return list(session.execute(select(ActionItemRecord).where(ActionItemRecord.change_key == key)
                                        .order_by(ActionItemRecord.number)).scalars())


"""Deciding from the notification itself (issue 17): a signed single-use link per change, person and round for
e-mail, and a Slack click whose signature the endpoint checked. Both end in `ApprovalService.decide`, the one
decision function the CLI and the Prefect gate use, with the person's code derived here from the identity the
link or Slack vouched for; what cannot even reach it (a forged, expired, used or stale link) is refused here and
recorded as `endpoint_refused`."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..domain import (
    name_problem,
    ApprovalLink,
    AuditAction,
    ChangeState,
    Decision,
    LinkRefused,
    NotFound,
    PolicyViolation,
    form_token,
    form_token_ok,
    read_link,
    sign_link,
)
from ..storage import ChangeRequest, append_event, decode_data, events_for
from ._approvals import ApprovalService, DecisionResult
from ._brief import ApprovalBrief, ApprovalBriefs
from ._unit_of_work import UnitOfWork


@dataclass(frozen=True)
class LinkPage:
    """What the link's page shows (GET: nothing is written)."""

    link: ApprovalLink
    change: ChangeRequest
    person_name: str
    missing: str
    form_token: str
    refusal: str | None  # why the form is not offered; None: it is
    decided: str | None  # the person's decision already on record this round, if any
    brief: ApprovalBrief  # what the approver sees before deciding


class RefusalTally:
    """Unauthenticated refusals per (channel, source) and period: the first is written at once, so an attack shows
    up in the trail within the second; the rest are counted and written as one summary when the period is over
    (seen at the next refusal from anywhere) or the endpoint stops. Held in the endpoint's process; threads of
    its pool share it."""

    @dataclass
    class Period:
        via: str
        source: str
        reason: str
        started: datetime
        first_at: datetime
        last_at: datetime
        count: int = 0  # refusals after the first (the first was written when it came)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[tuple[str, str], RefusalTally.Period] = {}

    def add(self, via: str, source: str, reason: str, now: datetime, every: timedelta) -> list["RefusalTally.Period"]:
        """What to write now: the summaries of periods that are over, then this refusal if it opens a period."""
        with self._lock:
            due = [period for key, period in self._open.items() if now - period.started >= every]
            for period in due:
                del self._open[(period.via, period.source)]
            ended = [period for period in due if period.count]
            current = self._open.get((via, source))
            if current is not None:
                current.count += 1
                if current.count == 1:
                    current.first_at = now
                current.last_at = now
                return ended
            self._open[(via, source)] = RefusalTally.Period(via, source, reason, now, now, now)
            return [*ended, RefusalTally.Period(via, source, reason, now, now, now)]

    def close_all(self) -> list["RefusalTally.Period"]:
        with self._lock:
            ended = [period for period in self._open.values() if period.count]
            self._open.clear()
            return ended


class ApprovalLinks:
    def __init__(self, uow: UnitOfWork, approvals: ApprovalService, briefs: ApprovalBriefs, secret: bytes):
        self._uow = uow
        self._approvals = approvals
        self._briefs = briefs
        self._secret = secret
        self._tally = RefusalTally()

    # ---- issuing ----------------------------------------------------------------------------------------

    def link_for(self, key: str, person: str) -> str:
        """The token of `person`'s link for the change's current round; it expires with the approval SLA."""
        with self._uow.read() as session:
            change = self._uow.load(session, key)
        deadline = self._approvals.approval_deadline(change) or self._uow.clock() + self._approvals.approval_sla(change)
        return sign_link(self._secret, ApprovalLink(change.key, person, change.approval_round, deadline))

    # ---- the page (GET) ---------------------------------------------------------------------------------

    def page(self, token: str) -> LinkPage:
        """Raises LinkRefused for a link changeflow did not sign (nothing to show); otherwise the page, with the
        reason the form is not offered when it is not."""
        link = read_link(self._secret, token)
        with self._uow.read() as session:
            try:
                change = self._uow.load(session, link.change_key)
            except NotFound:
                raise LinkRefused(f"{link.change_key} does not exist (any more)") from None
            decided = self._decided(session, change, link.person)
            refusal = self._refusal(session, change, link)
        person = self._uow.org.directory.people.get(link.person)
        return LinkPage(link, change, person.name if person else link.person,
                        self._approvals.evaluation(change.key).describe_missing(),
                        form_token(self._secret, token), refusal, decided, self._briefs.of(change))

    # ---- deciding (POST, Slack) -------------------------------------------------------------------------

    def decide_with_link(self, token: str, *, given_form_token: str, decision: Decision | str, comment: str,
                         source: str = "unknown", refusals_every: timedelta = timedelta(minutes=1)
                         ) -> tuple[str, DecisionResult]:
        """The decision a link's form posts, and the person the link was for. Refusals are recorded and raised
        (a forged link's per `source` and period `refusals_every`); a link acts once, and a refused decision
        (a rejection without its reason) does not use it up."""
        try:
            link = read_link(self._secret, token)
        except LinkRefused as exc:
            self.record_unauthenticated(str(exc), via="e-mail link", source=source, every=refusals_every)
            raise
        refusal = None
        if not form_token_ok(self._secret, token, given_form_token):
            refusal = ("the decision was not posted from this link's own page (its form token is missing or "
                       "wrong): open the link and use its buttons")
        else:
            with self._uow.read() as session:
                try:
                    change = self._uow.load(session, link.change_key)
                except NotFound:
                    raise LinkRefused(f"{link.change_key} does not exist (any more)") from None
                refusal = self._refusal(session, change, link)
        if refusal is not None:
            self.record_refusal(link.change_key, link.person, refusal, via="e-mail link")
            raise LinkRefused(refusal)
        result = self._decide(link.change_key, link.person, decision, comment, attempt=f"link:{link.link_id}",
                              via="e-mail link")
        if result.repeated:  # a second click that raced the first past the checks above
            self.record_refusal(link.change_key, link.person, "this link was already used", via="e-mail link")
            raise LinkRefused("this link was already used")
        return link.person, result

    def decide_as(self, key: str, person: str, *, round_: int, decision: Decision | str, comment: str,
                  attempt: str, via: str) -> DecisionResult:
        """A decision by a person whom a signed channel identified (a Slack click): `round_` is the round the
        message was sent for, `attempt` the request's id (a replay is refused, not counted twice)."""
        with self._uow.read() as session:
            change = self._uow.load(session, key)
            used = self._attempt_recorded(session, change, attempt)
        if used is not None:
            refusal = f"this request was already handled at {used:%Y-%m-%d %H:%M} UTC (a replay)"
        elif round_ != change.approval_round:
            refusal = (f"this message is for approval round {round_}; {change.key} was amended and is in round "
                       f"{change.approval_round}: act on the newest message")
        else:
            refusal = None
        if refusal is not None:
            self.record_refusal(change.key, person, refusal, via=via)
            raise PolicyViolation(refusal)
        return self._decide(change.key, person, decision, comment, attempt=attempt, via=via)

    # ---- internals --------------------------------------------------------------------------------------

    def _decide(self, key: str, person: str, decision: Decision | str, comment: str, *, attempt: str,
                via: str) -> DecisionResult:
        # The person's code, derived from the identity the link or the signed request vouched for: from here on
        # it is the same check and record as a typed code (requester, role, round, comment on rejection).
        code = self._approvals.approval_code_for(key, person)
        # Each post of a link's form or each click is a new submission: a refused one (a rejection without its
        # reason) is not replayed to the next, which would leave the link dead (issue 28).
        return self._approvals.decide(key, approver=person, decision=decision, code=code, comment=comment,
                                      attempt_id=attempt, via=via, replay_refusal=False)

    def _refusal(self, session, change: ChangeRequest, link: ApprovalLink) -> str | None:
        used = self._attempt_recorded(session, change, f"link:{link.link_id}")
        if used is not None:
            return f"this link was already used at {used:%Y-%m-%d %H:%M} UTC"
        if link.round != change.approval_round:
            return (f"this link is for approval round {link.round}; {change.key} was amended and is in round "
                    f"{change.approval_round}: use the newest message")
        if link.expired(self._uow.clock()):
            return f"this link expired at {link.expires_at:%Y-%m-%d %H:%M} UTC with the approval deadline"
        if change.state != ChangeState.awaiting_approval.value:
            return f"{change.key} is {change.state}, not awaiting approval"
        if link.person not in self._uow.org.directory.people:
            return f"{link.person} is no longer in the approver directory"
        return None

    @staticmethod
    def _attempt_recorded(session, change: ChangeRequest, attempt: str) -> datetime | None:
        decisions = (AuditAction.approval.value, AuditAction.rejection.value)
        return next((e.occurred_at for e in events_for(session, change.key)
                     if e.action in decisions and decode_data(e).get("attempt") == attempt), None)

    @staticmethod
    def _decided(session, change: ChangeRequest, person: str) -> str | None:
        for event in reversed(events_for(session, change.key)):
            if event.actor == person and event.action in (AuditAction.approval.value, AuditAction.rejection.value) \
                    and decode_data(event).get("round") == change.approval_round:
                return f"{'approved' if event.action == 'approval' else 'rejected'} at {event.occurred_at:%H:%M} UTC"
        return None

    def record_unauthenticated(self, reason: str, *, via: str, source: str, every: timedelta) -> None:
        """A request refused before anyone could be named from it (a forged link, an unsigned Slack request):
        the first from a source in each period `every` is recorded at once, the rest of the period as one summary
        event (issue 28: 2,000 forged requests wrote 1,335 events)."""
        for summary in self._tally.add(via, source, reason, self._uow.clock(), every):
            self._record_summary(summary)

    def flush_refusals(self) -> None:
        """Write the summaries of the periods still open (the endpoint calls it as it stops)."""
        for summary in self._tally.close_all():
            self._record_summary(summary)

    def _record_summary(self, tally: "RefusalTally.Period") -> None:
        data: dict[str, object] = {"via": tally.via, "source": tally.source[:100], "reason": tally.reason[:500]}
        if tally.count > 0:
            data |= {"count": tally.count, "from": tally.first_at.isoformat(), "until": tally.last_at.isoformat()}
        with self._uow.write() as session:
            append_event(session, actor="unknown", action=AuditAction.endpoint_refused.value, data=data,
                         at=self._uow.clock())

    def record_refusal(self, change_key: str | None, actor: str, reason: str, *, via: str) -> None:
        """A refused request on the record (as `endpoint_refused`), also one the endpoint refused before any
        person could be named from it (a bad signature, an unknown Slack user), so an attack shows up."""
        # An unauthenticated caller chooses `actor` (a Slack user id): one that cannot be a name is kept as data.
        named = actor if actor and name_problem(actor) is None else "unknown"
        claimed = {} if named == actor or not actor else {"claimed": actor[:100]}
        if change_key is not None and name_problem(change_key) is not None:
            change_key, claimed = None, {**claimed, "claimed_change": change_key[:40]}
        with self._uow.write() as session:
            append_event(session, actor=named, action=AuditAction.endpoint_refused.value, change_key=change_key,
                         data={"via": via, "reason": reason[:500], **claimed}, at=self._uow.clock())

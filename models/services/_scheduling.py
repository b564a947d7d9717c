"""Scheduling: maintenance windows and freezes, and the clashes a planned change has with them and with other
changes on the same service (checked at submit and again when the change is scheduled)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlmodel import Session

from ..domain import (
    START_GRACE,
    inside_a_window,
    freezes_hit,
    WindowSpec,
    checked_name,
    checked_text,
    is_allowed,
    lockdown_refusal,
    Act,
    Directory,
    AuditAction,
    ChangeState,
    FieldProblem,
    InputError,
    PolicyViolation,
    Promoted,
    StartCheck,
    article,
    change_type,
    decide_start,
    format_wait,
    overlaps,
    planned_span,
    promotion_problems,
)
from ..storage import ChangeRequest, MaintenanceWindow, append_event, decode_data, events_for
from ._identity import Identities
from ._lockdown import lockdown_in_force
from ._slots import ACTIVE_STATES, Holding, Planned, Slot, Slots, describe_window
from ._unit_of_work import UnitOfWork

# Who resumed a gate when the form carried no name: Prefect's UI shows no identity.
ANONYMOUS = "unknown (Prefect UI)"

class SchedulingService:
    def __init__(self, uow: UnitOfWork, identities: Identities):
        self._uow = uow
        self._identities = identities
        self.slots = Slots(uow)

    def clashes(self, session: Session, request: Planned, exclude: str | None = None,
                filed_at: datetime | None = None) -> list[str]:
        """Freezes and other active changes that a dated request overlaps, on the same service or one within
        policies.yaml `conflict_depth` dependency steps of it (the message names the path); an approved undated change
        holds the whole window it will take (issue 32), one not approved yet moves to the next. An undated request
        clashes with nothing: it takes the first window nobody related holds (`Slots`)."""
        if request.planned_start is None:
            return []
        start, end = planned_span(request.planned_start, request.planned_end)
        clashes = []
        freezes = session.execute(
            select(MaintenanceWindow).where(
                MaintenanceWindow.freeze.is_(True),
                MaintenanceWindow.starts_at < end, MaintenanceWindow.ends_at > start,
                self.slots.holds_in(request.environment, request.service),
            )
        ).scalars()
        clashes += freezes_hit((WindowSpec(f.kind, f.starts_at, f.ends_at, f.title, f.service, freeze=True)
                                for f in freezes), start, end)
        directory = self._uow.org.directory
        related = self.slots.related(request.service)
        others = {c.key: c for c in session.execute(select(ChangeRequest).where(
            ChangeRequest.service.in_(list(related)), self.slots.runs_in(request.environment),
            ChangeRequest.state.in_([s.value for s in ACTIVE_STATES]))).scalars()}
        for holding in self.slots.held(session, request.environment, exclude=exclude):
            other = others.get(holding.key)
            if other is None or not overlaps(start, end, holding.slot.starts_at, holding.slot.ends_at):
                continue
            if holding.slot.window is not None and other.approved_at is None:
                continue  # an undated change not approved yet goes around a dated one: approval entitles it
            path = related[other.service]
            through = f" ({directory.dependency_path(path)})" if len(path) > 1 else ""
            window = holding.slot.window
            when = (f"undated, so taking the window {describe_window(window)}" if window is not None else
                    f"planned {holding.slot.starts_at:%Y-%m-%d %H:%M} to {holding.slot.ends_at:%H:%M} UTC")
            clashes.append(f"conflicts with {other.key} ({other.title}) on {other.service}{through}, {when}")
        return clashes

    def slot_problems(self, session: Session, request: Planned, type_name: str) -> list[FieldProblem]:
        """A dated change of a type that runs in maintenance windows: its notice is served and its planned span
        lies inside one window (one of policies.yaml's or ad hoc for its service). Each refusal names the next slot."""
        rules = change_type(self._uow.org.policies, type_name, request.environment)
        if not rules.scheduled or request.planned_start is None:
            return []  # undated: it waits for the next window, checked when it would start
        start, end = planned_span(request.planned_start, request.planned_end)
        earliest = self._uow.clock() + rules.policy.notice
        a = f"{article(rules.name)} {rules.name} change"
        # A start planned for "now" may be filed a little after it (a maintenance announcement whose run started
        # late): within the grace it counts as now; the window gate still checks the window when it starts.
        if start < earliest - START_GRACE:
            notice = f"{format_wait(rules.policy.notice)} notice" if rules.policy.notice else "a start in the future"
            slot = self.slots.next_window(session, request.service, request.environment, earliest, end - start)
            return [FieldProblem("planned_start", f"{a} needs {notice}: earliest {earliest:%Y-%m-%d %H:%M} UTC"
                                 + (f"; the next maintenance window after that is {slot}" if slot else ""))]
        if not inside_a_window(self.slots.windows(session, request.service, request.environment, start, end),
                               start, end):
            slot = self.slots.next_window(session, request.service, request.environment, start, end - start)
            next_one = f"; the next is {slot}" if slot else ""
            return [FieldProblem("planned_start", f"{a} runs in a maintenance window: {start:%a %Y-%m-%d %H:%M} to "
                                 f"{end:%H:%M} UTC is outside every window{next_one}")]
        return []

    def promotion_problems(self, session: Session, request: Promoted) -> list[FieldProblem]:
        """Staging first: why the request may not ship its release to its environment yet (empty: it may)."""
        proving = (session.execute(select(ChangeRequest).where(ChangeRequest.key == request.promoted_from))
                   .scalars().first() if request.promoted_from else None)
        return promotion_problems(self._uow.org.policies, request, proving)

    def slot_held_by(self, change: ChangeRequest) -> Slot | None:
        """The span `change` holds on the calendar (not yet recorded: the one it would hold if filed now)."""
        with self._uow.read() as session:
            return self.slots.slot_of(session, change, change.created_at or self._uow.clock(), key=change.key)

    def schedule_clashes(self, key: str) -> list[str]:
        """For a recorded change: the freezes and other changes its window now overlaps (checked again when
        it is scheduled, since a freeze may have been declared after it was submitted)."""
        with self._uow.read() as session:
            change = self._uow.load(session, key)
            return self.clashes(session, change, exclude=change.key, filed_at=change.created_at)

    def add_window(self, *, starts_at: datetime, ends_at: datetime, kind: str = "ad_hoc", title: str = "",
                   service: str | None = None, freeze: bool = False, actor: str = "changeflow",
                   environment: str | None = None) -> MaintenanceWindow:
        """An ad hoc window or a freeze, for one service or all, in one environment or all (None)."""
        if ends_at <= starts_at:
            raise InputError("end: must be after start", [("end", "before start")])
        if environment is not None:
            environment, _ = self._uow.org.policies.environment(environment)
        with self._uow.write() as session:
            window = MaintenanceWindow(starts_at=starts_at, ends_at=ends_at, kind=kind, title=title,
                                       service=service, freeze=freeze, environment=environment)
            session.add(window)
            session.flush()
            data = {"window": window.id, "freeze": freeze, "title": title, "service": service, "kind": kind,
                    "starts_at": starts_at.isoformat(), "ends_at": ends_at.isoformat()}
            append_event(session, actor=actor, action=AuditAction.policy_decision.value, at=self._uow.clock(),
                         data={**data, **({"environment": environment} if environment else {})})
            return window

    def ensure_window(self, *, starts_at: datetime, ends_at: datetime, kind: str, title: str, service: str | None,
                      actor: str, environment: str | None = None) -> MaintenanceWindow:
        """The ad hoc window with exactly these bounds for this service, added once (a re-run finds it)."""
        for window in self.windows_between(starts_at, ends_at):
            if (window.starts_at, window.ends_at, window.service, window.freeze, window.environment) == (
                    starts_at, ends_at, service, False, environment):
                return window
        return self.add_window(starts_at=starts_at, ends_at=ends_at, kind=kind, title=title, service=service,
                               actor=actor, environment=environment)

    def windows_between(self, start: datetime, end: datetime) -> list[MaintenanceWindow]:
        with self._uow.read() as session:
            return list(session.execute(
                select(MaintenanceWindow).where(MaintenanceWindow.starts_at < end,
                                                MaintenanceWindow.ends_at > start)
                .order_by(MaintenanceWindow.starts_at)).scalars())

    # ---- the window gate: checked when implementation would begin, whatever woke the run ---------------------

    def start_check(self, key: str) -> StartCheck:
        with self._uow.read() as session:
            change = self._uow.load(session, key)
            return self._start_check(session, change)

    def begin_implementation(self, key: str, *, actor: str = "changeflow") -> ChangeRequest:
        """Move an approved or scheduled change to `implementing` if, at this moment, its window is open (or an
        authorised early start was recorded) and no freeze covers it; otherwise PolicyViolation, nothing written."""
        uow = self._uow

        def attempt() -> ChangeRequest:
            with uow.write() as session:
                change = uow.load(session, key, for_update=True)
                # Whatever the type and state: a type that does not wait for a window still stops at a freeze
                # unless its policy overrides freezes.
                reason = "implementation started"
                if is_allowed(uow.rules(change), ChangeState(change.state), ChangeState.implementing):
                    check = self._start_check(session, change)
                    if not check.may_start:
                        raise PolicyViolation(f"{change.key} cannot start: {check.reason}")
                    reason = f"implementation started ({check.reason})"
                # (otherwise the lifecycle refuses the move below: not approved, or already past it)
                return uow.apply_transition(session, change, ChangeState.implementing, actor, reason, change.version)

        return uow.retry(attempt, None)

    def answer_window_gate(self, key: str, *, person: str, code: str, reason: str, attempt_id: str) -> str | None:
        """A Resume on a run waiting for its window. Empty: nothing is authorised, so it only lets the run go on
        when the window is open anyway. With a name: an explicit early start, allowed to the roles the type's
        policy names (`early_start`), with that person's code. Returns the refusal (recorded), or None."""
        checked_name(person, "person")
        checked_text(reason, "reason")
        uow = self._uow
        person = person.strip()
        with uow.write() as session:
            change = uow.load(session, key, for_update=True)
            replayed = self._replayed(session, change.key, attempt_id)
            if replayed is not None:
                return replayed.get("refusal")
            if change.state != ChangeState.scheduled.value:
                return None
            check = self._start_check(session, change)
            refusal = self._early_start_refusal(change, person, code, check, self._uow.directory_for(session, change))
            data = {"attempt": attempt_id, "reason": reason[:2000], "check": check.reason,
                    "round": change.approval_round}
            if refusal is None and person:
                append_event(session, actor=person, action=AuditAction.early_start.value, change_key=change.key,
                             data=data, at=uow.clock())
            elif refusal is not None:
                append_event(session, actor=person or ANONYMOUS, action=AuditAction.window_gate_refused.value,
                             change_key=change.key, data={**data, "refusal": refusal}, at=uow.clock())
            return refusal

    def _early_start_refusal(self, change: ChangeRequest, person: str, code: str, check: StartCheck,
                             directory: Directory) -> str | None:
        if not person:
            return None if check.may_start else f"resumed without a name and code while {check.reason}: nothing " \
                                                 "was started (to start early, give your name and personal code)"
        rules = self._uow.rules(change)
        if person not in directory.people:
            return f"{person!r} is not in the approver directory"
        if person == change.requester:
            return f"{person} requested this change and cannot start it early (segregation of duties)"
        wrong_code = self._identities.refusal(change, person, code, Act.start_early)
        if wrong_code is not None:
            return wrong_code
        allowed = rules.policy.early_start
        if not allowed:
            return f"the {rules.name} policy does not allow starting before the window"
        if not any(directory.holds(person, role) for role in allowed):
            return (f"{person} does not hold a role that may start {article(rules.name)} {rules.name} change early "
                    f"({', '.join(allowed)})")
        if check.frozen:
            return f"an early start does not lift a freeze: {check.reason}"
        return None

    def _start_check(self, session: Session, change: ChangeRequest) -> StartCheck:
        rules = self._uow.rules(change)
        now = self._uow.clock()
        freezes = [] if rules.overrides_freeze else self._freezes_at(session, change, now)
        # A lockdown holds like a freeze that no type overrides but those it admits, and no early start lifts;
        # so does a release whose staging change no longer proves it (rolled back since it was filed).
        locked = self.lockdown_refusal(session, change.type, "start")
        freezes += [locked] if locked else []
        freezes += [f"staging first: {p.message}" for p in self.promotion_problems(session, change)]
        # An early start authorises the round it was given in: an amended change is approved again, and so is
        # an early start of it.
        early = next((e.actor for e in reversed(events_for(session, change.key))
                      if e.action == AuditAction.early_start.value
                      and decode_data(e).get("round", 1) == change.approval_round), None)
        if early is not None and (running := self._running_related(session, change)) is not None:
            # An early start lifts the window, never the queue: it takes effect once the change ahead has ended.
            freezes.append(f"{running} is being implemented now: an early start never runs two related changes "
                           "at once")
        if not rules.scheduled:  # `window: any`: approved means go (emergencies)
            return decide_start(planned_start=None, now=now, freezes=freezes, started_early_by=early)
        # The queue an undated change waits in, read once for the three questions below (issue 32).
        held = self.slots.held(session, change.environment) if change.planned_start is None else []
        in_window = self._window_open(session, change, now, held)
        return decide_start(held_by=None if in_window else self._holder_now(change, now, held),
            planned_start=change.planned_start, now=now, freezes=freezes, started_early_by=early,
            in_window=in_window, next_window=None if in_window else self._next_window(session, change, now, held),
            notice_until=change.created_at + rules.policy.notice if rules.policy.notice else None)

    def lockdown_refusal(self, session: Session, change_type: str, doing: str) -> str | None:
        """Why a change of `change_type` may not `doing` now, for a lockdown in force (None: it may)."""
        return lockdown_refusal(lockdown_in_force(session), self._uow.org.policies.lockdown, change_type, doing)

    def lockdown_refusal_now(self, change_type: str, doing: str) -> str | None:
        """The same in a transaction of its own: for a caller about to start a run the services would refuse (the
        refusal that counts is the one in the transaction that writes)."""
        with self._uow.read() as session:
            return self.lockdown_refusal(session, change_type, doing)

    @staticmethod
    def _slot_in(held: list[Holding], change: ChangeRequest) -> Slot | None:
        return next((h.slot for h in held if h.key == change.key), None)

    def _window_open(self, session: Session, change: ChangeRequest, now: datetime, held: list[Holding]) -> bool:
        """A maintenance window (one of its environment's or ad hoc for its service) covers this moment; for an
        undated change, the window it holds (issue 32: a related change queued before it has the one open now)."""
        if change.planned_start is None:
            slot = self._slot_in(held, change)
            return slot is not None and slot.covers(now)
        return any(w.starts_at <= now < w.ends_at for w in self.slots.windows(
            session, change.service, change.environment, now, now + timedelta(microseconds=1)))

    def _running_related(self, session: Session, change: ChangeRequest) -> str | None:
        """Another change being implemented now on the change's service or a related one, named."""
        related = self.slots.related(change.service)
        running = session.execute(select(ChangeRequest).where(
            ChangeRequest.service.in_(list(related)), self.slots.runs_in(change.environment),
            ChangeRequest.key != change.key,
            ChangeRequest.state.in_([ChangeState.implementing.value, ChangeState.verifying.value]))).scalars().first()
        return f"{running.key} on {running.service}" if running is not None else None

    def _holder_now(self, change: ChangeRequest, now: datetime, held: list[Holding]) -> str | None:
        """For an undated change: the related change that holds the window open now, ahead of it, named."""
        if change.planned_start is not None:
            return None
        related = self.slots.related(change.service)
        return next((f"{h.key} on {h.service}" for h in held
                     if h.key != change.key and h.service in related and h.slot.covers(now)), None)

    def _next_window(self, session: Session, change: ChangeRequest, after: datetime,
                     held: list[Holding]) -> datetime | None:
        if change.planned_start is None:
            slot = self._slot_in(held, change)
            return slot.starts_at if slot is not None and slot.starts_at > after else None
        return min((w.starts_at for w in self.slots.windows(session, change.service, change.environment, after,
                                                            after + timedelta(days=40)) if w.starts_at > after),
                   default=None)

    def _freezes_at(self, session: Session, change: ChangeRequest, now: datetime) -> list[str]:
        freezes = session.execute(select(MaintenanceWindow).where(
            MaintenanceWindow.freeze.is_(True), MaintenanceWindow.starts_at <= now, MaintenanceWindow.ends_at > now,
            self.slots.holds_in(change.environment, change.service),
        )).scalars()
        return [f"the freeze '{f.title or 'freeze'}' covers now (until {f.ends_at:%Y-%m-%d %H:%M} UTC)"
                for f in freezes]

    @staticmethod
    def _replayed(session: Session, key: str, attempt_id: str) -> dict | None:
        gate = (AuditAction.early_start.value, AuditAction.window_gate_refused.value)
        return next((decode_data(e) for e in events_for(session, key)
                     if e.action in gate and decode_data(e).get("attempt") == attempt_id), None)

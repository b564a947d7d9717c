"""Recording delegations (issue 27): who hands their authority to whom, for which period, and why. Recording one
is an operator's act at the person's request (policies.yaml `delegation_recorders`), like printing a code: the
CLI is where operators work, and every record and every refusal is on the audit trail. Each gate honours them
through `UnitOfWork.directory_for`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from sqlmodel import Session

from ..domain import (AuditAction, Delegation, Directory, InputError, PolicyViolation, acting_for, checked_name,
                      delegation_problems)
from ..storage import ChangeRequest, DelegationRecord, append_event
from ._unit_of_work import UnitOfWork


@dataclass(frozen=True)
class DelegationView:
    id: int
    delegator: str
    delegate: str
    starts_at: datetime
    ends_at: datetime
    reason: str
    recorded_by: str
    revoked_at: datetime | None

    def in_force(self, at: datetime) -> bool:
        return self.revoked_at is None and self.starts_at <= at < self.ends_at


def _view(row: DelegationRecord) -> DelegationView:
    assert row.id is not None
    return DelegationView(row.id, row.delegator, row.delegate, row.starts_at, row.ends_at, row.reason,
                          row.recorded_by, row.revoked_at)


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


class DelegationService:
    def __init__(self, uow: UnitOfWork):
        self._uow = uow

    def record(self, delegation: Delegation, *, operator: str) -> DelegationView:
        """Record `delegation` for its delegator; refused (and the refusal recorded) unless `operator` holds a
        role of `delegation_recorders`. Bad fields raise InputError naming each, and nothing is written."""
        checked_name(operator, "operator")
        uow = self._uow
        now = uow.clock()
        problems = delegation_problems(delegation, uow.org.directory, now=now,
                                       longest=uow.org.policies.longest_delegation)
        if problems:
            raise InputError(f"invalid delegation: {'; '.join(str(p) for p in problems)}", problems)
        data = {"delegator": delegation.delegator, "delegate": delegation.delegate,
                "starts_at": delegation.starts_at.isoformat(), "ends_at": delegation.ends_at.isoformat(),
                "reason": delegation.reason}
        with uow.write() as session:
            refusal = self._operator_refusal(operator)
            if refusal is None:
                row = DelegationRecord(delegator=delegation.delegator, delegate=delegation.delegate,
                                       starts_at=delegation.starts_at, ends_at=delegation.ends_at,
                                       reason=delegation.reason, recorded_by=operator, recorded_at=now)
                session.add(row)
                session.flush()
                data["id"] = row.id
                view = _view(row)
            append_event(session, actor=operator, at=now, data={**data, "refusal": refusal} if refusal else data,
                         action=(AuditAction.delegation_refused if refusal else AuditAction.delegation_recorded).value)
        if refusal is not None:
            raise PolicyViolation(refusal)
        return view

    def revoke(self, delegation_id: int, *, operator: str) -> DelegationView:
        """End a delegation now (a row is never deleted: the delegate's earlier acts refer to it)."""
        checked_name(operator, "operator")
        uow = self._uow
        now = uow.clock()
        with uow.write() as session:
            row = session.get(DelegationRecord, delegation_id)
            if row is None:
                raise PolicyViolation(f"there is no delegation {delegation_id}")
            refusal = self._operator_refusal(operator)
            if refusal is None and row.revoked_at is None:
                row.revoked_at, row.revoked_by = now, operator
            append_event(session, actor=operator, at=now,
                         action=(AuditAction.delegation_refused if refusal else AuditAction.delegation_revoked).value,
                         data={"id": delegation_id, "delegator": row.delegator, "delegate": row.delegate,
                               **({"refusal": refusal} if refusal else {})})
            view = _view(row)
        if refusal is not None:
            raise PolicyViolation(refusal)
        return view

    def now(self) -> datetime:
        return self._uow.clock()

    def listed(self, *, include_ended: bool = False) -> list[DelegationView]:
        now = self._uow.clock()
        with self._uow.read() as session:
            rows = session.execute(select(DelegationRecord).order_by(DelegationRecord.starts_at)).scalars().all()
        return [_view(r) for r in rows if include_ended or (r.revoked_at is None and r.ends_at > now)]

    def not_in_force(self, person: str) -> str | None:
        """Why a delegation that would let `person` stand in for someone does not count now (None: there is
        none, or one is in force): the refusal a delegate acting outside their period reads."""
        now = self._uow.clock()
        mine = [d for d in self.listed(include_ended=True) if d.delegate == person]
        if not mine or any(d.in_force(now) for d in mine):
            return None
        d = min(mine, key=lambda d: abs((d.starts_at - now).total_seconds()))
        state = (f"ended {_stamp(d.revoked_at)}" if d.revoked_at
                 else f"runs {_stamp(d.starts_at)} to {_stamp(d.ends_at)}")
        return f"{d.delegator}'s delegation to {person} {state}, not now ({_stamp(now)})"

    def stands_in_for(self, session: Session, change: ChangeRequest, person: str) -> dict[str, str]:
        """The roles `person` holds on `change` now only as someone's delegate, each with that someone."""
        uow = self._uow
        at = uow.clock()
        delegations = uow.delegations(session, at=at)
        acting = {role: acting_for(person, role, uow.org.directory, delegations, at, requester=change.requester)
                  for role in {r.role for r in uow.required_for(change)}}
        return {role: delegator for role, delegator in acting.items() if delegator}

    def standing_of(self, key: str, person: str) -> dict[str, str]:
        with self._uow.read() as session:
            return self.stands_in_for(session, self._uow.load(session, key), person)

    def directory_in_force(self, key: str) -> Directory:
        """The approver directory as it stands for the change now, its delegates included."""
        with self._uow.read() as session:
            return self._uow.directory_for(session, self._uow.load(session, key))

    def _operator_refusal(self, operator: str) -> str | None:
        return self._uow.org.directory.operator_refusal(operator, self._uow.org.policies.delegation_recorders,
                                                        "record a delegation")

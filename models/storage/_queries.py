"""The change-log query layer: every filter bound as a parameter, keyset pagination, newest first.

One function serves the CLI, the reports and the audit-report flow.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime, timezone

from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import ColumnElement, and_, exists, or_, select
from sqlmodel import Session

from ..domain import EARLIEST_MOMENT, LATEST_MOMENT, ChangeState, InputError, Moment, RiskLevel, plain_text
from ._tables import Approval, ChangeRequest

MAX_TEXT = 200


class ChangeFilter(BaseModel):
    """Which changes to list (the audit-report form in the Prefect UI shows these fields)."""

    model_config = ConfigDict(extra="forbid")

    type: str | None = Field(default=None, max_length=100, description="Only this change type.")
    state: ChangeState | None = Field(default=None, description="Only changes in this state.")
    service: str | None = Field(default=None, max_length=100, description="Only this service.")
    environment: str | None = Field(default=None, max_length=32, description="Only changes in this environment.")
    requester: str | None = Field(default=None, max_length=100, description="Only changes requested by this person.")
    approver: str | None = Field(default=None, max_length=100, description="Only changes this person approved.")
    risk: RiskLevel | None = Field(default=None, description="Only this risk level.")
    created_since: Moment | None = Field(default=None, description="Created at or after.")
    created_until: Moment | None = Field(default=None, description="Created before.")
    implemented_since: Moment | None = Field(default=None, description="Implementation started at or after.")
    implemented_until: Moment | None = Field(default=None, description="Implementation started before.")
    closed_since: Moment | None = Field(default=None, description="Closed at or after.")
    closed_until: Moment | None = Field(default=None, description="Closed before.")
    text: str | None = Field(default=None, max_length=MAX_TEXT, description="Words the title contains.")

    @field_validator("*", mode="before")
    @classmethod
    def _plain_text(cls, value: object) -> object:
        return plain_text(value)


class Page(BaseModel):
    items: list
    next_cursor: str | None


def encode_cursor(change: ChangeRequest) -> str:
    raw = f"{change.created_at.isoformat()}|{change.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, change_id = raw.split("|")
        moment = datetime.fromisoformat(at)
        number = int(change_id)
        if moment.tzinfo is None or not 0 < number < 2**31:
            raise ValueError  # (a larger id overflowed PostgreSQL's INTEGER id column)
        if not EARLIEST_MOMENT <= moment.astimezone(timezone.utc) < LATEST_MOMENT:
            raise ValueError  # no change is created there, and the query's time arithmetic overflowed (issue 28)
        return moment, number
    except (ValueError, OverflowError, UnicodeDecodeError, binascii.Error):
        raise InputError("--after: not a cursor printed by a previous page", [("after", "invalid cursor")]) from None


def _like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def in_environment(name: str, default_environment: str | None) -> ColumnElement[bool]:
    """Changes that run in environment `name`; those filed before environments existed (NULL) run in the
    default one."""
    named = ChangeRequest.environment == name
    if name != default_environment:
        return named  # type: ignore[return-value]
    return named | ChangeRequest.environment.is_(None)  # type: ignore[union-attr]


def filtered(stmt, f: ChangeFilter, default_environment: str | None = None):
    """Apply the filter's conditions to a select over ChangeRequest. `default_environment`: the environment of the
    changes filed before environments existed (NULL), found by a filter on it."""
    if f.environment is not None:
        stmt = stmt.where(in_environment(f.environment, default_environment))
    for column, value in ((ChangeRequest.type, f.type), (ChangeRequest.state, f.state),
                          (ChangeRequest.service, f.service), (ChangeRequest.requester, f.requester),
                          (ChangeRequest.risk_level, f.risk)):
        if value is not None:
            stmt = stmt.where(column == getattr(value, "value", value))
    for column, since, until in ((ChangeRequest.created_at, f.created_since, f.created_until),
                                 (ChangeRequest.implemented_at, f.implemented_since, f.implemented_until),
                                 (ChangeRequest.closed_at, f.closed_since, f.closed_until)):
        if since is not None:
            stmt = stmt.where(column >= since)
        if until is not None:
            stmt = stmt.where(column < until)
    if f.approver is not None:
        stmt = stmt.where(exists().where(Approval.change_id == ChangeRequest.id, Approval.approver == f.approver,
                                         Approval.decision == "approve"))
    if f.text:
        stmt = stmt.where(ChangeRequest.title.ilike(_like_pattern(f.text), escape="\\"))
    return stmt


def query_changes(session: Session, f: ChangeFilter, *, limit: int = 50, after: str | None = None,
                  default_environment: str | None = None) -> Page:
    if not 1 <= limit <= 10_000:
        raise InputError("--limit: between 1 and 10000", [("limit", "out of range")])
    stmt = filtered(select(ChangeRequest), f, default_environment)
    if after:
        at, change_id = decode_cursor(after)
        stmt = stmt.where(or_(ChangeRequest.created_at < at,
                              and_(ChangeRequest.created_at == at, ChangeRequest.id < change_id)))
    rows = list(session.execute(
        stmt.order_by(ChangeRequest.created_at.desc(), ChangeRequest.id.desc()).limit(limit + 1)).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(items=rows, next_cursor=encode_cursor(rows[-1]) if more and rows else None)

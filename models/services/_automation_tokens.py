"""Automation tokens (issue 27): a pipeline files its own changes (an automation of the directory) and proves it
with a token an operator issued for it, as a person proves a filing with their code. Only the token's SHA-256 is
kept; the token is shown once, to the operator, who hands it to the pipeline's secret store. Issuing and revoking
are operator acts (policies.yaml `code_issuers`), each on the audit trail.

A token is scoped to the services it was issued for (issue 32): a pipeline's token leaked from one repository's
secrets files, reads and waits on that repository's services only."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from ..domain import AuditAction, InputError, PolicyViolation, checked_name
from ..storage import AutomationToken, append_event
from ._unit_of_work import UnitOfWork

_PREFIX = "cfa_"  # recognisable in a secret scanner, never a person's code
EVERY_SERVICE = "*"  # the scope of tokens issued before scopes existed (migration 0012)


def _digest(token: str) -> str:
    return hashlib.sha256(token.strip().encode()).hexdigest()


@dataclass(frozen=True)
class IssuedToken:
    id: int
    automation: str
    services: tuple[str, ...]
    token: str  # shown once


@dataclass(frozen=True)
class TokenRecord:
    """What an operator sees of an issued token (never the token: only its digest was kept)."""

    id: int
    automation: str
    services: tuple[str, ...]
    issued_by: str
    issued_at: datetime
    revoked_by: str | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class TokenHolder:
    """Who a presented token speaks for: an automation, for the changes of its services."""

    token_id: int
    automation: str
    services: tuple[str, ...]

    def covers(self, service: str) -> bool:
        return EVERY_SERVICE in self.services or service in self.services

    def scope_refusal(self, service: str) -> str | None:
        if self.covers(service):
            return None
        return (f"token {self.token_id} of {self.automation} is for the services {', '.join(self.services)}, "
                f"not {service!r}")


def token_refusal(holder: TokenHolder | None, automation: str, service: str) -> str | None:
    """Why the holder of a presented token may not act as `automation` on `service` (None: it may)."""
    if holder is None or holder.automation != automation:
        return f"not a token issued for {automation} (or it was revoked)"
    return holder.scope_refusal(service)


def _scope(services: list[str]) -> tuple[str, ...]:
    names = tuple(sorted({checked_name(name.strip(), "services") for name in services if name.strip()}))
    if not names:
        raise InputError("services: name the services whose changes the pipeline files (--service)",
                         [("services", "missing")])
    if any("," in name or name == EVERY_SERVICE for name in names):
        raise InputError("services: a service name, not a list or a wildcard", [("services", "not a name")])
    return names


class AutomationTokens:
    def __init__(self, uow: UnitOfWork):
        self._uow = uow

    def issue(self, automation: str, *, operator: str, services: list[str]) -> IssuedToken:
        checked_name(operator, "operator")
        scope = _scope(services)
        uow = self._uow
        refusal = self._refusal(automation, operator)
        token = _PREFIX + secrets.token_urlsafe(32)
        with uow.write() as session:
            issued = None
            if refusal is None:
                row = AutomationToken(automation=automation, token_sha256=_digest(token), issued_by=operator,
                                      issued_at=uow.clock(), services=",".join(scope))
                session.add(row)
                session.flush()
                assert row.id is not None
                issued = IssuedToken(row.id, automation, scope, token)
            append_event(session, actor=operator, at=uow.clock(),
                         action=(AuditAction.automation_token_refused if refusal
                                 else AuditAction.automation_token_issued).value,
                         data={"automation": automation, "services": list(scope),
                               **({"refusal": refusal} if refusal else {}),
                               **({"id": issued.id} if issued else {})})
        if issued is None:
            raise PolicyViolation(refusal or "refused")
        return issued

    def revoke(self, token_id: int, *, operator: str) -> None:
        checked_name(operator, "operator")
        uow = self._uow
        with uow.write() as session:
            row = session.get(AutomationToken, token_id)
            if row is None:
                raise PolicyViolation(f"there is no automation token {token_id}")
            refusal = self._refusal(row.automation, operator)
            if refusal is None and row.revoked_at is None:
                row.revoked_at, row.revoked_by = uow.clock(), operator
            append_event(session, actor=operator, at=uow.clock(),
                         action=(AuditAction.automation_token_refused if refusal
                                 else AuditAction.automation_token_revoked).value,
                         data={"automation": row.automation, "id": token_id,
                               **({"refusal": refusal} if refusal else {})})
        if refusal is not None:
            raise PolicyViolation(refusal)

    def issued(self) -> list[TokenRecord]:
        """Every token issued, oldest first: which to revoke when a pipeline's secret leaked."""
        with self._uow.read() as session:
            rows = session.execute(select(AutomationToken).order_by(AutomationToken.id)).scalars().all()
        return [TokenRecord(r.id or 0, r.automation, tuple(r.services.split(",")), r.issued_by, r.issued_at,
                            r.revoked_by, r.revoked_at) for r in rows]

    def holder(self, token: str) -> TokenHolder | None:
        """Whom `token` speaks for; None when it is forged, malformed or revoked. Looked up by its SHA-256 (the
        table's unique key): the token itself is never stored nor compared."""
        token = token.strip()
        if not token.startswith(_PREFIX):
            return None
        with self._uow.read() as session:
            row = session.execute(select(AutomationToken).where(
                AutomationToken.token_sha256 == _digest(token),
                AutomationToken.revoked_at.is_(None))).scalar_one_or_none()  # type: ignore[union-attr]
        if row is None:
            return None
        assert row.id is not None
        return TokenHolder(row.id, row.automation, tuple(row.services.split(",")))

    def holder_if_automation(self, actor: str, token: str) -> TokenHolder | None:
        """Whom `token` speaks for when `actor` is an automation of the directory (a pipeline proves its acts with
        its token); None for a person, who proves theirs with a code. Read before a write transaction."""
        if actor.strip() not in self._uow.org.directory.automations:
            return None
        return self.holder(token)

    def refusal(self, automation: str, token: str, service: str) -> str | None:
        """Why `token` does not prove a filing of `automation` on `service` (None: it does)."""
        return token_refusal(self.holder(token), automation, service)

    def _refusal(self, automation: str, operator: str) -> str | None:
        org = self._uow.org
        refusal = org.directory.operator_refusal(operator, org.policies.code_issuers, "issue a token")
        if refusal is not None:
            return refusal
        if automation not in org.directory.automations:
            return f"{automation!r} is not an automation of the directory (automations: " \
                   f"{', '.join(org.directory.automations) or 'none'})"
        return None

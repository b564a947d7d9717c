"""Automation tokens (issue 27): a pipeline files its own changes (an automation of the directory) and proves it
with a token an operator issued for it, as a person proves a filing with their code. Only the token's SHA-256 is
kept; the token is shown once, to the operator, who hands it to the pipeline's secret store. Issuing and revoking
are operator acts (policies.yaml `code_issuers`), each on the audit trail."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import select

from ..domain import AuditAction, PolicyViolation, checked_name
from ..storage import AutomationToken, append_event
from ._unit_of_work import UnitOfWork

_PREFIX = "cfa_"  # recognisable in a secret scanner, never a person's code


def _digest(token: str) -> str:
    return hashlib.sha256(token.strip().encode()).hexdigest()


@dataclass(frozen=True)
class IssuedToken:
    id: int
    automation: str
    token: str  # shown once


class AutomationTokens:
    def __init__(self, uow: UnitOfWork):
        self._uow = uow

    def issue(self, automation: str, *, operator: str) -> IssuedToken:
        checked_name(operator, "operator")
        uow = self._uow
        refusal = self._refusal(automation, operator)
        token = _PREFIX + secrets.token_urlsafe(32)
        with uow.write() as session:
            issued = None
            if refusal is None:
                row = AutomationToken(automation=automation, token_sha256=_digest(token), issued_by=operator,
                                      issued_at=uow.clock())
                session.add(row)
                session.flush()
                assert row.id is not None
                issued = IssuedToken(row.id, automation, token)
            append_event(session, actor=operator, at=uow.clock(),
                         action=(AuditAction.automation_token_refused if refusal
                                 else AuditAction.automation_token_issued).value,
                         data={"automation": automation, **({"refusal": refusal} if refusal else {}),
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

    def proves(self, automation: str, token: str) -> bool:
        """`token` is a token issued for `automation` and not revoked."""
        if not token.strip().startswith(_PREFIX):
            return False
        digest = _digest(token)
        with self._uow.read() as session:
            rows = session.execute(select(AutomationToken.token_sha256).where(
                AutomationToken.automation == automation, AutomationToken.revoked_at.is_(None))).scalars().all()  # type: ignore[union-attr]
        return any(hmac.compare_digest(digest, row) for row in rows)

    def _refusal(self, automation: str, operator: str) -> str | None:
        org = self._uow.org
        refusal = org.directory.operator_refusal(operator, org.policies.code_issuers, "issue a token")
        if refusal is not None:
            return refusal
        if automation not in org.directory.automations:
            return f"{automation!r} is not an automation of the directory (automations: " \
                   f"{', '.join(org.directory.automations) or 'none'})"
        return None

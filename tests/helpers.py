"""Builders shared by the tests."""

from __future__ import annotations

from models import ChangeService

SECRET = b"test-secret"


def standard_request(**overrides) -> dict:
    return {
        "type": "standard",
        "title": "Upgrade payments API to 2.4",
        "service": "payments",
        "requester": "grace",
        "implementation_plan": "deploy 2.4",
        "rollback_plan": "redeploy 2.3",
        **overrides,
    }


def emergency_request(**overrides) -> dict:
    return {
        "type": "emergency",
        "title": "Hotfix for checkout outage",
        "service": "checkout",
        "requester": "bob",
        "incident_id": "INC-1001",
        "incident_severity": "P1",
        **overrides,
    }


def major_request(**overrides) -> dict:
    return {
        "type": "major",
        "title": "Migrate payments database to PostgreSQL 16",
        "service": "payments",
        "requester": "grace",
        "rollback_plan": "restore from snapshot",
        **overrides,
    }


def approve(service: ChangeService, key: str, approver: str, **kwargs):
    return service.decide(key, approver=approver, decision="approve",
                          code=service.approval_code_for(key, approver), **kwargs)

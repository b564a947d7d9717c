"""Builders shared by the tests."""

from __future__ import annotations

from models import DEFAULTS_DIR, ChangeTypeRules, Services, change_type, load_org

SECRET = b"test-secret"
# The change types the shipped policies.yaml defines, and their rules (the code knows no type by name).
SHIPPED_TYPES = ("emergency", "standard", "major")
SHIPPED_RULES: dict[str, ChangeTypeRules] = {
    name: change_type(load_org(DEFAULTS_DIR).policies, name) for name in SHIPPED_TYPES}


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


def approve(services: Services, key: str, approver: str, **kwargs):
    return services.approvals.decide(key, approver=approver, decision="approve",
                                     code=services.approvals.approval_code_for(key, approver), **kwargs)


def signed_slack_click(change_key: str, round_: int, slack_user: str, signing_secret: str, *,
                       action: str = "approve", response_url: str | None = None,
                       timestamp: float | None = None) -> tuple[bytes, dict[str, str]]:
    """The request Slack sends when someone clicks a button of an approval message: form-encoded payload,
    signed with the app's signing secret (v0)."""
    import json
    import time
    from urllib.parse import urlencode

    from endpoint import signature

    payload = {"type": "block_actions", "user": {"id": slack_user, "username": slack_user.lower()},
               "actions": [{"action_id": action, "value": f"{change_key}|{round_}", "type": "button"}],
               "trigger_id": f"{time.time_ns()}", **({"response_url": response_url} if response_url else {})}
    body = urlencode({"payload": json.dumps(payload)}).encode()
    stamp = str(int(timestamp if timestamp is not None else time.time()))
    return body, {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": signature(signing_secret, stamp, body),
                  "Content-Type": "application/x-www-form-urlencoded"}

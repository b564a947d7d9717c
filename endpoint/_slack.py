"""Slack's request signing (v0), as Slack documents it and its SDK checks it: the signature is
`v0=` + HMAC-SHA256(signing secret, "v0:{timestamp}:{raw body}"), and a request whose timestamp is more than five
minutes away from now is refused, so a captured request cannot be replayed later (a replay inside the window is
caught by its id already being on the record)."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from urllib.parse import parse_qs

MAX_AGE_S = 300


class SlackRequestRefused(Exception):
    """Not a request Slack signed just now, or not one changeflow understands."""


def signature(signing_secret: str, timestamp: str, body: bytes) -> str:
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()


def check_signature(signing_secret: str, timestamp: str | None, given: str | None, body: bytes, now: float) -> None:
    if not timestamp or not given:
        raise SlackRequestRefused("the request carries no Slack signature")
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise SlackRequestRefused("the request's Slack timestamp is not a number") from None
    if abs(now - sent_at) > MAX_AGE_S:
        raise SlackRequestRefused(f"the request was signed {abs(now - sent_at):.0f} s away from now (more than "
                                  f"{MAX_AGE_S} s): a replay, or a clock that is off")
    if not hmac.compare_digest(signature(signing_secret, timestamp, body), given):
        raise SlackRequestRefused("the request's Slack signature does not match (not sent by Slack, or altered)")


@dataclass(frozen=True)
class ButtonClick:
    slack_user_id: str
    action: str  # approve / reject
    change_key: str
    round: int
    response_url: str | None
    request_id: str  # names this request: a replay within the window has the same one


def parse_click(body: bytes, given_signature: str) -> ButtonClick:
    try:
        payload = json.loads(parse_qs(body.decode())["payload"][0])
        action = payload["actions"][0]
        change_key, round_ = str(action["value"]).split("|")
        return ButtonClick(str(payload["user"]["id"]), str(action["action_id"]), change_key, int(round_),
                           payload.get("response_url"), hashlib.sha256(given_signature.encode()).hexdigest()[:24])
    except (KeyError, IndexError, ValueError, TypeError, UnicodeDecodeError):
        raise SlackRequestRefused("not a button click changeflow sent (no payload, action or change)") from None


def signed_click(change_key: str, round_: int, slack_user: str, signing_secret: str, *, action: str = "approve",
                 response_url: str | None = None, timestamp: float | None = None) -> tuple[bytes, dict[str, str]]:
    """The request Slack sends when someone clicks a button of an approval message (form-encoded payload,
    signed with the app's signing secret): what the demo's approvers, the tests and the benchmark send."""
    import time
    from urllib.parse import urlencode

    payload = {"type": "block_actions", "user": {"id": slack_user, "username": slack_user.lower()},
               "actions": [{"action_id": action, "value": f"{change_key}|{round_}", "type": "button"}],
               "trigger_id": f"{time.time_ns()}", **({"response_url": response_url} if response_url else {})}
    body = urlencode({"payload": json.dumps(payload)}).encode()
    stamp = str(int(timestamp if timestamp is not None else time.time()))
    return body, {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": signature(signing_secret, stamp, body),
                  "Content-Type": "application/x-www-form-urlencoded"}

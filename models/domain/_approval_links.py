"""Signed approval links (issue 17): one per change, person and approval round, expiring with the round's
approval SLA. The token is the link's claims and an HMAC over them with changeflow's secret, so the endpoint
trusts nothing it did not sign, and the database never needs to hold the token: a used link is recognised by
the decision event that names its id.

A link proves which person it was sent to, as an approval code does; whoever holds the link can act as that
person until it is used or expires, so links travel only in messages addressed to that one person.

Pure: no database, no clock of its own (the caller passes `now`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime, timezone

from ._errors import PolicyViolation

# Domain separation: a link's MAC can never be mistaken for an approval code's, nor a CSRF token for a link's.
_LINK_CONTEXT = b"changeflow approval link v1\x00"
_CSRF_CONTEXT = b"changeflow approval form v1\x00"


class LinkRefused(PolicyViolation):
    """The link cannot be used: forged, expired, already used, for another round or person."""


@dataclass(frozen=True)
class ApprovalLink:
    change_key: str
    person: str
    round: int
    expires_at: datetime

    @property
    def link_id(self) -> str:
        """What the decision event records as its attempt: names the link without being able to forge it."""
        claims = f"{self.change_key}|{self.person}|{self.round}|{int(self.expires_at.timestamp())}"
        return hashlib.sha256(claims.encode()).hexdigest()[:24]

    def expired(self, now: datetime) -> bool:
        return now >= self.expires_at


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, context: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, context + payload, hashlib.sha256).digest()


def sign_link(secret: bytes, link: ApprovalLink) -> str:
    claims = json.dumps({"k": link.change_key, "p": link.person, "r": link.round,
                         "e": int(link.expires_at.timestamp())}, separators=(",", ":"), sort_keys=True).encode()
    return f"{_b64(claims)}.{_b64(_mac(secret, _LINK_CONTEXT, claims))}"


def read_link(secret: bytes, token: str) -> ApprovalLink:
    """The link the token names, once its signature holds (expiry and use are the caller's to check, so the
    refusal can say which it was)."""
    try:
        encoded_claims, encoded_mac = token.split(".")
        claims = _unb64(encoded_claims)
        if not hmac.compare_digest(_unb64(encoded_mac), _mac(secret, _LINK_CONTEXT, claims)):
            raise ValueError("signature")
        fields = json.loads(claims)
        return ApprovalLink(str(fields["k"]), str(fields["p"]), int(fields["r"]),
                            datetime.fromtimestamp(int(fields["e"]), tz=timezone.utc))
    except (ValueError, KeyError, TypeError, json.JSONDecodeError):
        raise LinkRefused("this approval link is not one changeflow signed (mistyped or altered)") from None


def form_token(secret: bytes, token: str) -> str:
    """The CSRF token of the decision form a link's page shows: only a page rendered for that link has it, so a
    form posted from another site (or a scanner's POST without the page) is refused."""
    return _b64(_mac(secret, _CSRF_CONTEXT, token.encode()))[:32]


def form_token_ok(secret: bytes, token: str, given: str) -> bool:
    return hmac.compare_digest(form_token(secret, token), given or "")

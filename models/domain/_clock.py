"""The one clock: aware UTC everywhere (SQLite keeps no offset, so storage normalises to it too)."""

from __future__ import annotations

from datetime import datetime, timezone


def utcnow() -> datetime:
    return datetime.now(timezone.utc)

"""The health of what changeflow keeps itself (issue 31): its database, the audit guards, the outbox, the audit
checkpoints. The Prefect side (the API, the worker's heartbeat) is checked by the flows package, which talks to
Prefect; `flows.health_report` puts both together for `changeflow doctor` and `/healthz`."""

from __future__ import annotations

from datetime import timedelta
from typing import Callable

from sqlalchemy import func, select, text

from ..domain import HealthCheck
from ..storage import AuditEvent, Database, Notification, guard_problems
from ._anchors import AuditAnchors

# Outbox states a message waits in until it is sent (or fails for good).
_WAITING = ("pending", "sending")


class HealthService:
    def __init__(self, db: Database, anchors: AuditAnchors | None, clock: Callable):
        self._db = db
        self._anchors = anchors
        self._clock = clock

    def database(self) -> HealthCheck:
        """The change database answers a read (any failure: its message, never a traceback)."""
        try:
            with self._db.read() as session:
                session.execute(text("SELECT 1"))
                changes = session.execute(text("SELECT count(*) FROM change_requests")).scalar_one()
        except Exception as exc:  # noqa: BLE001 - whatever stops a read is what the operator must see
            return HealthCheck("database", False, f"{self._db.dialect}: {type(exc).__name__}: "
                               f"{str(exc).splitlines()[0][:300]}")
        return HealthCheck("database", True, f"{self._db.dialect}, {changes} changes")

    def guards(self) -> HealthCheck:
        """The triggers that keep the audit trail append-only are in place."""
        try:
            problems = guard_problems(self._db.write_engine)
        except Exception as exc:  # noqa: BLE001
            return HealthCheck("audit guards", False, f"could not read them: {type(exc).__name__}")
        return HealthCheck("audit guards", not problems, "; ".join(problems) or "in place")

    def outbox(self, max_wait: timedelta) -> HealthCheck:
        """No message has waited to be sent for longer than `max_wait` (the sweep sends every minute)."""
        oldest_allowed = self._clock() - max_wait
        try:
            with self._db.read() as session:
                late, oldest = session.execute(
                    select(func.count(), func.min(Notification.created_at))
                    .where(Notification.state.in_(_WAITING), Notification.created_at < oldest_allowed)).one()
        except Exception as exc:  # noqa: BLE001
            return HealthCheck("outbox", False, f"could not read it: {type(exc).__name__}")
        if late:
            return HealthCheck("outbox", False, f"{late} message(s) unsent for more than {max_wait} (oldest from "
                               f"{oldest:%Y-%m-%d %H:%M} UTC): is the sweep running, is a channel down?")
        return HealthCheck("outbox", True, f"nothing waiting longer than {max_wait}")

    def checkpoint(self, grace: timedelta) -> HealthCheck:
        """The newest events are covered by a signed checkpoint within its interval plus `grace` (the sweep signs
        them): an event older than that and still unsigned means the sweep or its signing key is missing."""
        if self._anchors is None:
            return HealthCheck("audit checkpoint", False, "no checkpoint file configured here")
        try:
            latest = self._anchors.latest_valid()
            with self._db.read() as session:
                first_unsigned = session.execute(
                    select(func.count(), func.min(AuditEvent.occurred_at))
                    .where(AuditEvent.seq > (latest.seq if latest else 0))).one()
        except Exception as exc:  # noqa: BLE001
            return HealthCheck("audit checkpoint", False, f"could not read it: {type(exc).__name__}")
        unsigned, since = first_unsigned
        limit = self._anchors.every + grace
        if unsigned and since is not None and self._clock() - since > limit:
            return HealthCheck("audit checkpoint", False, f"{unsigned} event(s) since {since:%Y-%m-%d %H:%M} UTC "
                               f"under no signed checkpoint (one is due every {self._anchors.every}): is the sweep "
                               "running with its signing key?")
        where = f"the last at event {latest.seq}, {latest.at:%Y-%m-%d %H:%M} UTC" if latest else "none needed yet"
        return HealthCheck("audit checkpoint", True, where)

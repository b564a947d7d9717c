"""The post-change watch's record (issue 33): when it started and how it was set up, every measurement (stored
with the canary's, as step 0 of the change, so `audit verify` binds them the same way) and its verdict, once."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..domain import WATCH_BAKE, WATCH_STEP, AuditAction, WatchSetup
from ..storage import ROWS, CanaryMeasurement, ChangeRequest, measurement_rows_bound
from ._canary import CanaryService
from ._unit_of_work import UnitOfWork


class WatchService:
    def __init__(self, uow: UnitOfWork, canary: CanaryService):
        self._uow = uow
        self._canary = canary

    def setup(self, change: ChangeRequest) -> WatchSetup | None:
        """The watch a change gets once verified: the policy's duration and breach rule for its type, canary.yaml's
        measurements of its service. None: its service is not watched (or the policy's duration is 0)."""
        configured = self._uow.org.canary_config.watch_for(change.service)
        if configured is None:
            return None
        plan = change.canary or {}
        # `{version}` in a query: the promoted canary's version serves now; otherwise the release the change ships.
        version = str(plan.get("canary_version") or change.release or "")
        # (Not `policies.environment()`: an environment edited out of policies.yaml since the filing is no reason to
        # stop the run here; it is simply not one the watch names.)
        environment = change.environment or self._uow.org.policies.default_environment
        return WatchSetup.of(self._uow.org.policies.watch, *configured, change_type=change.type,
                             service=change.service, environment=environment, version=version)

    def start(self, key: str, setup: WatchSetup) -> datetime:
        """When the watch started (once: a run resumed mid-watch goes on to the same end, not a fresh duration)."""
        return self._uow.marker(key, AuditAction.watch_started, {"step": WATCH_STEP}, setup.describe())[0]

    def record_measurements(self, key: str, rows: list[dict[str, Any]]) -> None:
        self._canary.record_measurements(key, rows)

    def measurements(self, key: str) -> list[CanaryMeasurement]:
        return [row for row in self._canary.measurements(key, step=WATCH_STEP) if row.bake == WATCH_BAKE]

    def decide(self, key: str, decision: dict[str, Any]) -> dict[str, Any]:
        """The watch's verdict on the record, once, with the digest of every measurement it was based on; returns
        the first verdict recorded (a resumed run acts on that one)."""
        data = self._uow.marker(key, AuditAction.watch_decision, {"step": WATCH_STEP, "bake": WATCH_BAKE},
                                {**decision, ROWS: measurement_rows_bound(self.measurements(key))})[1]
        return {k: v for k, v in data.items() if k != ROWS}

    def decision(self, key: str) -> dict[str, Any] | None:
        """The verdict on record, or None while the watch has not ended."""
        decided = self._uow.last_event_per_step(key, AuditAction.watch_decision).get(WATCH_STEP)
        return None if decided is None else {k: v for k, v in decided.items() if k != ROWS}

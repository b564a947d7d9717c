"""What `changeflow doctor` and the endpoint's `/healthz` report (issue 31): one named check per dependency, each
saying what it found, so that an operator reads which piece is down instead of guessing from "not ok"."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HealthCheck:
    name: str  # database, prefect, worker, outbox, audit guards, audit checkpoint
    ok: bool
    detail: str


@dataclass(frozen=True)
class HealthReport:
    checks: tuple[HealthCheck, ...]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    @property
    def failing(self) -> list[str]:
        return [check.name for check in self.checks if not check.ok]

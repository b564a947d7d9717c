"""Which escalation reminders are due for a waiting change: a pure function of time and policy."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from ._policy_file import EscalationStep


@dataclass(frozen=True)
class EscalationDue:
    step: EscalationStep
    level: int


def due_escalations(
    requested_at: datetime, now: datetime, ladder: list[EscalationStep], severity: str | None
) -> list[EscalationDue]:
    """Every rung whose delay has passed; a rung limited to severities applies only to those incidents."""
    waited = now - requested_at
    return [
        EscalationDue(step, level)
        for level, step in enumerate(ladder, start=1)
        if waited >= step.after and (not step.severities or severity in step.severities)
    ]


def next_escalation_at(requested_at: datetime, handled_until: datetime | None, ladder: list[EscalationStep],
                       severity: str | None, sla: timedelta) -> datetime | None:
    """The next moment the escalation sweep has something to do for a waiting change: a rung (of those for its
    severity) or the end of its SLA, later than `handled_until` (None: nothing handled yet, the first of them).
    None when nothing is left. Stored with the change, it lets the sweep read only the changes due now, so its
    cost follows the changes that need action, not every change waiting (issue 15)."""
    moments = [requested_at + step.after for step in ladder if not step.severities or severity in step.severities]
    moments.append(requested_at + sla)
    later = [m for m in moments if handled_until is None or m > handled_until]
    return min(later) if later else None


def sla_passed(requested_at: datetime, now: datetime, sla: timedelta) -> bool:
    return now - requested_at >= sla


def format_wait(waited: timedelta) -> str:
    minutes = int(waited.total_seconds() // 60)
    if minutes < 120:
        return f"{minutes} min"
    hours = minutes // 60
    return f"{hours} h" if hours <= 48 or hours % 24 else f"{hours // 24} d"

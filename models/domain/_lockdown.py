"""Lockdown (issue 32), the incident button: while it is on, no implementation starts, only the change types the
policy admits may be filed, and running canaries go back to stable or hold where they are. Pure rules; who may
turn it on and off, and what it does to a canary, come from policies.yaml `lockdown:`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import Field

from ._fields import Name, Strict


class LockdownPolicy(Strict):
    declared_by: list[Name] = Field(
        default_factory=lambda: ["incident_commander"], min_length=1,
        description="Roles that may turn a lockdown on or off, each time with their personal code for it")
    admits: list[Name] = Field(
        default_factory=lambda: ["emergency"],
        description="Change types that may still be filed and started during a lockdown (the incident's fixes)")
    canaries: Literal["stable", "hold"] = Field(
        default="stable",
        description="stable: a canary being rolled out is aborted, its traffic back to stable, and its change rolled "
        "back; hold: it stays at its weight and takes no further step until the lockdown is lifted")


@dataclass(frozen=True)
class Lockdown:
    """The lockdown as the audit trail last recorded it. `round`: the sequence number of that record (0: there
    was never one), which each personal code for the next lockdown act is bound to, so a code works once."""

    on: bool
    round: int = 0
    by: str = ""
    since: datetime | None = None
    reason: str = ""

    def describe(self) -> str:
        if not self.on:
            return "no lockdown"
        when = f" since {self.since:%Y-%m-%d %H:%M} UTC" if self.since else ""
        return f"lockdown{when}, declared by {self.by}: {self.reason}"


NO_LOCKDOWN = Lockdown(on=False)


def lockdown_refusal(lockdown: Lockdown, policy: LockdownPolicy, change_type: str, doing: str) -> str | None:
    """Why a change of `change_type` may not do `doing` ("be filed", "start") now (None: it may)."""
    if not lockdown.on or change_type in policy.admits:
        return None
    admitted = ", ".join(policy.admits) or "no change type"
    return f"{lockdown.describe()}: {change_type} changes may not {doing} until it is lifted (admitted: {admitted})"

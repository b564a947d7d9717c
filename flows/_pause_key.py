"""The key a gate suspends its run under, built and parsed here only.

`<kind>-<gate>-<attempt>`: `approval-r2-3` is the third wait of the approval gate in round 2, `canary-confirm-s2-1`
the first wait before canary step 2. Prefect allows letters, digits and dashes in a key, and remembers every key
that fired: a re-run replays its fired keys in order (returning the input they got), so a gate builds the same
sequence of keys on every run and a new attempt gets a new number. No Prefect import here: the CLI and the sweep
read keys without loading Prefect's engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class GateKind(str, Enum):
    filing = "filing"
    approval = "approval"
    window = "window"
    work = "work"
    checklist = "checklist"
    canary = "canary"
    review = "review"
    lockdown = "lockdown"  # a lockdown pressed from the Prefect UI: the presser's code, in the Resume form


@dataclass(frozen=True)
class PauseKey:
    kind: GateKind
    gate: str  # the gate within its kind: `r2`, `implemented-s1`, `pre-0`, `confirm-s2`
    attempt: int

    @property
    def gate_name(self) -> str:
        """The gate the key belongs to, without its attempt (`canary-confirm-s2`): what the records name."""
        return f"{self.kind.value}-{self.gate}" if self.gate else self.kind.value

    def __str__(self) -> str:
        return f"{self.gate_name}-{self.attempt}"

    @classmethod
    def parse(cls, text: str | None) -> "PauseKey | None":
        """The key a run is paused at, or None for a key no changeflow gate builds (Prefect's own counter keys)."""
        if not text:
            return None
        kind, _, rest = text.partition("-")
        if kind not in GateKind._value2member_map_:
            return None
        gate, _, attempt = rest.rpartition("-")
        if not attempt.isdigit():
            # A key of an older release without its attempt (`window`): the gate itself.
            return cls(GateKind(kind), rest, 0)
        return cls(GateKind(kind), gate, int(attempt))


"""How a change's run ends (issue 30): in a state named for what became of the change, of a kind whose colour in
the Prefect UI tells the truth. A rejected change, or one cancelled by its pre-checklist, is not a green success,
and a rolled-back one is red: the Runs list reads like the change log."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ._enums import ChangeState as S


class EndingKind(str, Enum):
    """What the run's colour says: it did what was asked, it stopped before anything happened, or it went wrong."""

    succeeded = "succeeded"
    stopped = "stopped"
    failed = "failed"


@dataclass(frozen=True)
class RunEnding:
    name: str
    kind: EndingKind


REFUSED = RunEnding("Refused", EndingKind.stopped)  # bad input: nothing was recorded
# A lockdown pressed from the Prefect UI (issue 32): the run ends named for what it did.
LOCKDOWN_ON = RunEnding("Lockdown on", EndingKind.succeeded)
LOCKDOWN_LIFTED = RunEnding("Lockdown lifted", EndingKind.succeeded)

# An implementation that did not succeed names the run, whether or not its review is still due.
_BY_OUTCOME = {"failed": RunEnding("Failed", EndingKind.failed),
               "rolled_back": RunEnding("Rolled back", EndingKind.failed)}
_BY_STATE = {
    S.closed: RunEnding("Closed", EndingKind.succeeded),
    S.review_pending: RunEnding("Review pending", EndingKind.succeeded),
    S.completed: RunEnding("Completed", EndingKind.succeeded),
    S.rejected: RunEnding("Rejected", EndingKind.stopped),
    S.expired: RunEnding("Expired", EndingKind.stopped),
    S.cancelled: RunEnding("Cancelled", EndingKind.stopped),
}


def run_ending(state: S, outcome: str | None) -> RunEnding:
    """The state a change's run ends in, from the change's state and implementation outcome."""
    if outcome in _BY_OUTCOME:
        return _BY_OUTCOME[outcome]
    if state in _BY_STATE:
        return _BY_STATE[state]
    # A run that ends while its change is still open (it cannot go on: e.g. handed to a person) says so plainly.
    return RunEnding(state.value.replace("_", " ").capitalize(), EndingKind.stopped)

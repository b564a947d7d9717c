"""The state a change's run ends in (issue 30): named for what became of its change, with the reason of the
change's last transition as its message (`models.run_ending` decides the name and the colour)."""

from __future__ import annotations

from prefect.states import State

from flows._change_page import publish_change_page
from flows._prefect_api import final_state
from flows._wiring import wiring
from models import ChangeState, run_ending


def run_ended(key: str) -> State:
    """The run's final state: Closed, Review pending, Rejected, Expired, Cancelled, Rolled back or Failed."""
    view = wiring().services.changes.view(key)
    ending = run_ending(ChangeState(view.state), view.outcome)
    publish_change_page(key, view, ending=ending.name)  # (its runs list shows this run as it ends, not Running)
    reason = next((str(e.data.get("reason") or "") for e in reversed(view.events) if e.action == "transition"), "")
    return final_state(ending, f"{view.key} {view.state.replace('_', ' ')}" + (f": {reason}" if reason else ""))

"""How a change's run ends (issue 30): named for what became of the change, its colour telling the truth."""

from __future__ import annotations

import pytest

from models import ChangeState, EndingKind, run_ending


@pytest.mark.parametrize(("state", "outcome", "name", "kind"), [
    ("closed", "succeeded", "Closed", EndingKind.succeeded),
    ("review_pending", "succeeded", "Review pending", EndingKind.succeeded),
    ("review_pending", "rolled_back", "Rolled back", EndingKind.failed),
    ("review_pending", "failed", "Failed", EndingKind.failed),
    ("closed", "rolled_back", "Rolled back", EndingKind.failed),
    ("rejected", None, "Rejected", EndingKind.stopped),
    ("expired", None, "Expired", EndingKind.stopped),
    ("cancelled", None, "Cancelled", EndingKind.stopped),
])
def test_a_run_is_named_for_its_change_and_only_success_is_green(state, outcome, name, kind):
    ending = run_ending(ChangeState(state), outcome)
    assert (ending.name, ending.kind) == (name, kind)

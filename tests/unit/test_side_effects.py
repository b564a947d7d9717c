"""The at-most-once rule of a restarted run (models/domain/_side_effects.py), which the implementation steps, the
checklist commands, the rollback and the maintenance activities all follow."""

from __future__ import annotations

import pytest

from models import Rerun, rerun_of


@pytest.mark.parametrize(("interrupted", "idempotent", "expected"), [
    (False, False, Rerun.run),
    (False, True, Rerun.run),
    (True, True, Rerun.run_again),
    (True, False, Rerun.not_blindly),  # its outcome is unknown: never run again blindly
])
def test_a_side_effect_a_dead_run_started_runs_again_only_when_declared_idempotent(interrupted, idempotent,
                                                                                   expected):
    assert rerun_of(interrupted, idempotent) is expected

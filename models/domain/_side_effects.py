"""What a restarted run does with a side effect a dead run had started: the at-most-once rule (docs/crash-safety.md).

Every side effect (an implementation step, a checklist command, a rollback, a maintenance activity) records its
intent before it runs. A restarted run that finds the intent without a result does not know whether the effect
took place, so it never runs it again blindly: a person says what happened, unless the config declares the effect
idempotent (`idempotent: true`), when running it again is safe and is recorded as a retry.
"""

from __future__ import annotations

from enum import Enum


class Rerun(str, Enum):
    run = "run"  # never started, or started by this attempt: just run it
    run_again = "run_again"  # a dead run started it and it is idempotent: run it again, recorded as a retry
    not_blindly = "not_blindly"  # a dead run started it, outcome unknown: a person says (or it is skipped)


def rerun_of(interrupted: bool, idempotent: bool) -> Rerun:
    """`interrupted`: a dead run recorded the intent and no result; `idempotent`: the config declares it so."""
    if not interrupted:
        return Rerun.run
    return Rerun.run_again if idempotent else Rerun.not_blindly

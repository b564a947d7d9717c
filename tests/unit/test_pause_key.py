"""The pause key is built and parsed in one place (flows/_pause_key.py): every key a gate builds parses back to
the same gate and attempt, and a key no gate builds is not taken for one."""

from __future__ import annotations

import pytest

from flows import GateKind, PauseKey


@pytest.mark.parametrize("key, kind, gate, attempt, gate_name", [
    ("approval-r2-3", GateKind.approval, "r2", 3, "approval-r2"),
    ("window-r1-2", GateKind.window, "r1", 2, "window-r1"),
    ("work-rolled-back-s2-1", GateKind.work, "rolled-back-s2", 1, "work-rolled-back-s2"),
    ("checklist-pre-0-4", GateKind.checklist, "pre-0", 4, "checklist-pre-0"),
    ("canary-inconclusive-s1-3f2a9c0d1e7b-2", GateKind.canary, "inconclusive-s1-3f2a9c0d1e7b", 2,
     "canary-inconclusive-s1-3f2a9c0d1e7b"),
    ("window", GateKind.window, "", 0, "window"),  # an older release's key, without its attempt
], ids=["approval", "window", "work", "checklist", "canary", "older-key"])
def test_a_key_parses_to_its_gate_and_attempt(key, kind, gate, attempt, gate_name):
    parsed = PauseKey.parse(key)
    assert parsed == PauseKey(kind, gate, attempt)
    assert parsed.gate_name == gate_name
    if attempt:
        assert str(parsed) == key


@pytest.mark.parametrize("key", [None, "", "1", "approve-r1-1", "Approval-r1-1", "suspend-3"],
                         ids=["none", "empty", "counter", "misspelt", "capitalised", "not-a-gate"])
def test_a_key_no_gate_builds_is_none(key):
    assert PauseKey.parse(key) is None

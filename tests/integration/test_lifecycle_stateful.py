"""Hypothesis drives random sequences of operations against a real database: no sequence reaches an
illegal state, and every applied transition appears exactly once in the audit chain."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from models import (
    DEFAULTS_DIR,
    Services,
    ChangeState,
    ChangeflowError,
    IllegalTransition,
    PolicyViolation,
    is_allowed,
    load_org,
    record_problems,
    verify_chain,
)
from models import events_for
from tests.helpers import (SECRET, SHIPPED_RULES, SHIPPED_TYPES, emergency_request, major_request, migrated_sqlite,
                           standard_request)

ORG = load_org(DEFAULTS_DIR)
REQUESTS = {"standard": standard_request, "emergency": emergency_request,
            "major": major_request}
APPROVERS = {"standard": ["alice", "bob"], "emergency": ["erin"],
             "major": ["alice", "carol", "dave"]}


# The lifecycle of DESIGN.md written out independently of models/_lifecycle.py, so a wrong edge in the
# code's table is caught here instead of being trusted.
_SHARED = """
submitted>awaiting_approval submitted>rejected submitted>cancelled
awaiting_approval>approved awaiting_approval>rejected awaiting_approval>expired awaiting_approval>cancelled
implementing>verifying implementing>failed implementing>rolled_back
verifying>completed verifying>failed verifying>rolled_back
failed>review_pending rolled_back>review_pending review_pending>closed
"""
_WINDOWED = ("approved>scheduled approved>cancelled scheduled>implementing scheduled>cancelled completed>closed "
             "completed>review_pending approved>awaiting_approval scheduled>awaiting_approval")
_EMERGENCY = "approved>implementing approved>cancelled completed>review_pending approved>awaiting_approval"


def _edges(text: str) -> set[tuple[ChangeState, ChangeState]]:
    return {tuple(ChangeState(p) for p in edge.split(">")) for edge in text.split()}


EXPECTED = {
    "standard": _edges(_SHARED + _WINDOWED),
    # Every major change is reviewed (issue 33, policies.yaml `review: always`): none closes without one.
    "major": _edges(_SHARED + _WINDOWED) - _edges("completed>closed"),
    "emergency": _edges(_SHARED + _EMERGENCY),
}


def expected_allowed(change_type: str, source: ChangeState, target: ChangeState) -> bool:
    return (source, target) in EXPECTED[change_type]


def test_lifecycle_table_matches_the_design():
    for change_type in SHIPPED_TYPES:
        for source in ChangeState:
            for target in ChangeState:
                assert is_allowed(SHIPPED_RULES[change_type], source, target) == expected_allowed(change_type, source,
                                                                                                  target), (
                    change_type, source, target)


def _reachable(change_type: str) -> set[ChangeState]:
    seen, frontier = {ChangeState.submitted}, [ChangeState.submitted]
    while frontier:
        state = frontier.pop()
        for target in ChangeState:
            if expected_allowed(change_type, state, target) and target not in seen:
                seen.add(target)
                frontier.append(target)
    return seen


class ChangeLifecycle(RuleBasedStateMachine):
    changes = Bundle("changes")

    def __init__(self):
        super().__init__()
        self.tmp = tempfile.mkdtemp()
        self.db = migrated_sqlite(Path(self.tmp) / "changeflow.db")
        self.services = Services.build(self.db, ORG, SECRET)
        self.types: dict[str, str] = {}
        self.states: dict[str, ChangeState] = {}
        self.applied: dict[str, list[tuple[str, str]]] = {}

    def teardown(self):
        self.db.dispose()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _record(self, key: str, source: ChangeState, target: ChangeState) -> None:
        self.applied[key].append((source.value, target.value))
        self.states[key] = target

    @initialize(target=changes)
    def one_change_of_each_type(self):
        return multiple(*(self.submit(change_type) for change_type in SHIPPED_TYPES))

    @rule(target=changes, change_type=st.sampled_from(SHIPPED_TYPES))
    def submit(self, change_type):
        change = self.services.changes.submit(REQUESTS[change_type]())
        self.types[change.key], self.states[change.key], self.applied[change.key] = (
            change_type, ChangeState.submitted, [])
        return change.key

    @rule(key=changes, data=st.data())
    def transition(self, key, data):
        source, change_type = self.states[key], self.types[key]
        # Half the draws follow the lifecycle (so runs get deep), half try anything (so illegal moves are tried).
        onward = sorted((t for s, t in EXPECTED[change_type] if s is source), key=lambda t: t.value)
        anything = st.sampled_from(list(ChangeState))
        target = data.draw(st.one_of(st.sampled_from(onward), anything) if onward else anything)
        with self.db.read() as session:
            events_before = verify_chain(session).count
        try:
            self.services.changes.transition(key, target, actor="ops", reason="hypothesis")
        except (IllegalTransition, PolicyViolation):
            # Approval is given by approvers, and a change goes back to approval only by an amendment (new round).
            back_to_approval = target is ChangeState.awaiting_approval and source is not ChangeState.submitted
            legal = (expected_allowed(change_type, source, target) and target is not ChangeState.approved
                     and not back_to_approval)
            assert not legal, f"{source.value} -> {target.value} was refused for a {change_type} change"
            with self.db.read() as session:
                assert verify_chain(session).count == events_before, "a refused transition wrote an event"
            return
        assert expected_allowed(change_type, source, target), f"illegal {source.value} -> {target.value} applied"
        self._record(key, source, target)

    @rule(key=changes)
    def request_approval(self, key):
        source = self.states[key]
        try:
            self.services.approvals.request_approval(key)
        except IllegalTransition:
            assert source is not ChangeState.submitted
            return
        self._record(key, source, ChangeState.awaiting_approval)

    @precondition(lambda self: any(s is ChangeState.awaiting_approval for s in self.states.values()))
    @rule(data=st.data())
    def approve_everything_needed(self, data):
        waiting = sorted(k for k, s in self.states.items() if s is ChangeState.awaiting_approval)
        key = data.draw(st.sampled_from(waiting))
        change_type = self.types[key]
        needed = APPROVERS[change_type]
        if change_type == "standard" and self.services.changes.get(key).risk_level == "high":
            needed = needed + ["carol", "dave", "frank"]
        for person in needed:
            try:
                result = self.services.approvals.decide(key, approver=person, decision="approve",
                                             code=self.services.approvals.approval_code_for(key, person))
            except ChangeflowError:
                continue
        assert result.change.state == ChangeState.approved.value
        self._record(key, ChangeState.awaiting_approval, ChangeState.approved)

    @invariant()
    def states_are_legal_and_match_the_database(self):
        for key, state in self.states.items():
            assert state in _reachable(self.types[key])
            assert self.services.changes.get(key).state == state.value

    @invariant()
    def every_applied_transition_is_in_the_chain_exactly_once(self):
        with self.db.read() as session:
            assert verify_chain(session).ok
            assert record_problems(session) == []
            for key, applied in self.applied.items():
                recorded = [(e.from_state, e.to_state) for e in events_for(session, key) if e.action == "transition"]
                assert recorded == applied


ChangeLifecycle.TestCase.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None, suppress_health_check=list(HealthCheck)
)
TestChangeLifecycle = ChangeLifecycle.TestCase

"""Hypothesis plays everyone at once, through the doors a person or Prefect has: resume an approval gate or a
window gate with any name and any code (right, someone else's, an old round's, empty), retry a run (the flow runs
from the top and tries to begin), cancel a run, withdraw, amend, declare freezes and windows, confirm manual work,
and let time pass. Whenever a change begins implementation, an oracle written here (independently of
models/) checks the approvals, the window and the freezes its policy requires at that moment.

In the slow suite: 500 examples x 50 steps.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule
from sqlalchemy import text

from models import DEFAULTS_DIR, Act, ChangeflowError, Services, approval_code, load_org, record_problems
from tests.helpers import SECRET, Clock, emergency_request, major_request, migrated_sqlite, standard_request

pytestmark = pytest.mark.slow

ORG = load_org(DEFAULTS_DIR)
UTC = timezone.utc
T0 = datetime(2026, 12, 1, 12, tzinfo=UTC)  # a Tuesday
REQUESTS = {"standard": standard_request, "emergency": emergency_request, "major": major_request}
# Weighted so that runs get deep (real people with their own codes) while every bad input is still tried often.
PEOPLE = ["", "nobody-at-all", "maintenance", *ORG.directory.people, "alice", "bob", "erin", "frank", "carol"]
CODES = ["own", "own", "own", "own", "someone-elses", "old-round", "another-act", "wrong", "empty"]

# The policies of policies.yaml and the roles of directory.yaml, written out again so the oracle does not trust
# the code under test.
ROLE_HOLDERS = {"team_lead": {"alice", "frank"}, "peer_reviewer": {"bob", "carol"},
                "incident_commander": {"erin"}, "cab_member": {"alice", "carol", "dave", "frank"}}
EARLY_STARTERS = {"standard": ROLE_HOLDERS["team_lead"], "emergency": set(), "major": set()}
NOTICE = {"standard": timedelta(hours=48), "emergency": timedelta(0), "major": timedelta(days=14)}


def approvals_satisfied(change_type: str, requester: str, approvers: set[str]) -> bool:
    approvers = approvers - {requester}
    if change_type == "emergency":
        return bool(approvers & ROLE_HOLDERS["incident_commander"])
    if change_type == "standard":
        return any(lead != peer for lead in approvers & ROLE_HOLDERS["team_lead"]
                   for peer in approvers & ROLE_HOLDERS["peer_reviewer"])
    return len(approvers & ROLE_HOLDERS["cab_member"]) * 2 > len(ROLE_HOLDERS["cab_member"])


def in_scheduled_window(now: datetime) -> bool:
    """Sunday 02:00-04:00 (weekly), the first Sunday 01:00-06:00 (monthly) or the third Sunday of January, April,
    July and October 00:00-08:00 (quarterly), UTC."""
    if now.weekday() != 6:
        return False
    hours = now.hour + now.minute / 60
    quarterly = now.month in (1, 4, 7, 10) and 15 <= now.day <= 21 and hours < 8
    return 2 <= hours < 4 or (now.day <= 7 and 1 <= hours < 6) or quarterly


@dataclass
class Span:
    start: datetime
    end: datetime
    service: str | None

    def covers(self, now: datetime, service: str) -> bool:
        return self.start <= now < self.end and self.service in (None, service)


@dataclass
class Tracked:
    type: str
    requester: str
    service: str
    created: datetime
    early_starts: dict[int, str] = field(default_factory=dict)  # round -> who started it early


class ControlsHold(RuleBasedStateMachine):
    changes = Bundle("changes")

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        self.db = migrated_sqlite(Path(self.tmp) / "changeflow.db")
        self.clock = Clock(T0)
        self.services = Services.build(self.db, ORG, SECRET, clock=self.clock)
        self.tracked: dict[str, Tracked] = {}
        self.freezes: list[Span] = []
        self.windows: list[Span] = []
        self.started: set[str] = set()
        self.attempts = itertools.count(1)

    def teardown(self) -> None:
        # Whatever order people and Prefect acted in, every change and approval row is explained by the chain.
        with self.db.read() as session:
            assert record_problems(session) == []
        self.db.dispose()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- helpers ----------------------------------------------------------------------------------------

    def code(self, key: str, person: str, kind: str, act: Act) -> str:
        round_ = self.services.changes.get(key).approval_round
        # A code of the person's own, for this change and round, but sent for another kind of act.
        other = Act.confirm_check if act is not Act.confirm_check else Act.approve
        return {"own": approval_code(SECRET, key, person, round_, act),
                "someone-elses": approval_code(SECRET, key, "alice" if person != "alice" else "bob", round_, act),
                "old-round": approval_code(SECRET, key, person, max(round_ - 1, 0), act),
                "another-act": approval_code(SECRET, key, person, round_, other),
                "wrong": "AAAA-BBBB-CCCC", "empty": ""}[kind]

    def approvers(self, key: str) -> set[str]:
        with self.db.read() as session:
            rows = session.execute(text(
                "SELECT a.approver FROM approvals a JOIN change_requests c ON c.id = a.change_id "
                "WHERE c.key = :k AND a.round = c.approval_round AND a.decision = 'approve'"), {"k": key})
            return {r[0] for r in rows}

    # ---- what people and Prefect can do -------------------------------------------------------------------

    @initialize(target=changes)
    def first_change(self):
        return self.file("standard")

    @rule(target=changes, change_type=st.sampled_from(list(REQUESTS)))
    def file(self, change_type):
        """The run form: the flow records the change and asks for approval."""
        change = self.services.changes.submit(REQUESTS[change_type]())
        self.services.approvals.request_approval(change.key)
        self.tracked[change.key] = Tracked(change_type, change.requester, change.service, self.clock.at)
        return change.key

    @rule(key=changes, person=st.sampled_from(PEOPLE), kind=st.sampled_from(CODES),
          decision=st.sampled_from(["approve", "approve", "reject"]))
    def resume_the_approval_gate(self, key, person, kind, decision):
        try:
            self.services.approvals.decide(key, approver=person, decision=decision, code=self.code(key, person, kind,
                                                                                                   Act.approve),
                                           comment="no" if decision == "reject" else "",
                                           attempt_id=f"approval-{next(self.attempts)}")
        except ChangeflowError:
            pass
        self.run_continues(key)

    @rule(key=changes, data=st.data())
    def an_approver_approves(self, key, data):
        """The honest path, so that runs reach the window gate and beyond: someone eligible who has not decided."""
        tracked = self.tracked[key]
        roles = {"emergency": ["incident_commander"], "standard": ["team_lead", "peer_reviewer"],
                 "major": ["cab_member"]}[tracked.type]
        eligible = sorted(set().union(*(ROLE_HOLDERS[r] for r in roles)) - {tracked.requester} - self.approvers(key))
        if eligible:
            self.resume_the_approval_gate(key, data.draw(st.sampled_from(eligible)), "own", "approve")

    @rule(key=changes, person=st.sampled_from(sorted(ROLE_HOLDERS["team_lead"] | {"grace", "bob"})))
    def someone_starts_it_early(self, key, person):
        """A person with their own code asks to start early (allowed only to team leads on standard changes)."""
        self.resume_the_window_gate(key, person, "own")

    @rule(key=changes, person=st.sampled_from(PEOPLE), kind=st.sampled_from(CODES))
    def resume_the_window_gate(self, key, person, kind):
        change = self.services.changes.get(key)
        refusal = self.services.scheduling.answer_window_gate(
            key, person=person, code=self.code(key, person, kind, Act.start_early), reason="now",
            attempt_id=f"window-{next(self.attempts)}")
        if refusal is None and person and change.state == "scheduled":
            self.tracked[key].early_starts[change.approval_round] = person
        self.run_continues(key)

    @rule(key=changes)
    def retry_the_run(self, key):
        """Prefect runs the flow again from the top (Retry in the UI)."""
        self.run_continues(key)

    def run_continues(self, key: str) -> None:
        """What the flow does after any resume or retry: it schedules an approved change and tries to begin."""
        change = self.services.changes.get(key)
        try:
            if change.state == "approved" and self.tracked[key].type != "emergency":
                self.services.changes.transition(key, "scheduled", actor="changeflow", reason="waiting")
            if self.services.changes.get(key).state in ("approved", "scheduled"):
                self.check_may_begin(key)
        except ChangeflowError:
            pass

    def check_may_begin(self, key: str) -> None:
        tracked, now = self.tracked[key], self.clock.at
        change = self.services.changes.get(key)
        try:
            self.services.scheduling.begin_implementation(key)
        except ChangeflowError:
            return
        self.started.add(key)
        assert approvals_satisfied(tracked.type, tracked.requester, self.approvers(key)), \
            f"{key} began without its approvals"
        if tracked.type == "emergency":
            return  # any time is its window, and its policy overrides freezes (recorded)
        assert not any(f.covers(now, tracked.service) for f in self.freezes), f"{key} began during a freeze"
        early = tracked.early_starts.get(change.approval_round)
        if early is not None:
            assert early in EARLY_STARTERS[tracked.type] and early != tracked.requester
            return
        assert now >= tracked.created + NOTICE[tracked.type], f"{key} began inside its notice period"
        assert in_scheduled_window(now) or any(w.covers(now, tracked.service) for w in self.windows), \
            f"{key} began outside every window at {now}"

    @rule(key=changes, now=st.sampled_from([True, False, False, False]))
    def cancel_the_run(self, key, now):
        """Cancel in the Prefect UI (drawn less often than the rest, so that runs also get deep)."""
        if now:
            self.services.amendments.cancel_for_cancelled_run(key, "CANCELLED")

    @rule(key=changes, person=st.sampled_from(PEOPLE), kind=st.sampled_from(CODES),
          now=st.sampled_from([True, False, False, False]))
    def withdraw(self, key, person, kind, now):
        if not now:
            return
        try:
            self.services.amendments.withdraw(key, person=person, code=self.code(key, person, kind, Act.withdraw),
                                              reason="no longer")
        except ChangeflowError:
            pass

    @rule(key=changes, person=st.sampled_from(PEOPLE), kind=st.sampled_from(CODES))
    def amend(self, key, person, kind):
        try:
            self.services.amendments.amend(key, {"implementation_plan": f"plan {next(self.attempts)}"}, person=person,
                                        code=self.code(key, person, kind, Act.amend), reason="changed")
        except ChangeflowError:
            pass

    @rule(key=changes, person=st.sampled_from(PEOPLE), kind=st.sampled_from(CODES),
          stage=st.sampled_from(["implemented", "verified", "rolled_back"]))
    def confirm_manual_work(self, key, person, kind, stage):
        try:
            self.services.work.confirm(key, stage=stage, person=person, code=self.code(key, person, kind,
                                                                                             Act.confirm_work))
        except ChangeflowError:
            pass

    @rule(hours=st.sampled_from([1, 3, 12, 24, 72]), service=st.sampled_from([None, "payments", "checkout"]))
    def declare_a_freeze(self, hours, service):
        start, end = self.clock.at - timedelta(hours=1), self.clock.at + timedelta(hours=hours)
        self.services.scheduling.add_window(starts_at=start, ends_at=end, title="freeze", freeze=True,
                                            service=service, actor="carol")
        self.freezes.append(Span(start, end, service))

    @rule(service=st.sampled_from([None, "payments"]))
    def open_a_release_window(self, service):
        start, end = self.clock.at, self.clock.at + timedelta(hours=2)
        self.services.scheduling.add_window(starts_at=start, ends_at=end, title="release", service=service,
                                            actor="alice")
        self.windows.append(Span(start, end, service))

    @rule(hours=st.sampled_from([0.5, 2, 9, 24, 24 * 5, 24 * 15]))
    def time_passes(self, hours):
        self.clock.at += timedelta(hours=hours)
        self.the_sweep_wakes_every_run()

    @rule()
    def until_the_next_sunday_window(self):
        days = (6 - self.clock.at.weekday()) % 7 or 7
        self.clock.at = (self.clock.at + timedelta(days=days)).replace(hour=2, minute=30)
        self.the_sweep_wakes_every_run()

    def the_sweep_wakes_every_run(self) -> None:
        """The escalation sweep resumes runs at their window gates (it authorises nothing: the run checks)."""
        for key in self.tracked:
            self.run_continues(key)

    # ---- what must always hold ----------------------------------------------------------------------------

    @invariant()
    def nothing_is_implemented_that_did_not_begin_through_the_check(self):
        with self.db.read() as session:
            implemented = {k for k, in session.execute(text(
                "SELECT key FROM change_requests WHERE implemented_at IS NOT NULL"))}
        assert implemented <= self.started


ControlsHold.TestCase.settings = settings(
    max_examples=int(os.environ.get("CONTROLS_EXAMPLES", 500)), stateful_step_count=50, deadline=None,
    suppress_health_check=list(HealthCheck))
TestControlsHold = ControlsHold.TestCase

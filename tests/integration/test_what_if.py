"""Policy what-if (issue 34): the changes already filed, judged under a proposed policy beside the current one with the
rules submission applies. Replaying the current policy reproduces the record; each kind of difference has a
hand-built history with a known answer; a proposal that does not load is refused naming the file, and nothing is
written either way."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import yaml

from models import AuditEvent, WindowSpec
from tests.helpers import approve, emergency_request, major_request, standard_request

UTC = timezone.utc
T0 = datetime(2026, 11, 1, 12, tzinfo=UTC)  # a Sunday; the tests file in the weeks after it
SUNDAY = datetime(2026, 11, 8, 2, tzinfo=UTC)  # weekly maintenance, a week after T0


def _history(services, clock) -> dict[str, str]:
    """A standard change planned a week out and approved, an undated one, a major one 15 days out approved by the
    CAB, an emergency fixed at once: filed under the shipped policy, their keys by name."""
    keys = {}
    planned = standard_request(planned_start=SUNDAY.isoformat(), planned_end=(SUNDAY + timedelta(hours=1)).isoformat())
    keys["standard"] = services.approvals.request_approval(services.changes.submit(planned).key).key
    for person in ("alice", "bob"):
        approve(services, keys["standard"], person)
    keys["undated"] = services.changes.submit(standard_request(title="undated")).key
    major_at = SUNDAY + timedelta(days=14)
    keys["major"] = services.approvals.request_approval(services.changes.submit(major_request(
        planned_start=major_at.isoformat(), planned_end=(major_at + timedelta(hours=1)).isoformat())).key).key
    for person in ("alice", "carol", "dave"):
        approve(services, keys["major"], person)
    keys["emergency"] = services.changes.submit(emergency_request()).key
    return keys


def _proposed(org, edit):
    data = org.policies.model_dump(by_alias=True, exclude={"version"})
    edit(data)
    return org.policies.model_validate(data)


def _events(db) -> int:
    with db.read() as session:
        return session.query(AuditEvent).count()


def test_replaying_the_current_policy_reproduces_the_record(at_t0, clock):
    _history(at_t0, clock)
    replay = at_t0.what_if.replay(T0 - timedelta(days=1), T0 + timedelta(days=1))
    assert (replay.changes, replay.differences) == (4, [])
    report = at_t0.what_if.compare(at_t0.org.policies, at_t0.org.directory, T0 - timedelta(days=1),
                                   T0 + timedelta(days=1))
    assert (report.changes, report.rows) == (4, []), "the current policy against itself differs nowhere"


def test_each_kind_of_difference_is_found_with_its_known_answer(at_t0, clock, org, db):
    keys = _history(at_t0, clock)
    before = _events(db)

    def proposal(data):
        data["types"]["standard"]["notice"] = "10d"                    # a week's notice is no longer enough
        data["types"]["standard"]["approvals"].append({"role": "cab_member", "count": 1})  # alice + bob: short
        data["types"]["major"]["requires"].append("impact")            # the major change gave none
        data["risk"]["medium_from"] = 1                                # a routine answer now counts as medium

    report = at_t0.what_if.compare(_proposed(org, proposal), org.directory, T0 - timedelta(days=1),
                                   T0 + timedelta(days=1))
    found = {r.key: r.differences for r in report.rows}
    standard = found[keys["standard"]]
    assert "refused: planned_start: standard needs 10 d notice; filed 158 h ahead" in standard, standard
    assert "approvals 1 x peer_reviewer + 1 x team_lead -> 1 x cab_member + 1 x peer_reviewer + 1 x team_lead" \
        in standard and "its approvers would not have sufficed" in standard, standard
    assert "risk low -> medium" in standard
    assert "refused: impact: a major change needs an impact statement" in found[keys["major"]]
    assert keys["undated"] in found and not any(d.startswith("refused") for d in found[keys["undated"]]), \
        "an undated change serves its notice at the window gate, never refused for it"
    (row,) = [r for r in report.rows if r.key == keys["standard"]]
    assert row.added_wait == timedelta(days=10) - (SUNDAY - T0)
    assert (report.refused, report.approvers_short) == (2, 1)
    assert report.added_wait_median == row.added_wait
    assert _events(db) == before, "the what-if writes nothing"


def test_a_window_moved_or_dropped_shows_which_changes_would_have_waited_and_how_long(at_t0, clock, org):
    keys = _history(at_t0, clock)

    def saturdays(data):  # the weekly window a day earlier; the monthly and quarterly ones left where they are
        data["windows"]["weekly"]["weekday"] = "saturday"

    report = at_t0.what_if.compare(_proposed(org, saturdays), org.directory, T0 - timedelta(days=1),
                                   T0 + timedelta(days=1))
    found = {r.key: r for r in report.rows}
    assert set(found) == {keys["standard"], keys["major"]}, "the undated one and the emergency wait for no window"
    assert found[keys["standard"]].differences == (
        "refused: planned_start: outside every window of production; the next it fits is Weekly maintenance "
        "2026-11-14 02:00 UTC",)
    assert found[keys["standard"]].added_wait == timedelta(days=6)


def test_a_proposed_freeze_refuses_what_it_covers_and_a_recorded_one_counts_from_its_declaration(at_t0, clock,
                                                                                                   org):
    """A freeze is the what-if's too: a proposed one refuses the dated changes it covers (not an emergency, whose
    policy overrides freezes; not an undated one, which waits for a window after it); a recorded freeze counts for
    the changes filed after it was declared, as at submit, so the replay still reproduces the record."""
    keys = _history(at_t0, clock)
    year_end = WindowSpec("freeze", SUNDAY - timedelta(days=1), SUNDAY + timedelta(days=2), "Year-end", freeze=True)
    span = (T0 - timedelta(days=1), T0 + timedelta(days=1))
    report = at_t0.what_if.compare(org.policies, org.directory, *span, freezes=[year_end])
    assert [(r.key, r.differences, r.added_wait) for r in report.rows] == [(keys["standard"], (
        "refused: planned_start: planned window falls in the freeze 'Year-end' (2026-11-07 02:00 to 2026-11-10 "
        "02:00 UTC)",), timedelta(days=2))]
    # Declared after the filings: the record stands (those changes meet it at their window gate).
    clock.at = T0 + timedelta(hours=1)
    at_t0.scheduling.add_window(starts_at=year_end.starts_at, ends_at=year_end.ends_at, title="Year-end",
                                freeze=True)
    assert at_t0.what_if.replay(*span).differences == []
    # Filed after it: an emergency planned inside it (overridden at submit); a policy taking the override away
    # would have refused it.
    clock.at = T0 + timedelta(hours=2)
    inside = at_t0.changes.submit(emergency_request(planned_start=SUNDAY.isoformat())).key
    assert at_t0.what_if.replay(*span).differences == []
    no_override = _proposed(org, lambda data: data["types"]["emergency"].update(overrides_freeze=False))
    found = {r.key: r.differences for r in at_t0.what_if.compare(no_override, org.directory, *span).rows}
    assert found == {inside: ("refused: planned_start: planned window falls in the freeze 'Year-end' (2026-11-07 "
                              "02:00 to 2026-11-10 02:00 UTC)",)}, found


def test_the_cli_takes_a_directory_of_proposed_files_and_refuses_one_that_does_not_load(cli_env, db, tmp_path):
    proposal = tmp_path / "proposal"
    proposal.mkdir()
    from models import DEFAULTS_DIR

    policies = yaml.safe_load((DEFAULTS_DIR / "policies.yaml").read_text())
    policies["types"]["emergency"]["requires"].append("rollback_plan")
    (proposal / "policies.yaml").write_text(yaml.safe_dump(policies, sort_keys=False))
    filed = cli_env("submit", "--local", str(_request_file(tmp_path)))
    assert filed.exit_code == 0, filed.stdout
    before = _events(db)
    shown = cli_env("policy", "what-if", str(proposal), "--since", "1d", "--json")
    assert shown.exit_code == 0, shown.stdout
    answer = json.loads(shown.stdout)
    assert (answer["judged"], answer["would_differ"], answer["refused"]) == (1, 1, 1), answer
    assert answer["changes"][0]["differences"] == [
        "refused: rollback_plan: an emergency change needs a rollback plan"]
    assert answer["proposed_version"] != answer["current_version"]
    csv_out = cli_env("policy", "what-if", str(proposal), "--csv")
    assert csv_out.exit_code == 0 and "an emergency change needs a rollback plan" in csv_out.stdout
    policies["types"]["emergency"]["approval_sla"] = "one hour"
    (proposal / "policies.yaml").write_text(yaml.safe_dump(policies, sort_keys=False))
    broken = cli_env("policy", "what-if", str(proposal))
    assert broken.exit_code == 2
    assert "policies.yaml: types.emergency.approval_sla" in broken.output, broken.output
    assert cli_env("policy", "what-if", str(proposal), "--since", "a while").exit_code == 2
    for bad in ("2026-12-20", "2026-12-20/soon", "2026-12-21/2026-12-20"):
        refused = cli_env("policy", "what-if", str(proposal), "--freeze", bad)
        assert refused.exit_code == 2 and "freeze" in refused.output, refused.output
    assert _events(db) == before, "the what-if writes nothing"


def _request_file(tmp_path):
    path = tmp_path / "emergency.json"
    path.write_text(json.dumps(emergency_request()))
    return path


def test_a_policy_version_is_recorded_once_with_what_it_changed_and_the_log_lists_them(db, org, cli_env):
    """Policy changes are changes: the first load of a version records it in the audit trail (by whom, the version
    it replaced, the diff); loading it again records nothing, even from processes racing to be first."""
    import threading

    from models import Services, verify_chain
    from tests.helpers import SECRET

    first = Services.build(db, org, SECRET)
    recorded = first.policy_log.record_loaded("worker")
    assert recorded is not None and (recorded.version, recorded.previous, recorded.diff) == (
        org.policies.version, None, "")
    assert first.policy_log.record_loaded("worker") is None
    longer = _proposed(org, lambda data: data["types"]["standard"].update(notice=timedelta(days=10)))
    changed = org.model_copy(update={"policies": longer.model_copy(update={"version": "b" * 64})})
    racers = [Services.build(db, changed, SECRET) for _ in range(4)]
    threads = [threading.Thread(target=r.policy_log.record_loaded, args=(f"sweep {n}",)) for n, r in
               enumerate(racers)]
    for thread in (*threads,):
        thread.start()
    for thread in threads:
        thread.join()
    log = first.policy_log.log()
    assert [(c.version, c.previous) for c in log] == [(org.policies.version, None), ("b" * 64, org.policies.version)]
    assert '-   "notice": "P2D",' in log[1].diff and '+   "notice": "P10D",' in log[1].diff, log[1].diff
    assert log[1].diff.count("\n-") == 1, "one line changed, one line shown removed"
    with db.read() as session:
        assert verify_chain(session).ok
    shown = cli_env("policy", "log", "--json")
    assert shown.exit_code == 0, shown.output
    assert [c["version"] for c in json.loads(shown.stdout)][:2] == [org.policies.version, "b" * 64]
    assert cli_env("policy", "log", "--diff").exit_code == 0


def test_the_policy_replayed_over_a_seeded_history_reproduces_it_and_finds_an_edited_approval(databases, cli_env):
    """Acceptance: the shipped policy replayed over `benchmarks/seed_history.py`'s history (emergencies approved by
    the incident commander, CAB majorities, each type's evidence) differs from the record nowhere, on SQLite and
    PostgreSQL; with one approval deleted behind changeflow's back, the replay names that change and exits 1."""
    from sqlalchemy import text

    from benchmarks.seed_history import seed

    seed(databases.insider, 2_000)
    shown = cli_env("policy", "replay", "--since", "1200d", "--json")
    assert shown.exit_code == 0, shown.output
    assert {k: v for k, v in json.loads(shown.stdout).items() if k in ("changes", "differences")} == {
        "changes": 2_000, "differences": []}
    with databases.insider.write_engine.begin() as conn:
        conn.execute(text("DELETE FROM approvals WHERE id = (SELECT MIN(a.id) FROM approvals a JOIN change_requests c "
                          "ON c.id = a.change_id WHERE c.type = 'major' AND a.decision = 'approve')"))
        key = conn.execute(text("SELECT c.key FROM change_requests c WHERE c.type = 'major' AND c.approved_at IS NOT "
                                "NULL ORDER BY c.id LIMIT 1")).scalar_one()
    edited = cli_env("policy", "replay", "--since", "1200d")
    assert edited.exit_code == 1, edited.output
    assert f"{key}: approved by too few under its policy" in edited.output
    assert "2000 changes filed since" in edited.output and "1 differences from the record" in edited.output

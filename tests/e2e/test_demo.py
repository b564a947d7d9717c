"""`make demo` is the newcomer's first five minutes: it must play every scenario to its expected end, stop
everything it started and exit 0. Runs the real command (its own Prefect server, worker and sample services)."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_demo_plays_every_scenario_and_exits_0(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CHANGEFLOW_"))}
    env["COLUMNS"] = "160"
    result = subprocess.run([str(Path(sys.executable).parent / "changeflow"), "demo", "--keep"], env=env,
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    kept = re.search(r"kept (\S+):", result.stdout)
    try:
        check_the_demo(result)
        assert kept, result.stdout[-2000:]
        assert_no_secret_where_others_read(Path(kept.group(1)))
        assert_the_policy_replays_the_demo(Path(kept.group(1)))
    finally:
        if kept:
            shutil.rmtree(kept.group(1), ignore_errors=True)


def check_the_demo(result: subprocess.CompletedProcess) -> None:
    # On failure, show what says why: each scenario's failure line and the summary table, not the reports' tail.
    why = [line for line in result.stdout.splitlines() if "failed" in line or "│" in line or "timed out" in line]
    assert result.returncode == 0, "\n".join(why)[-6000:] + result.stderr[-2000:]
    out = result.stdout
    for scenario, outcome in (("canary", "succeeded"), ("rollback", "rolled_back"), ("abort", "rolled_back"),
                              ("pipeline", "closed"), ("major", "scheduled"), ("emergency", "closed"),
                              ("weekly", "closed"), ("early-resume", "scheduled")):
        assert re.search(rf"│ {scenario}\s+│ CHG-\d{{6}} │ {outcome}\s+│ yes", out), f"{scenario} did not end {outcome}"
    assert "refused: frank requested this change and cannot approve or reject it (self-approval)" in out
    assert re.search(r"refused \(unknown \(Prefect UI\)\): resumed without a name and code", out), \
        "an early Resume on a scheduled change must be refused and the refusal shown"
    # The pipeline waited on its gate over HTTP and went on once its change started; the abort took the canary's
    # traffic away itself (nginx: stable only), before the sweep rolled the change back.
    assert re.search(r"the job went on once its window was open and its run began: CHG-\d{6} started: deploy", out)
    flat = " ".join(out.split())  # the console wraps a long line where it likes
    assert re.search(r"the canary has no traffic \(20 requests through nginx: \{'v1': 20\}\)", flat) or \
        "behind a command router" in out
    assert "audit chain intact" in out and re.search(r"demo finished in \d+\.\d s", out)
    assert re.search(r"action item 1 for alice, due \d{4}-\d\d-\d\d 00:00 UTC: Alert on pool saturation", flat), \
        "the emergency's review leads somewhere (issue 33)"
    assert "Prefect UI while the demo runs: http://127.0.0.1:" in out
    assert re.search(r"post-change watch of shop before it completed: healthy, \d+ measurements of its error rate "
                     r"over \d+ s", flat), "the promoted canary's service watched before it closed (issue 33)"


def assert_the_policy_replays_the_demo(home: Path) -> None:
    """Issue 34: the policy the demo ran under, replayed over every change it filed (canaries, the pipeline's, a
    major change, an emergency, the maintenance runs), reproduces the record: the what-if's rules are submission's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CHANGEFLOW_"))}
    replayed = subprocess.run([str(Path(sys.executable).parent / "changeflow"), "policy", "replay", "--since", "1d",
                               "--json"], env={**env, "CHANGEFLOW_HOME": str(home)}, capture_output=True, text=True,
                              timeout=120)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    answer = json.loads(replayed.stdout)
    assert answer["changes"] >= 8 and answer["differences"] == [], answer


def assert_no_secret_where_others_read(home: Path) -> None:
    """Issue 17: after a whole demo, no approval code and no approval-link token in a stored notification, the
    worker's or any other log of the stack, or anything Prefect stores (issue 27: run inputs, parameters, logs,
    artifacts, events: every table of its database). (Personal files, the demo's stand-in for
    e-mail, carry them: that is where they belong.)"""
    from models import Act, approval_code, load_org

    secret = (home / "secret").read_bytes().strip()
    people = load_org(home / "config").directory.people
    with sqlite3.connect(home / "changeflow.db") as db:
        keys = [row[0] for row in db.execute("SELECT key FROM change_requests")]
        stored = [" ".join(row) for row in db.execute(
            "SELECT subject, body_text, body_markdown, body_html FROM notifications")]
    codes = {approval_code(secret, key, person, round_, act)
             for key in keys for person in people for round_ in (1, 2, 3) for act in Act}
    with sqlite3.connect(home / "prefect" / "prefect.db") as prefect:
        run_logs = [row[0] for row in prefect.execute("SELECT message FROM log")]
        # Everything else Prefect keeps: run inputs (what a Resume carried), parameters, artifacts, events, ...
        tables = [row[0] for row in prefect.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        prefect_rows = {f"Prefect's table {table}": [" ".join(map(str, row))
                                                      for row in prefect.execute(f'SELECT * FROM "{table}"')]
                        for table in tables}
    logs = {path.name: path.read_text(errors="replace") for path in (home / "logs").glob("*.log")}
    assert keys and stored and run_logs and "worker.log" in logs
    link_token = re.compile(r"/a/[A-Za-z0-9_-]{20,}\.[A-Za-z0-9_-]{20,}")
    pipeline_token = re.compile(r"cfa_[A-Za-z0-9_-]{16,}")  # the pipeline's bearer token (its CI secret store's)
    inbox = (home / "inbox" / "alice.txt").read_text()  # alice's own channel: where they do belong
    assert any(code in inbox for code in codes) and link_token.search(inbox), "the scan would find them"
    assert prefect_rows["Prefect's table flow_run_input"], "the scan reads the runs' inputs"
    any_code = re.compile("|".join(map(re.escape, codes)))
    for where, texts in (("notifications", stored), ("Prefect run logs", run_logs), *prefect_rows.items(),
                         *((name, [text]) for name, text in logs.items())):
        for text in texts:
            leaked = any_code.findall(text)
            assert not leaked, f"{where} shows approval code(s) {leaked[:3]}"
            assert not link_token.search(text), f"{where} shows an approval link: {link_token.search(text).group(0)}"
            assert not pipeline_token.search(text), f"{where} shows the pipeline's token"

"""`make demo` is the newcomer's first five minutes: it must play every scenario to its expected end, stop
everything it started and exit 0. Runs the real command (its own Prefect server, worker and sample services)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_demo_plays_every_scenario_and_exits_0(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CHANGEFLOW_"))}
    env["COLUMNS"] = "160"
    result = subprocess.run([str(Path(sys.executable).parent / "changeflow"), "demo"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    # On failure, show what says why: each scenario's failure line and the summary table, not the reports' tail.
    why = [line for line in result.stdout.splitlines() if "failed" in line or "│" in line or "timed out" in line]
    assert result.returncode == 0, "\n".join(why)[-6000:] + result.stderr[-2000:]
    out = result.stdout
    for scenario, outcome in (("canary", "succeeded"), ("rollback", "rolled_back"), ("major", "scheduled"),
                              ("emergency", "closed"), ("weekly", "closed"), ("early-resume", "scheduled")):
        assert re.search(rf"│ {scenario}\s+│ CHG-\d{{6}} │ {outcome}\s+│ yes", out), f"{scenario} did not end {outcome}"
    assert "refused: frank requested this change and cannot approve or reject it (self-approval)" in out
    assert re.search(r"refused \(unknown \(Prefect UI\)\): resumed without a name and code", out), \
        "an early Resume on a scheduled change must be refused and the refusal shown"
    assert "audit chain intact" in out and re.search(r"demo finished in \d+\.\d s", out)
    assert "Prefect UI while the demo runs: http://127.0.0.1:" in out

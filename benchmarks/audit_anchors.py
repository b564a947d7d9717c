"""What the audit anchors cost and buy, on a history seeded by seed_history.py (issue 14): full verification
(events/s), the row reconciliation, signing a checkpoint, incremental verification after it, and the compliance
report for one week with and without the checkpoint. Prints one table per database.

    python benchmarks/seed_history.py --changes 1000000 --database sqlite --path /tmp/cf-1m.db
    python benchmarks/audit_anchors.py --url sqlite:////tmp/cf-1m.db
    python benchmarks/audit_anchors.py --url "postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path%3Dcf_history"
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import (  # noqa: E402
    DEFAULTS_DIR,
    AuditAnchors,
    Database,
    Services,
    Settings,
    compliance,
    load_org,
    record_problems,
    verify_chain,
)
from tests.helpers import standard_request  # noqa: E402

END = datetime(2026, 11, 27, tzinfo=timezone.utc)


def timed(action):
    started = time.perf_counter()
    result = action()
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--after", type=int, default=200, help="changes filed after the checkpoint (~6 events each)")
    args = parser.parse_args()
    db = Database(args.url)
    services = Services.build(db, load_org(DEFAULTS_DIR), b"bench")
    settings = Settings(home=Path(tempfile.mkdtemp(prefix="cf-anchors-")))
    settings.ensure_signing_key()
    anchors = AuditAnchors.from_settings(settings, db)

    rows = []
    with db.read() as session:
        chain, full_s = timed(lambda: verify_chain(session))
    verdict = "intact" if chain.ok else "BROKEN"
    rows.append(("audit verify (full)", f"{full_s:.1f} s",
                 f"{chain.count / full_s:,.0f} events/s over {chain.count:,} events ({verdict})"))
    with db.read() as session:
        problems, reconcile_s = timed(lambda: record_problems(session))
    rows.append(("row reconciliation (all records)", f"{reconcile_s:.1f} s",
                 f"{len(problems)} problems reported"))
    checkpoint, sign_s = timed(lambda: anchors.checkpoint(force=True))
    assert checkpoint is not None
    rows.append(("sign a checkpoint", f"{sign_s * 1000:.1f} ms", f"event {checkpoint.seq:,}"))
    for _ in range(args.after):  # the events of the minutes since the checkpoint, as the service writes them
        services.approvals.request_approval(services.changes.submit(standard_request()).key)
    with db.read() as session:
        quick, quick_s = timed(lambda: verify_chain(session, after=(checkpoint.seq, checkpoint.hash)))
    quick_verdict = "intact" if quick.ok else "BROKEN"
    rows.append(("audit verify --incremental", f"{quick_s * 1000:.0f} ms",
                 f"{quick.count - checkpoint.seq:,} events after the checkpoint ({quick_verdict})"))
    with db.read() as session:
        _, week_full_s = timed(lambda: compliance(session, services.org, END - timedelta(days=7), END))
        _, week_quick_s = timed(lambda: compliance(session, services.org, END - timedelta(days=7), END,
                                                   chain_anchor=(checkpoint.seq, checkpoint.hash)))
    rows.append(("compliance, one week, full chain", f"{week_full_s:.1f} s", ""))
    rows.append(("compliance, one week, from the checkpoint", f"{week_quick_s:.1f} s",
                 f"{week_full_s / week_quick_s:.0f}x faster"))
    print(f"{db.dialect}: {chain.count:,} events")
    for name, figure, note in rows:
        print(f"  {name:45s} {figure:>10s}   {note}")


if __name__ == "__main__":
    main()

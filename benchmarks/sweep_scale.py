"""The escalation sweep's read of waiting changes (issue 15), with N changes suspended at their approval gates:
the old read (every change awaiting approval, each with its policy evaluation) beside the new one (only the
changes whose next rung or SLA end has come, through the `escalation_due_at` index), measured side by side in
one run on the same database: with nothing due, and with 1 % due (each then handled and rescheduled).

    python benchmarks/sweep_scale.py --changes 10000 --database both

The seeded changes go through the real service path (submit, request approval: audit chain and all)."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy  # noqa: E402
from sqlalchemy import update  # noqa: E402

from models import (  # noqa: E402
    DEFAULTS_DIR,
    ChangeRequest,
    Database,
    Services,
    load_org,
    normalise_database_url,
    utcnow,
)


def timed(work) -> tuple[float, object]:
    started = time.perf_counter()
    result = work()
    return time.perf_counter() - started, result


def run(db: Database, changes: int) -> None:
    db.migrate()
    services = Services.build(db, load_org(DEFAULTS_DIR), b"sweep-benchmark")
    started = time.perf_counter()
    keys = []
    for i in range(changes):
        change = services.changes.submit({"type": "standard", "title": f"Waiting {i}", "service": "payments",
                                          "requester": "grace", "rollback_plan": "redeploy"})
        services.approvals.request_approval(change.key)
        keys.append(change.key)
    print(f"{db.dialect}: {changes:,} changes awaiting approval seeded in {time.perf_counter() - started:.0f} s")
    now = utcnow()
    old_s, waiting = timed(services.approvals.pending_approvals)
    new_s, due = timed(lambda: services.approvals.due_for_escalation(now))
    print(f"  nothing due:  every waiting change read and evaluated {old_s * 1000:,.0f} ms ({len(waiting):,} "
          f"changes); due changes read {new_s * 1000:,.1f} ms ({len(due)} changes)")
    # 1 % of them reach a rung: their schedule says so (as it would after 15 minutes of waiting).
    some = keys[:: 100]
    with db.write() as session:
        session.execute(update(ChangeRequest).where(ChangeRequest.key.in_(some))  # type: ignore[union-attr]
                        .values(escalation_due_at=now - timedelta(minutes=1)))
    new_s, due = timed(lambda: services.approvals.due_for_escalation(now))
    handle_s, _ = timed(lambda: [services.approvals.escalation_handled(c, now) for c in due])
    again_s, again = timed(lambda: services.approvals.due_for_escalation(now))
    print(f"  1 % due:      due changes read {new_s * 1000:,.1f} ms ({len(due)}), handled and rescheduled "
          f"{handle_s * 1000:,.0f} ms; next sweep reads {again_s * 1000:,.1f} ms ({len(again)} due)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=10_000)
    parser.add_argument("--database", choices=["sqlite", "postgres", "both"], default="sqlite")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    if args.database in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            run(Database(f"sqlite:///{tmp}/sweep.db"), args.changes)
    if args.database in ("postgres", "both"):
        schema = f"sweep_{uuid.uuid4().hex[:8]}"
        url = normalise_database_url(args.postgres)
        engine = sqlalchemy.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))
        try:
            run(Database(f"{url}?options=-csearch_path%3D{schema}"), args.changes)
        finally:
            with engine.begin() as conn:
                conn.execute(sqlalchemy.text(f"DROP SCHEMA {schema} CASCADE"))


if __name__ == "__main__":
    main()

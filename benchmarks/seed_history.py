"""Seed a realistic change history for the query benchmarks: N changes over 3 years across 200 services,
~10 hash-chained audit events each, approvals, mixed types and outcomes.

Rows are written in bulk through the DBAPI (executemany on SQLite, COPY on PostgreSQL); the audit chain is
computed exactly as the application computes it, so `changeflow audit verify` passes on the result.

    python benchmarks/seed_history.py --changes 1000000 --database sqlite --path /tmp/cf-1m.db
    python benchmarks/seed_history.py --changes 1000000 --database postgres --schema cf_bench_1m
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import Database  # noqa: E402
from models import GENESIS_HASH, canonical_json, event_hash  # noqa: E402

START = datetime(2023, 11, 27, tzinfo=timezone.utc)
SPAN = timedelta(days=3 * 365)
SERVICES = [f"svc-{i:03d}" for i in range(200)]
PEOPLE = ["alice", "bob", "carol", "dave", "erin", "frank"]
POLICY = "0" * 64
# Who approves each type under the shipped policies (policies.yaml, directory.yaml), so that replaying the policy
# over the seeded history reproduces it (`changeflow policy replay`, issue 34): the incident commander for an
# emergency, a team lead and a peer reviewer for a standard change, a CAB majority (3 of 4) for a major one.
APPROVERS = {"emergency": (("incident_commander", "erin"),),
             "standard": (("team_lead", "alice"), ("peer_reviewer", "carol")),
             "major": (("cab_member", "alice"), ("cab_member", "carol"), ("cab_member", "dave"))}
# The fields each type requires (policies.yaml `requires`), filed as a careful requester would.
EVIDENCE = "staging run 2026-11-02: 40/40 checks passed"

CHANGE_COLUMNS = ("id", "key", "type", "state", "title", "description", "service", "requester", "risk_level",
                  "risk_score", "risk_reasons", "risk_answers", "impact", "planned_start", "planned_end",
                  "implementation_plan", "rollback_plan", "test_evidence", "incident_id", "incident_severity",
                  "flow_run_id", "policy_version", "approval_round", "review_due_at", "idempotency_key", "created_at",
                  "updated_at", "implemented_at", "closed_at", "outcome", "template", "approval_requested_at",
                  "checklist", "ended_at", "approved_at", "version", "uat_signoff", "documentation_link",
                  "category")
EVENT_COLUMNS = ("seq", "change_key", "occurred_at", "actor", "action", "from_state", "to_state", "data",
                 "prev_hash", "hash")
APPROVAL_COLUMNS = ("id", "change_id", "round", "approver", "role", "decision", "comment", "decided_at")


def naive(at: datetime | None) -> str | None:
    """Naive UTC in the exact form SQLAlchemy stores on SQLite (always six fraction digits)."""
    return at.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f") if at else None


class Chain:
    def __init__(self):
        self.seq, self.prev = 0, GENESIS_HASH
        self.rows: list[tuple] = []

    def add(self, key, at, actor, action, from_state=None, to_state=None, data=None):
        self.seq += 1
        encoded = canonical_json(data or {})
        digest = event_hash(self.seq, key, at, actor, action, from_state, to_state, encoded, self.prev)
        self.rows.append((self.seq, key, naive(at), actor, action, from_state, to_state, encoded, self.prev, digest))
        self.prev = digest


def generate(n: int, first_id: int, chain: Chain, rng: random.Random, approval_id: list[int]):
    changes, approvals = [], []
    step = SPAN / max(n_total, 1)
    for change_id in range(first_id, first_id + n):
        key = f"CHG-{change_id:06d}"
        created = START + step * (change_id - 1) + timedelta(seconds=rng.randint(0, 3600))
        roll = rng.random()
        change_type = "emergency" if roll < 0.1 else ("major" if roll < 0.15 else "standard")
        service = SERVICES[rng.randrange(len(SERVICES))]
        requester = rng.choice(["grace", "henry", "ivan", "judy"])
        fate = rng.random()
        at = created
        chain.add(key, at, requester, "submitted", None, "submitted", {"type": change_type, "service": service})
        at += timedelta(seconds=5)
        roles = [role for role, _ in APPROVERS[change_type]]
        required = [{"role": role, "count": roles.count(role)} for role in dict.fromkeys(roles)]
        chain.add(key, at, "changeflow", "policy_decision", data={"required": required, "policy_version": POLICY})
        chain.add(key, at, "changeflow", "transition", "submitted", "awaiting_approval", {"reason": "approvals"})
        requested = at
        state, implemented, ended, closed, outcome, approved = "awaiting_approval", None, None, None, None, None
        if fate < 0.02:
            state, closed = "rejected", at + timedelta(hours=5)
            approval_id[0] += 1  # the decision's row, as the service writes it beside the event
            role, person = APPROVERS[change_type][-1]
            approvals.append((approval_id[0], change_id, 1, person, role, "reject", "risky", naive(closed)))
            chain.add(key, closed, person, "rejection", data={"role": role, "comment": "risky", "round": 1})
            chain.add(key, closed, person, "transition", "awaiting_approval", "rejected", {"reason": "rejected"})
        elif fate < 0.03:
            state, closed = "expired", at + timedelta(hours=48)
            chain.add(key, closed, "approval-escalation", "transition", "awaiting_approval", "expired",
                      {"reason": "sla"})
        else:
            for role, person in APPROVERS[change_type]:
                at += timedelta(minutes=rng.randint(5, 600))
                approval_id[0] += 1
                approvals.append((approval_id[0], change_id, 1, person, role, "approve", "", naive(at)))
                chain.add(key, at, person, "approval", data={"role": role, "comment": "", "round": 1})
            chain.add(key, at, "policy-engine", "transition", "awaiting_approval", "approved", {"reason": "ok"})
            approved = at
            at += timedelta(hours=rng.randint(1, 48))
            implemented = at
            chain.add(key, at, "changeflow", "transition", "approved", "implementing", {"reason": "window"})
            at += timedelta(minutes=rng.randint(5, 90))
            outcome = "succeeded" if fate < 0.88 else ("failed" if fate < 0.94 else "rolled_back")
            target = {"succeeded": "completed", "failed": "failed", "rolled_back": "rolled_back"}[outcome]
            chain.add(key, at, "changeflow", "transition", "implementing", target, {"reason": "done"})
            ended = at
            closed = at + timedelta(minutes=1)
            state = "closed"
            chain.add(key, closed, "changeflow", "transition", target, "closed", {"reason": "closed"})
        emergency, major = change_type == "emergency", change_type == "major"
        changes.append((change_id, key, change_type, state, f"Change {change_id} to {service}", "", service, requester,
                        "low", 1, "[]", "{}", "", None, None, "", "undo", "" if emergency else EVIDENCE,
                        f"INC-{change_id}" if emergency else None, rng.choice(["P1", "P2"]) if emergency else None,
                        None, POLICY, 1, None, None,
                        naive(created), naive(closed or at), naive(implemented), naive(closed), outcome, None,
                        naive(requested), None, naive(ended), naive(approved), 5,
                        "UAT: signed off by the product owner, ticket UAT-1" if major else None,
                        f"https://wiki.example/changes/{key}" if major else None, None))
    return changes, approvals


def insert_sqlite(db: Database, changes, approvals, events):
    raw = db.write_engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        for table, columns, rows in (("change_requests", CHANGE_COLUMNS, changes),
                                     ("approvals", APPROVAL_COLUMNS, approvals),
                                     ("audit_events", EVENT_COLUMNS, events)):
            marks = ", ".join("?" * len(columns))
            cursor.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)
        cursor.execute("COMMIT")
    finally:
        raw.close()


def insert_postgres(db: Database, changes, approvals, events):
    raw = db.write_engine.raw_connection()
    try:
        cursor = raw.cursor()
        for table, columns, rows in (("change_requests", CHANGE_COLUMNS, changes),
                                     ("approvals", APPROVAL_COLUMNS, approvals),
                                     ("audit_events", EVENT_COLUMNS, events)):
            with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        raw.commit()
    finally:
        raw.close()


def seed(db: Database, changes: int, progress=None) -> int:
    """Write `changes` changes with their approvals and audit events into the migrated, empty database `db` (on
    PostgreSQL as a role that may write the trail's head), in batches; the number of audit events written."""
    global n_total
    n_total = changes
    insert = insert_postgres if db.dialect == "postgresql" else insert_sqlite
    rng = random.Random(42)
    chain = Chain()
    approval_id = [0]
    batch = 20_000
    for first in range(1, changes + 1, batch):
        rows, approvals = generate(min(batch, changes - first + 1), first, chain, rng, approval_id)
        insert(db, rows, approvals, chain.rows)
        chain.rows = []
        done = first + len(rows) - 1
        if progress is not None and (done % 100_000 == 0 or done == changes):
            progress(done, chain.seq)
    with db.write_engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE audit_head SET seq = {chain.seq}, hash = '{chain.prev}' WHERE id = 1")
        if db.dialect == "postgresql":
            # COPY wrote explicit ids: move the sequences past them, so the service can file more changes.
            for table in ("change_requests", "approvals"):
                conn.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                     f"(SELECT MAX(id) FROM {table}))")
        conn.exec_driver_sql("ANALYZE")
    return chain.seq


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=1_000_000)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--path", default="/tmp/changeflow-history.db")
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--schema", default="cf_history")
    args = parser.parse_args()
    if args.database == "sqlite":
        Path(args.path).unlink(missing_ok=True)
        db = Database(f"sqlite:///{args.path}")
    else:
        import sqlalchemy

        admin = sqlalchemy.create_engine(args.postgres_url.replace("postgresql://", "postgresql+psycopg://"),
                                         isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{args.schema}" CASCADE')
            conn.exec_driver_sql(f'CREATE SCHEMA "{args.schema}"')
        db = Database(f"{args.postgres_url}?options=-csearch_path%3D{args.schema}")
    db.migrate()
    started = time.perf_counter()
    events = seed(db, args.changes, progress=lambda done, seq: print(
        f"  {done:,} changes, {seq:,} events, {time.perf_counter() - started:.0f} s", flush=True))
    print(f"{db.dialect}: seeded {args.changes:,} changes and {events:,} events in "
          f"{time.perf_counter() - started:.0f} s -> {db.url}")


n_total = 0

if __name__ == "__main__":
    main()

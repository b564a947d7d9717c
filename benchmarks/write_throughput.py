"""Write N change requests with their audit events and print changes/s and events/s per database.

Each change goes through the real service path: submit (1 transaction, 1 event) and request_approval
(1 transaction, 2 events), so every write takes the audit-chain lock and appends hash-linked events.

    python benchmarks/write_throughput.py --count 100000 --database both
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy  # noqa: E402

from models import DEFAULTS_DIR, Services, Database, load_org, verify_chain  # noqa: E402
from models import normalise_database_url  # noqa: E402
from tests.helpers import ROUTINE_RISK  # noqa: E402

SERVICES = [f"svc-{i:03d}" for i in range(200)]


def run(db: Database, count: int) -> None:
    services = Services.build(db, load_org(DEFAULTS_DIR), b"benchmark-secret")
    db.migrate()
    started = time.perf_counter()
    for i in range(count):
        change = services.changes.submit({
            "type": "standard",
            "test_evidence": "staging run green",
            "title": f"Change {i}",
            "service": SERVICES[i % len(SERVICES)],
            "requester": "grace",
            "rollback_plan": "redeploy previous version",
            "risk": ROUTINE_RISK,
        })
        services.approvals.request_approval(change.key)
        if (i + 1) % 10_000 == 0:
            rate = (i + 1) / (time.perf_counter() - started)
            print(f"  {db.dialect}: {i + 1:>7} changes, {rate:,.0f} changes/s", flush=True)
    elapsed = time.perf_counter() - started
    with db.read() as session:
        verify_started = time.perf_counter()
        result = verify_chain(session)
        verify_elapsed = time.perf_counter() - verify_started
    assert result.ok, result
    print(f"{db.dialect}: {count:,} changes and {result.count:,} events written in {elapsed:.1f} s = "
          f"{count / elapsed:,.0f} changes/s ({2 * count / elapsed:,.0f} transactions/s, "
          f"{result.count / elapsed:,.0f} events/s); audit verify {result.count / verify_elapsed:,.0f} events/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--database", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--postgres-url", default=os.environ.get(
        "CHANGEFLOW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    args = parser.parse_args()

    if args.database in ("sqlite", "both"):
        tmp = tempfile.mkdtemp()
        db = Database(f"sqlite:///{tmp}/bench.db")
        try:
            run(db, args.count)
        finally:
            db.dispose()
            shutil.rmtree(tmp, ignore_errors=True)
    if args.database in ("postgres", "both"):
        url = normalise_database_url(args.postgres_url)
        schema = f"cf_bench_{uuid.uuid4().hex[:8]}"
        admin = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        db = Database(f"{url}?options=-csearch_path%3D{schema}")
        try:
            run(db, args.count)
        finally:
            db.dispose()
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
            admin.dispose()


if __name__ == "__main__":
    main()

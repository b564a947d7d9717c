"""Run each query and report shape 20 times against a seeded history and print p50 / p95.

    python benchmarks/query_benchmark.py --url sqlite:////tmp/cf-1m.db
    python benchmarks/query_benchmark.py --url "postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path%3Dcf_history_1m"

Goals: filtered log page (service + time range, 50 rows) p95 < 50 ms; show < 20 ms; dora over one year for
all services < 2 s; audit verify >= 100,000 events/s.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import DEFAULTS_DIR, ChangeFilter, Services, Database, load_org, verify_chain  # noqa: E402
from models import compliance, dora, sla  # noqa: E402

RUNS = 20


def timed(fn, runs=RUNS) -> tuple[float, float]:
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return statistics.median(samples), samples[max(int(round(0.95 * len(samples))) - 1, 0)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    args = parser.parse_args()
    db = Database(args.url)
    services = Services.build(db, load_org(DEFAULTS_DIR), b"bench")
    rng = random.Random(7)
    with db.read() as session:
        total = session.execute(__import__("sqlalchemy").text("SELECT COUNT(*) FROM change_requests")).scalar()
    end = datetime(2026, 11, 27, tzinfo=timezone.utc)

    def log_page():
        svc = f"svc-{rng.randrange(200):03d}"
        start = end - timedelta(days=rng.randint(30, 1000))
        services.changes.query(ChangeFilter(service=svc, created_since=start, created_until=start + timedelta(days=90)),
                      limit=50)

    def log_unfiltered_page():
        services.changes.query(ChangeFilter(), limit=50)

    def show():
        services.changes.view(f"CHG-{rng.randint(1, total):06d}")

    results = {
        "log page (service + 90-day range, 50 rows)": timed(log_page),
        "log page (no filter, 50 rows)": timed(log_unfiltered_page),
        "show KEY": timed(show),
    }
    with db.read() as session:
        results["dora, one year, all services"] = timed(lambda: dora(session, end - timedelta(days=365), end), runs=5)
        results["sla, one month"] = timed(lambda: sla(session, services.org, end - timedelta(days=30), end), runs=5)
        results["compliance, one week"] = timed(
            lambda: compliance(session, services.org, end - timedelta(days=7), end), runs=3)
        started = time.perf_counter()
        chain = verify_chain(session)
        verify_s = time.perf_counter() - started
    print(f"{db.dialect}: {total:,} changes")
    for name, (p50, p95) in results.items():
        print(f"  {name:45s} p50 {p50:9.1f} ms   p95 {p95:9.1f} ms")
    print(f"  audit verify: {chain.count:,} events in {verify_s:.1f} s = {chain.count / verify_s:,.0f} events/s "
          f"({'intact' if chain.ok else 'BROKEN'})")


if __name__ == "__main__":
    main()

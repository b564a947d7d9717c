"""How long the change success score takes on a seeded history (issue 33: the score report and DORA over one year for
all services under 0.5 s p95): `report score` (30 and 90 days, every service, team and all), `report score-trend`
over a year, and DORA over a year, 10 runs each, p50 and p95 printed.

    python benchmarks/seed_history.py --changes 1000000 --path /tmp/cf-1m.db
    python benchmarks/score_report.py --url sqlite:////tmp/cf-1m.db
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import func, select  # noqa: E402

from models import DEFAULTS_DIR, ChangeRequest, Database, Services, load_org  # noqa: E402

RUNS = 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="SQLAlchemy URL of a seeded history")
    args = parser.parse_args()
    db = Database(args.url)
    services = Services.build(db, load_org(DEFAULTS_DIR), b"score-benchmark")
    with db.read() as session:
        until = session.execute(select(func.max(ChangeRequest.ended_at))).scalar_one()
    since = until - timedelta(days=365)
    print(f"{db.dialect}: one year to {until:%Y-%m-%d}")
    for name in ("score", "score-trend", "dora"):
        samples, rows = [], 0
        for _ in range(RUNS):
            started = time.perf_counter()
            rows = len(services.reports.run(name, since, until).rows)
            samples.append((time.perf_counter() - started) * 1000)
        samples.sort()
        print(f"  report {name:12s} {rows:4d} rows  p50 {samples[len(samples) // 2]:7.0f} ms   "
              f"p95 {samples[min(len(samples) - 1, int(len(samples) * 0.95))]:7.0f} ms")
    db.dispose()


if __name__ == "__main__":
    main()

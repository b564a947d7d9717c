"""How long `changeflow policy what-if` takes (issue 34: 90 days of the 1M-change history in under 10 s): the changes
filed in the last 90 days of a seeded history (benchmarks/seed_history.py) judged under a proposed policy (the
standard type's notice raised to a week, a CAB member added) beside the shipped one, three runs, each figure printed.

    python benchmarks/seed_history.py --changes 1000000 --path /tmp/cf-1m.db
    python benchmarks/what_if.py --url sqlite:////tmp/cf-1m.db
    python benchmarks/seed_history.py --changes 1000000 --database postgres --schema cf_history
    python benchmarks/what_if.py --url 'postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path%3Dcf_history'

Then the shipped policy replayed over the same changes: 0 differences is the proof that the what-if applies the
rules submission applied.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="SQLAlchemy URL of a seeded history")
    parser.add_argument("--days", type=int, default=90)
    args = parser.parse_args()
    org = load_org(DEFAULTS_DIR)
    db = Database(args.url)
    services = Services.build(db, org, b"what-if-benchmark")
    data = org.policies.model_dump(by_alias=True, exclude={"version"})
    data["types"]["standard"]["notice"] = timedelta(days=7)
    data["types"]["standard"]["approvals"].append({"role": "cab_member", "count": 1})
    proposed = org.policies.model_validate(data)
    with db.read() as session:
        until = session.execute(select(func.max(ChangeRequest.created_at))).scalar_one()
    since = until - timedelta(days=args.days)
    for run in range(3):
        started = time.perf_counter()
        report = services.what_if.compare(proposed, org.directory, since, until + timedelta(seconds=1))
        seconds = time.perf_counter() - started
        print(f"run {run + 1}: {report.changes:,} changes of {args.days} days judged twice in {seconds:.2f} s; "
              f"{len(report.rows):,} would differ ({report.refused:,} refused, {report.approvals_changed:,} other "
              f"approvals, {report.approvers_short:,} approvers short)")
    started = time.perf_counter()
    replay = services.what_if.replay(since, until + timedelta(seconds=1))
    print(f"replay of the shipped policy over the same {replay.changes:,} changes: {len(replay.differences):,} "
          f"differences from the record in {time.perf_counter() - started:.2f} s")
    db.dispose()


if __name__ == "__main__":
    main()

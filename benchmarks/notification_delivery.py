"""Notifications delivered per second to a local webhook receiver (signed JSON over HTTP), 100 queued.

    python benchmarks/notification_delivery.py --count 100
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import Services, Database, Settings  # noqa: E402
from notifications import Notifier  # noqa: E402
from tests.receivers import start_http_receiver  # noqa: E402
from tests.integration.test_notifications import org_with_channels  # noqa: E402
from tests.helpers import ROUTINE_RISK  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100)
    args = parser.parse_args()
    receiver = start_http_receiver()
    home = Path(tempfile.mkdtemp())
    org = org_with_channels({"alice": [{"type": "webhook", "url": f"{receiver.url}/hook"}]})
    settings = Settings(home=home, secret="bench")
    services = Services.build(Database(f"sqlite:///{home / 'cf.db'}"), org, b"bench")
    notifier = Notifier(services, settings)
    changes = [services.changes.submit({"type": "standard", "title": f"bench {i}", "service": "payments",
                                        "test_evidence": "staging run green",
                                        "requester": "grace", "rollback_plan": "undo", "risk": ROUTINE_RISK})
               for i in range(args.count)]
    queued_started = time.perf_counter()
    for change in changes:
        notifier.announce(change, "approved", ["alice"])
    queued = time.perf_counter() - queued_started
    started = time.perf_counter()
    report = notifier.outbox.deliver_due(limit=args.count)
    elapsed = time.perf_counter() - started
    receiver.stop()
    assert report.sent == args.count == len(receiver.delivered()), report
    print(f"queued {args.count} notifications in {queued:.2f} s ({args.count / queued:,.0f}/s); "
          f"delivered {report.sent} to the local webhook receiver in {elapsed:.2f} s = "
          f"{report.sent / elapsed:,.0f} notifications/s")


if __name__ == "__main__":
    main()

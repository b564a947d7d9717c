"""What hash scheme 2 (length-prefixed fields, issue 28) costs against scheme 1 (fields joined by \\x1f), side by
side in one run: the hash of one event, and `verify_rows` over a chain of synthetic events as `audit verify`
reads them (canonical times, the driver's tuples).

    python benchmarks/hash_scheme.py [--events 200000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import GENESIS_HASH, canonical_json, event_hash, verify_rows  # noqa: E402


def chain(events: int, scheme: int) -> list[tuple]:
    rows, prev = [], GENESIS_HASH
    for seq in range(1, events + 1):
        key = f"CHG-{seq // 10 + 1:06d}"
        at = f"2026-12-06T10:{seq // 60 % 60:02d}:{seq % 60:02d}.{seq % 1_000_000:06d}Z"
        data = canonical_json({"reason": "approvals complete: alice, bob", "round": 1})
        digest = event_hash(seq, key, at, "alice", "transition", "awaiting_approval", "approved", data, prev,
                            scheme=scheme)
        rows.append((seq, key, at, "alice", "transition", "awaiting_approval", "approved", data, prev, digest))
        prev = digest
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    print(f"{'scheme':<8} {'hash one event (us)':>20} {'verify_rows (s)':>16} {'events/s':>12}")
    for scheme in (1, 2):
        rows = chain(args.events, scheme)
        sample = rows[1000][:9]
        started = time.perf_counter()
        for _ in range(100_000):
            event_hash(*sample, scheme=scheme)
        per_hash_us = (time.perf_counter() - started) / 100_000 * 1e6
        started = time.perf_counter()
        result = verify_rows(iter(rows), (args.events, rows[-1][-1]))
        took = time.perf_counter() - started
        assert result.ok, result
        assert result.legacy_events == (args.events if scheme == 1 else 0)
        print(f"{scheme:<8} {per_hash_us:>20.2f} {took:>16.2f} {args.events / took:>12,.0f}")


if __name__ == "__main__":
    main()

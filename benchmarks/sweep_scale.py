"""The escalation sweep with N changes suspended at their approval gates (issue 15).

Part 1, the database (`--database sqlite|postgres|both`): the old read of waiting changes (every change awaiting
approval, each with its policy evaluation) beside the new one (only the changes whose next rung or SLA end has
come, through the `escalation_due_at` index), side by side on the same database: with nothing due, and with 1 %
due (each then handled and rescheduled).

Part 2, the whole stack (`--stack`): `changeflow up` (embedded server, one worker); N changes filed through the
service, each with a flow run created through Prefect's API and suspended at its approval gate (as a gate
leaves it: Paused, key approval-1); then one run of the approval-escalation deployment: its duration, and the
resident memory of the Prefect server and the worker.

    python benchmarks/sweep_scale.py --changes 10000 --database both --stack

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
    Settings,
    load_org,
    normalise_database_url,
    utcnow,
)
from tests.helpers import ROUTINE_RISK  # noqa: E402


def timed(work) -> tuple[float, object]:
    started = time.perf_counter()
    result = work()
    return time.perf_counter() - started, result


def seed_waiting(services: Services, changes: int) -> list[str]:
    """`changes` standard changes awaiting approval, through the service; their keys."""
    keys = []
    for i in range(changes):
        change = services.changes.submit({"type": "standard", "title": f"Waiting {i}", "service": "payments",
                                          "test_evidence": "staging run green",
                                          "requester": "grace", "rollback_plan": "redeploy", "risk": ROUTINE_RISK})
        services.approvals.request_approval(change.key)
        keys.append(change.key)
    return keys


def run(db: Database, changes: int) -> None:
    db.migrate()
    services = Services.build(db, load_org(DEFAULTS_DIR), b"sweep-benchmark")
    seeded_s, keys = timed(lambda: seed_waiting(services, changes))
    print(f"{db.dialect}: {changes:,} changes awaiting approval seeded in {seeded_s:.0f} s")
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


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_stack(changes: int) -> None:
    import httpx

    from cli.dev import UpProcess, free_port, up_environment

    root = Path(tempfile.mkdtemp(prefix="changeflow-sweep-"))
    home = root / "home"
    env = up_environment(home)
    up = UpProcess.start(home, ["--port", str(free_port()), "--endpoint-port", str(free_port())], env)
    try:
        api = up.stack["api_url"]
        settings = Settings(home=home, secret=None)
        services = Services.build(Database.from_settings(settings), load_org(settings.config_dir),
                                  settings.secret_bytes())
        deployment = httpx.get(f"{api}/deployments/name/change-request/submit", timeout=30).json()
        seeded_s, keys = timed(lambda: seed_waiting(services, changes))
        print(f"stack: {changes:,} changes filed in {seeded_s:.0f} s; creating their runs", flush=True)

        def create_run(key: str) -> None:
            # A timed-out create may have created the run: the idempotency key makes the retry return that one.
            for _attempt in range(10):
                try:
                    created = httpx.post(f"{api}/deployments/{deployment['id']}/create_flow_run", timeout=120, json={
                        "idempotency_key": f"sweep-benchmark-{key}",
                        "parameters": {"request": {"type": "standard", "title": key, "service": "payments",
                                                   "test_evidence": "staging run green",
                                                   "requester": "grace", "rollback_plan": "redeploy",
                                                   "risk": ROUTINE_RISK}},
                        "state": {"type": "PAUSED", "name": "Suspended", "message": "waiting at its approval gate",
                                  "state_details": {"pause_key": "approval-1", "pause_reschedule": True}}})
                except httpx.TransportError:
                    continue
                if created.status_code in (200, 201):
                    services.changes.attach_flow_run(key, created.json()["id"])
                    return
                time.sleep(1)
            raise RuntimeError(f"no run for {key} after 10 attempts")

        from concurrent.futures import ThreadPoolExecutor

        started = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(create_run, keys))
        runs_s = time.perf_counter() - started
        print(f"  their suspended runs created through the API in {runs_s:.0f} s", flush=True)
        processes = up.stack["processes"]
        before = {role: rss_mb(processes[role]) for role in ("server", "worker")}
        sweep = httpx.get(f"{api}/deployments/name/approval-escalation/every-minute", timeout=30).json()
        run = httpx.post(f"{api}/deployments/{sweep['id']}/create_flow_run", json={}, timeout=60).json()
        deadline = time.monotonic() + 900
        while True:
            state = httpx.get(f"{api}/flow_runs/{run['id']}", timeout=30).json()
            if state["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                break
            if time.monotonic() > deadline:
                raise TimeoutError("the sweep did not finish in 15 minutes")
            time.sleep(0.5)
        after = {role: rss_mb(processes[role]) for role in ("server", "worker")}
        print(f"  one sweep run: {state['state_type']}, {state['total_run_time']:.1f} s of run time (the worker "
              f"held one slot for it); resident memory: Prefect server {before['server']:.0f} -> "
              f"{after['server']:.0f} MB, worker {before['worker']:.0f} -> {after['worker']:.0f} MB")
    finally:
        up.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=10_000)
    parser.add_argument("--database", choices=["sqlite", "postgres", "both", "none"], default="sqlite",
                        help="part 1 on which database (none: only part 2)")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--stack", action="store_true", help="also part 2: the sweep run on `changeflow up`")
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
    if args.stack:
        run_stack(args.changes)


if __name__ == "__main__":
    main()

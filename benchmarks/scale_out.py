"""What the distributed layout buys (issue 15): the same load on `changeflow up` (embedded Prefect server on
SQLite, one worker, change records on SQLite) and on `changeflow up --distributed` (2 API replicas behind nginx,
the services apart, PostgreSQL for Prefect and for the records, Redis, 4 workers), one after the other in one
run. The load: N standard changes submitted in parallel through the API (any replica), approved by two scripted
approvers clicking Slack buttons at the approval endpoint, each implemented by one step that sleeps 2 s.

    python benchmarks/scale_out.py --changes 200 --postgres postgresql://postgres@127.0.0.1:5432/test

Printed: time until every change has ended, the ratio, the 5xx the clients saw, changes closed, steps run,
whether the audit trail verifies, what a closed change costs the workers: flow-run engines started (each resume of
a suspended gate starts one; a hot gate's answer does not) and their CPU-seconds (sampled from /proc every 0.1 s),
and the memory of the embedded worker with every slot holding a hot gate. Linux only."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg  # noqa: E402

from cli.dev import (  # noqa: E402
    ReplicaClient,
    free_port,
    Tally,
    UpProcess,
    drive_to_the_end,
    open_release_window,
    steps_run,
    submit_changes,
    up_environment,
    write_scale_config,
)
from models import Database, Services, Settings, load_org, record_problems, verify_chain  # noqa: E402


@dataclass
class Outcome:
    layout: str
    seconds: float
    closed: int
    changes: int
    steps: int
    unique_steps: int
    server_errors: int
    unretried: int
    failovers: int
    audit_ok: bool
    flow_run_processes: int
    flow_run_cpu_s: float
    hot_memory_mb: float | None  # the worker with its 8 slots holding hot gates (embedded: one worker)


TICKS_PER_S = os.sysconf("SC_CLK_TCK")


class FlowRunProcesses:
    """Counts the flow-run engines the workers start and adds up their CPU: a cold engine is a worker's child
    running `prefect.engine`; a warm one is forked by the worker's launcher and named `engine-<client pid>`, its
    client a worker's child (flows/_launcher.py). Sampled every 0.1 s (an engine lives seconds); each engine's
    CPU is its last sample, so the total is a lower bound by at most 0.1 s a process."""

    def __init__(self, worker_pids: list[int]) -> None:
        self.worker_pids = set(worker_pids)
        self.cpu_ticks: dict[tuple[int, str], int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def running(self) -> dict[tuple[int, str], int]:
        stats: dict[int, list[str]] = {}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                stats[int(pid)] = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
        engines = {}
        for pid, fields in stats.items():
            try:
                name = Path(f"/proc/{pid}/comm").read_text().strip()
                client = name.removeprefix("engine-")
                warm = client != name and client.isdigit() and int(stats.get(int(client), ["", "0"])[1]) in \
                    self.worker_pids
                cold = int(fields[1]) in self.worker_pids and b"prefect.engine" in Path(
                    f"/proc/{pid}/cmdline").read_bytes()
            except (OSError, IndexError, ValueError):
                continue
            if warm or cold:
                engines[(pid, fields[19])] = int(fields[11]) + int(fields[12])  # start time: pids are reused
        return engines

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            self.cpu_ticks.update(self.running())

    def stop(self, timeout_s: float = 120) -> tuple[int, float]:
        """(engines started, their CPU-seconds) since the start, once the last engine has exited (an engine
        outlives its run's final state by a moment)."""
        deadline = time.monotonic() + timeout_s
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.1)
        self._stop.set()
        self._thread.join()
        return len(self.cpu_ticks), sum(self.cpu_ticks.values()) / TICKS_PER_S


def run_layout(name: str, root: Path, changes: int, up_args: list[str], database_url: str | None) -> Outcome:
    home = root / name
    write_scale_config(home, changes)
    extra = {"CHANGEFLOW_DATABASE_URL": database_url} if database_url else {}
    env = up_environment(home, **extra)
    endpoint_port = free_port()
    up = UpProcess.start(home, [*up_args, "--port", str(free_port()), "--endpoint-port", str(endpoint_port)], env)
    try:
        settings = Settings(home=home, database_url=database_url, secret=None)
        services = Services.build(Database.from_settings(settings), load_org(settings.config_dir),
                                  settings.secret_bytes())
        open_release_window(services)
        stack = up.stack
        tally = Tally()
        engines = FlowRunProcesses([pid for role, pid in stack["processes"].items() if role.startswith("worker")])
        client = ReplicaClient(stack["api_replicas"] or [stack["api_url"]], tally)
        started = time.monotonic()
        run_ids = submit_changes(client, changes, parallel=16)
        ended = drive_to_the_end(services, run_ids, f"http://127.0.0.1:{endpoint_port}", tally,
                                 timeout_s=changes * 30 + 600, parallel=16, cli_env=env)
        seconds = time.monotonic() - started
        processes, cpu_s = engines.stop()
        hot_memory_mb = None
        if "worker" in stack["processes"]:
            from approval_paths import memory_with_every_slot_hot

            hot_memory_mb, _ = memory_with_every_slot_hot(services, stack["api_url"], stack["processes"]["worker"])
        with services.db.read() as session:
            audit_ok = verify_chain(session).ok and record_problems(session) == []
        ran = steps_run(home)
        return Outcome(name, seconds, sum(c.state == "closed" for c in ended.values()), changes, len(ran),
                       len(set(ran)), tally.server_errors, len(tally.unretried), tally.failovers, audit_ok,
                       processes, cpu_s, hot_memory_mb)
    finally:
        up.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=200)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--api-replicas", type=int, default=2)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test",
                        help="a PostgreSQL database to connect to; two databases are created beside it and dropped")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--only", choices=("embedded", "distributed"))
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="changeflow-scale-"))
    outcomes = []
    if args.only != "distributed":
        outcomes.append(run_layout("embedded", root, args.changes, [], None))
    if args.only != "embedded":
        suffix = uuid.uuid4().hex[:8]
        names = [f"cf_bench_prefect_{suffix}", f"cf_bench_records_{suffix}"]
        base = args.postgres.rsplit("/", 1)[0]
        with psycopg.connect(args.postgres, autocommit=True) as conn:
            for name in names:
                conn.execute(f"CREATE DATABASE {name}")
        try:
            outcomes.append(run_layout("distributed", root, args.changes, [
                "--distributed", "--api-replicas", str(args.api_replicas), "--workers", str(args.workers),
                "--prefect-database-url", f"{base}/{names[0]}", "--redis-url", args.redis], f"{base}/{names[1]}"))
        finally:
            with psycopg.connect(args.postgres, autocommit=True) as conn:
                for name in names:
                    conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    print(f"\n{args.changes} standard changes, approved at the endpoint, one 2 s step each "
          f"(embedded: 1 worker, SQLite; distributed: {args.workers} workers, {args.api_replicas} API replicas, "
          "Redis, PostgreSQL)")
    print(f"{'layout':<12} {'all ended':>10} {'closed':>9} {'steps run':>10} {'5xx seen':>9} {'unretried':>10} "
          f"{'failovers':>10} {'audit':>6}")
    for o in outcomes:
        print(f"{o.layout:<12} {o.seconds:>9.0f}s {o.closed:>4}/{o.changes:<4} {o.steps:>5} ({o.unique_steps})"
              f" {o.server_errors:>9} {o.unretried:>10} {o.failovers:>10} {'ok' if o.audit_ok else 'FAIL':>6}")
    print(f"\n{'layout':<12} {'flow-run processes':>19} {'per closed change':>18} {'their CPU-s':>12} "
          f"{'per closed change':>18}")
    for o in outcomes:
        closed = max(o.closed, 1)
        print(f"{o.layout:<12} {o.flow_run_processes:>19} {o.flow_run_processes / closed:>18.2f} "
              f"{o.flow_run_cpu_s:>12.0f} {o.flow_run_cpu_s / closed:>18.2f}")
    for o in outcomes:
        if o.hot_memory_mb is not None:
            print(f"{o.layout}: the worker with its 8 slots holding hot gates: {o.hot_memory_mb:.0f} MB PSS "
                  f"({o.hot_memory_mb / 8:.0f} MB a gate, the worker and its launcher included)")
    if len(outcomes) == 2:
        print(f"ratio embedded / distributed: {outcomes[0].seconds / outcomes[1].seconds:.2f}")


if __name__ == "__main__":
    main()

"""How fast changeflow notices a killed run and puts a canary back on stable, after `kill -9` of the flow-run
process (and everything it started), min / median / max over N runs each.

- detection: from the kill until Prefect marks the run Crashed (the runner sees its child die).
- restart: from Crashed until the sweep has recorded the crash and restarted the run (the sweep is called as soon
  as the crash is seen and again until it acts: it waits CHANGEFLOW_CRASH_SETTLE_S, 5 s, for Prefect's second
  report of the kill; in production it runs every minute, so add up to 60 s).
- canary back to stable: from the kill, in the 50 % bake, until the router has been sent weight 0.
- a silent machine: the worker and its runs killed as one mid-step (nothing is left to tell Prefect), until the
  zombie automation marks the run Crashed: changeflow's own heartbeat (5 s) missing for the window (20 s), with
  the production defaults (issue 28: at most 30 s).

    python benchmarks/crash_recovery.py --runs 10 [--silent-only]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _flow_bench import start_bench_stack  # noqa: E402
from cli.dev import Lab  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--silent-only", action="store_true", help="measure only the silent machine")
    args = parser.parse_args()
    root, stack = start_bench_stack("crash-bench-")
    from tests.flows.test_crash_recovery import run_state_name, steps_run
    from tests.flows.test_flows import act, awaiting, submit
    from tests.helpers import standard_request, wait_until
    from tests.processes import kill_run

    from flows.sweep import reconcile_crashed_runs

    lab = Lab(root / "lab").start(nginx=False)
    weights = root / "weights.log"
    import yaml

    # The restarted run rolls the change back rather than resuming (resume_after_crash: false): what is measured
    # is the time to stable, and a resumed canary writing its weights would overlap the next run's.
    (stack.home / "config" / "canary.yaml").write_text(yaml.safe_dump({**lab.canary_config(
        {"kind": "command", "command": ["sh", "-c", f"echo {{weight}} >> {weights}"]}), "resume_after_crash": False}))
    detection, restart, to_stable, silent = [], [], [], []
    try:
        for n in range(args.runs):
            silent.append(silent_machine(stack, root, n))
            print(f"run {n + 1}: a silent machine's run marked Crashed after {silent[-1]:.1f} s", flush=True)
        for n in range(0 if args.silent_only else args.runs):
            service = f"bench-{n}"
            run_id = submit(standard_request(title=f"bench crash {n}", service=service, template="slow-step",
                                             implementation_plan="", rollback_plan=""))
            wait_until(lambda: steps_run(stack, service), 90, "the step")
            killed = time.monotonic()
            kill_run(run_id)
            wait_until(lambda: run_state_name(run_id) == "CRASHED", 180, "Crashed")
            crashed = time.monotonic()
            # The sweep takes a crash up once its state is CHANGEFLOW_CRASH_SETTLE_S old (Prefect reports a killed
            # run twice): called until it has restarted the run, as its every-minute schedule would be.
            wait_until(lambda: reconcile_crashed_runs()["restarted"] >= 1, 60, "the sweep to restart the run")
            restart.append(time.monotonic() - crashed)
            detection.append(crashed - killed)

            weights.write_text("")
            canary_run = submit({"type": "standard", "title": f"bench canary {n}", "service": "shop",
                                 "requester": "grace", "template": "canary-release",
                                 "canary": {"stable_version": "v1", "canary_version": "v2", "interval_s": 0.5,
                                            "probe_requests": 10, "steps": [{"weight": 10, "bake_s": 2},
                                                                            {"weight": 50, "bake_s": 30},
                                                                            {"weight": 100, "bake_s": 2}],
                                            "metrics": [{"name": "error_rate", "query": "error_rate",
                                                         "threshold": 0.05}]}})
            change = awaiting(stack, canary_run)
            for person in ("alice", "bob"):
                act(stack, change, person)
            wait_until(lambda: weights.read_text().split()[-1:] == ["50"], 120, "the 50 % step")
            killed = time.monotonic()
            kill_run(canary_run)
            wait_until(lambda: run_state_name(canary_run) == "CRASHED", 180, "Crashed")
            wait_until(lambda: reconcile_crashed_runs()["canaries_aborted"] >= 1
                       or weights.read_text().split()[-1:] == ["0"], 60, "the sweep to send the canary to stable")
            wait_until(lambda: weights.read_text().split()[-1:] == ["0"], 60, "weight 0")
            to_stable.append(time.monotonic() - killed)
            print(f"run {n + 1}: detection {detection[-1]:.1f} s, restart {restart[-1]:.2f} s, "
                  f"canary back to stable {to_stable[-1]:.1f} s", flush=True)
    finally:
        lab.stop()
        stack.stack.stop()
        stack.health.stop()

    def row(name: str, values: list[float]) -> str:
        return f"| {name} | {min(values):.1f} | {statistics.median(values):.1f} | {max(values):.1f} |"

    print(f"\n| after kill -9 ({args.runs} runs) | min s | median s | max s |\n| --- | --- | --- | --- |")
    print(row("a silent machine (worker and runs killed as one): run marked Crashed", silent))
    if not args.silent_only:
        print(row("run marked Crashed", detection))
        print(row("crash recorded and run restarted (sweep)", restart))
        print(row("canary back on stable (kill -> weight 0)", to_stable))


def silent_machine(stack, root: Path, n: int) -> float:
    """Seconds from killing the worker and its runs as one, mid-step, until the run is marked Crashed."""
    from cli.dev import start_worker
    from tests.flows.test_crash_recovery import run_state_name, steps_run
    from tests.flows.test_flows import submit
    from tests.helpers import standard_request, wait_until
    from tests.processes import kill_as_one, with_descendants

    service = f"bench-silent-{n}"
    run_id = submit(standard_request(title=f"bench silent machine {n}", service=service, template="slow-step",
                                     implementation_plan="", rollback_plan=""))
    wait_until(lambda: steps_run(stack, service), 90, "the step")
    worker = stack.stack.named["worker"]
    killed = time.monotonic()
    kill_as_one(with_descendants([worker.pid]))
    worker.wait(timeout=10)
    wait_until(lambda: run_state_name(run_id) == "CRASHED", 180, "the zombie automation to mark the run Crashed")
    seconds = time.monotonic() - killed
    stack.stack.processes.remove(worker)
    start_worker(stack.stack, root / "logs")
    return seconds


if __name__ == "__main__":
    main()

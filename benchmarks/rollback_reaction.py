"""Canary rollback reaction time: from the moment the canary starts failing to the moment nginx sends it no
more traffic.

Real nginx in front of two sample-service processes; the canary step's own code (flows/_canary_bake.bake_step,
the body of the flow's "canary step" task) bakes a 50 % step with the http_probe provider, a 1 s interval and
failure limit 2. A watcher sends a request through nginx every 10 ms on a new connection. Each run: the canary
is healthy for a random 1-3 s, then answers 50 % errors; the reaction ends at the first request of the unbroken
run of stable-only answers that follows (nginx's 50/50 weighted round robin alternates, so a run of 10 stable
answers only happens once the canary is out).

Goal: <= failure_limit x interval + 1 s (3 s here).

    python benchmarks/rollback_reaction.py --runs 10
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from cli.dev import Lab  # noqa: E402
from flows._canary_bake import Analyzer, bake_step  # noqa: E402
from flows.traffic import router_for  # noqa: E402
from models import CanaryPlan, CanaryTarget  # noqa: E402

STABLE_RUN = 10


def watch(lab: Lab, stop: threading.Event, seen: list[tuple[float, str]]) -> None:
    while not stop.is_set():
        try:
            response = httpx.get(f"{lab.entry_url}/health", timeout=2)
            seen.append((time.monotonic(), response.headers.get("X-Version", "?")))
        except httpx.HTTPError:
            pass
        time.sleep(0.01)


def canary_out_since(seen: list[tuple[float, str]], after: float) -> float | None:
    run_start, run = None, 0
    for at, version in seen:
        if at < after:
            continue
        if version == "v1":
            run_start, run = (run_start if run else at), run + 1
            if run >= STABLE_RUN:
                return run_start
        else:
            run_start, run = None, 0
    return None


def one_run(lab: Lab, plan: CanaryPlan, target: CanaryTarget, rng: random.Random) -> tuple[float, str]:
    router = router_for(target.router, service=lab.service)
    router.set_weight(0)
    lab.canary.set(error_rate=0)
    analyzer = Analyzer(plan, target, service=lab.service, prometheus_url=None)
    result: dict = {}
    stop = threading.Event()
    seen: list[tuple[float, str]] = []
    baker = threading.Thread(target=lambda: result.update(r=bake_step(plan, plan.steps[0], index=1, router=router,
                                                                         analyzer=analyzer, bake="bench")))
    watcher = threading.Thread(target=watch, args=(lab, stop, seen))
    baker.start()
    watcher.start()
    time.sleep(rng.uniform(1.0, 3.0))
    lab.canary.set(error_rate=0.5)
    failing_since = time.monotonic()
    baker.join(timeout=60)
    time.sleep(1.0)
    stop.set()
    watcher.join()
    analyzer.close()
    out = canary_out_since(seen, failing_since)
    if out is None:
        raise RuntimeError(f"the canary still had traffic; decision: {result.get('r')}")
    return out - failing_since, result["r"].action


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--failure-limit", type=int, default=2)
    args = parser.parse_args()
    lab = Lab(Path(tempfile.mkdtemp(prefix="changeflow-rollback-")))
    try:
        lab.start_versions("v1", "v2")
        lab.start_nginx()
        config = lab.canary_config()["services"][lab.service]
        target = CanaryTarget.model_validate(config)
        plan = CanaryPlan.model_validate({
            "stable_version": "v1", "canary_version": "v2", "interval_s": args.interval, "probe_requests": 20,
            "steps": [{"weight": 50, "bake_s": 60}, {"weight": 100, "bake_s": 1}],
            "metrics": [{"name": "error_rate", "query": "error_rate", "threshold": 0.05,
                         "failure_limit": args.failure_limit}]})
        rng = random.Random(7)
        reactions = []
        for n in range(1, args.runs + 1):
            seconds, action = one_run(lab, plan, target, rng)
            reactions.append(seconds)
            print(f"run {n:2d}: {action}, canary out of nginx {seconds:.2f} s after it started failing")
        goal = args.failure_limit * args.interval + 1
        print(f"\nrollback reaction over {args.runs} runs (interval {args.interval:g} s, failure limit "
              f"{args.failure_limit}): min {min(reactions):.2f} s, median {statistics.median(reactions):.2f} s, "
              f"max {max(reactions):.2f} s; goal <= {goal:.1f} s: "
              f"{'met' if max(reactions) <= goal else 'NOT met'}")
    finally:
        lab.stop()


if __name__ == "__main__":
    main()

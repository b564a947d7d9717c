"""How soon `changeflow abort` takes a baking canary's traffic away (issue 32: weight 0 within one bake
interval), min / median / max over N runs.

A real flow stack (Prefect server, worker, the change-request flow) and real nginx in front of two sample-service
processes; each run ships a canary (10 -> 50 -> 100 %, interval 5 s, the 50 % step baking 60 s), and once the 50 %
bake has taken its first measurement, runs `changeflow abort` as an operator would. Measured from the moment the
command is started:
- abort command: until the command exits (most of it is the CLI's Python start, 1-3 s on two cores);
- weight 0 at the router: until nginx's upstream file says 0 % to the canary (read every 20 ms);
- stable only through nginx: until the first of 10 answers in a row from the stable version (a request every
  20 ms on a new connection; nginx alternates at 50/50, so 10 in a row only happen once the canary is out).
The stack runs no sweep by itself (its schedules are off): what takes the traffic away is the abort alone.

    python benchmarks/abort_reaction.py --runs 10
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402

from _flow_bench import start_bench_stack  # noqa: E402
from cli.dev import Lab  # noqa: E402

INTERVAL_S = 5.0
STABLE_RUN = 10
_HEADER = re.compile(r"written by changeflow: (\d+)% to the canary")


class Watch:
    """The router's weight and the version that answers through nginx, each time-stamped, on two threads."""

    def __init__(self, lab: Lab):
        self.lab = lab
        self.weights: list[tuple[float, int]] = []
        self.answers: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._weights, daemon=True),
                         threading.Thread(target=self._answers, daemon=True)]

    def __enter__(self) -> "Watch":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)

    def _weights(self) -> None:
        while not self._stop.wait(0.02):
            found = _HEADER.search(self.lab.include_file.read_text())
            if found:
                self.weights.append((time.monotonic(), int(found.group(1))))

    def _answers(self) -> None:
        while not self._stop.wait(0.02):
            try:
                version = httpx.get(f"{self.lab.entry_url}/health", timeout=2).headers.get("X-Version", "?")
            except httpx.HTTPError:
                version = "error"
            self.answers.append((time.monotonic(), version))

    def weight_zero_after(self, start: float) -> float | None:
        return next((at - start for at, weight in self.weights if at > start and weight == 0), None)

    def stable_only_after(self, start: float) -> float | None:
        after = [(at, version) for at, version in self.answers if at > start]
        for i in range(len(after) - STABLE_RUN + 1):
            if all(version == "v1" for _, version in after[i:i + STABLE_RUN]):
                return after[i][0] - start
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    root, stack = start_bench_stack("abort-bench-")
    import yaml

    from models import Act
    from tests.flows.test_abort_flows import started_again_to_undo
    from tests.flows.test_crash_recovery import run_state_name
    from tests.flows.test_flows import act, awaiting, ended_as, submit
    from tests.helpers import wait_until

    lab = Lab(root / "lab").start(nginx=True)
    (stack.home / "config" / "canary.yaml").write_text(yaml.safe_dump(lab.canary_config()))
    changeflow = str(Path(sys.executable).parent / "changeflow")

    def abort_once(n: int) -> tuple[float, float, float]:
        run_id = submit({"type": "standard", "title": f"bench abort {n}", "service": lab.service,
                         "requester": "grace", "template": "canary-release",
                         "canary": {"stable_version": "v1", "canary_version": "v2", "interval_s": INTERVAL_S,
                                    "probe_requests": 10, "steps": [{"weight": 10, "bake_s": INTERVAL_S},
                                                                    {"weight": 50, "bake_s": 60},
                                                                    {"weight": 100, "bake_s": INTERVAL_S}],
                                    "metrics": [{"name": "error_rate", "query": "error_rate", "threshold": 0.05}]}})
        change = awaiting(stack, run_id)
        for person in ("alice", "bob"):
            act(stack, change, person)
        wait_until(lambda: stack.services.canary.measurements(change.key, step=2), 120, "the 50 % bake")
        code = stack.services.approvals.approval_code_for(change.key, "grace", Act.withdraw)
        with Watch(lab) as watch:
            started = time.monotonic()
            done = subprocess.run([changeflow, "abort", change.key, "--as", "grace", "--code", code, "--reason",
                                   "benchmark"], env=stack.stack.env, capture_output=True, text=True)
            command = time.monotonic() - started
            assert done.returncode == 0, done
            wait_until(lambda: watch.stable_only_after(started) is not None, 60, "stable only")
        wait_until(lambda: run_state_name(run_id) == "CANCELLED", 120, "the run stopped")
        started_again_to_undo(run_id)
        ended_as(run_id, "Rolled back", timeout_s=120)
        return command, watch.weight_zero_after(started) or float("nan"), watch.stable_only_after(started) or 0.0

    command, to_zero, to_stable = [], [], []
    try:
        for n in range(args.runs):
            figures = abort_once(n)
            for values, figure in zip((command, to_zero, to_stable), figures):
                values.append(figure)
            print(f"run {n + 1}: command {command[-1]:.2f} s, weight 0 after {to_zero[-1]:.2f} s, stable only "
                  f"after {to_stable[-1]:.2f} s", flush=True)
    finally:
        lab.stop()
        stack.stack.stop()
        stack.health.stop()

    def row(name: str, values: list[float]) -> str:
        return f"| {name} | {min(values):.2f} | {statistics.median(values):.2f} | {max(values):.2f} |"

    print(f"\n| `changeflow abort` mid-bake ({args.runs} runs, interval {INTERVAL_S:.0f} s) | min s | median s | "
          f"max s |\n| --- | --- | --- | --- |")
    print(row("abort command exits", command))
    print(row("weight 0 at the router", to_zero))
    print(row("stable only through nginx", to_stable))
    print(f"\nwithin one interval ({INTERVAL_S:.0f} s): {sum(1 for t in to_stable if t <= INTERVAL_S)} of "
          f"{args.runs}")


if __name__ == "__main__":
    main()

"""What a stack costs while nobody uses it: starts flow stacks side by side (Prefect server + `changeflow worker`,
as the flow tests and `changeflow up` run them), one per worker poll interval, lets them settle, and prints the
CPU each one's server and worker (with its launcher) spent over the same idle minutes, as % of one core.

    .venv/bin/python benchmarks/idle_stack.py --polls 0.5 1 2 --seconds 120

Why: a test run keeps 5-8 such stacks alive at once on two cores, so what one costs doing nothing is paid all
the time the suite runs. Side by side in one run, so the machine's load is the same for every variant.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cli.dev._stack import free_port  # noqa: E402
from tests import flow_stack  # noqa: E402

TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def group_ticks(leader: int) -> int:
    """Every live process of the leader's session (the stack starts each piece in a session of its own)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[3]) == leader:  # the session id
            total += sum(int(value) for value in fields[11:13])
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--polls", type=float, nargs="+", default=[0.5, 2.0],
                        help="CHANGEFLOW_WORKER_POLL_S of each stack")
    parser.add_argument("--seconds", type=float, default=120, help="idle time measured")
    parser.add_argument("--settle", type=float, default=30, help="idle time before measuring")
    args = parser.parse_args()
    # Terminated (a timeout, Ctrl-C elsewhere): unwind through `finally`, or the stacks outlive the benchmark.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    stacks = []
    try:
        for poll in args.polls:
            flow_stack.QUIET_WORKER = {"CHANGEFLOW_WORKER_POLL_S": f"{poll:g}",
                                       "CHANGEFLOW_HOT_GATE_YIELD_AFTER_S": f"{poll + 2:g}"}
            root = Path(tempfile.mkdtemp(prefix="idle-stack-"))
            stacks.append((poll, flow_stack.start_flow_stack(root, free_port())))
        time.sleep(args.settle)
        pieces = {(poll, name): process.pid for poll, stack in stacks for name, process in stack.stack.named.items()}
        before = {key: group_ticks(pid) for key, pid in pieces.items()}
        time.sleep(args.seconds)
        after = {key: group_ticks(pid) for key, pid in pieces.items()}
    finally:
        for _, stack in stacks:
            stack.stack.stop()
            stack.health.stop()
    print(f"idle for {args.seconds:g} s, CPU as % of one core ({len(stacks)} stacks side by side)")
    print(f"{'worker poll':>12} {'server':>8} {'worker':>8} {'both':>8}")
    for poll, _ in stacks:
        spent = {name: (after[(poll, name)] - before[(poll, name)]) / TICKS_PER_S / args.seconds * 100
                 for (p, name) in pieces if p == poll}
        print(f"{poll:>10g} s {spent.get('server', 0):>7.1f}% {spent.get('worker', 0):>7.1f}% "
              f"{sum(spent.values()):>7.1f}%")


if __name__ == "__main__":
    main()

"""What changeflow's own flow-run heartbeat costs the Prefect server (issue 28): two flow stacks side by side, one
receiving heartbeat events at the rate N running flows send them (N / CHANGEFLOW_RUN_HEARTBEAT_S a second, each
about its own flow run, with the zombie automation installed and evaluating them), the other idle; the CPU each
server spent over the same minutes, as % of one core, and the server's CPU per heartbeat.

    .venv/bin/python benchmarks/heartbeat_cost.py --flows 100 --seconds 120

Events go to the server of the embedded layout (`changeflow up`); on the distributed layout they go to whichever
API replica the run's client reached and through Redis to the one triggers service, so the figure per event is
the one to multiply there too. Linux only (reads /proc)."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# This process's events client talks to the beating stack's server: Prefect reads its address once, when first
# imported (cli.dev imports it), and must never fall back to a temporary server of its own.
BEATING_PORT = _free_port()
os.environ.update({"PREFECT_API_URL": f"http://127.0.0.1:{BEATING_PORT}/api",
                   "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE": "false",
                   "PREFECT_HOME": tempfile.mkdtemp(prefix="heartbeat-cost-client-")})

from cli.dev._stack import free_port  # noqa: E402

from idle_stack import TICKS_PER_S, group_ticks  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flows", type=int, default=100, help="running flows whose heartbeats are sent")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between one flow's heartbeats")
    parser.add_argument("--seconds", type=float, default=120, help="time measured")
    parser.add_argument("--settle", type=float, default=30, help="time before measuring")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    from prefect.events import emit_event

    from flows._heartbeat import HEARTBEAT_EVENT
    from tests import flow_stack

    stacks = {}
    stop = threading.Event()
    sent = 0

    def beat() -> None:
        nonlocal sent
        runs = [f"prefect.flow-run.{uuid.uuid4()}" for _ in range(args.flows)]
        gap = args.every / args.flows
        next_at = time.monotonic()
        while not stop.is_set():
            for resource in runs:
                if stop.is_set():
                    return
                emit_event(event=HEARTBEAT_EVENT, resource={"prefect.resource.id": resource})
                sent += 1
                next_at += gap
                time.sleep(max(0.0, next_at - time.monotonic()))

    try:
        for name, port in (("beating", BEATING_PORT), ("idle", free_port())):
            stacks[name] = flow_stack.start_flow_stack(Path(tempfile.mkdtemp(prefix=f"heartbeat-{name}-")), port)
        sender = threading.Thread(target=beat, daemon=True)
        sender.start()
        time.sleep(args.settle)
        servers = {name: stack.stack.named["server"].pid for name, stack in stacks.items()}
        before = {name: group_ticks(pid) for name, pid in servers.items()}
        sent_before, started = sent, time.monotonic()
        time.sleep(args.seconds)
        after = {name: group_ticks(pid) for name, pid in servers.items()}
        measured_s, events = time.monotonic() - started, sent - sent_before
    finally:
        stop.set()
        for stack in stacks.values():
            stack.stack.stop()
            stack.health.stop()
    cpu = {name: (after[name] - before[name]) / TICKS_PER_S for name in servers}
    print(f"{measured_s:.0f} s side by side; {events} heartbeats sent to one server "
          f"({events / measured_s:.1f}/s: {args.flows} running flows, one every {args.every:g} s each)")
    print("| server | CPU % of one core |\n| --- | ---: |")
    for name in servers:
        print(f"| {name} | {cpu[name] / measured_s * 100:.1f} % |")
    extra = cpu["beating"] - cpu["idle"]
    print(f"heartbeats cost the server {extra / measured_s * 100:.1f} % of a core, "
          f"{extra / max(events, 1) * 1000:.2f} ms of CPU each")


if __name__ == "__main__":
    main()

"""Where a command's CPU goes, by kind of process: runs the command, samples /proc once a second, and prints the
CPU-seconds of every process seen, grouped (flow-run engines, workspace supervisors, Prefect servers, workers,
pytest workers, PostgreSQL, Chromium, ...). Processes that live less than a second are missed, so the totals are
a lower bound.

    .venv/bin/python benchmarks/cpu_by_process.py -- make test

Linux only (reads /proc). Measures the whole machine, so run nothing else beside it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections import defaultdict

TICKS_PER_S = os.sysconf("SC_CLK_TCK")

# First match wins: (what the command line contains, the kind it is counted as).
KINDS = [
    ("prefect.runner._workspace_supervisor", "flow run: workspace supervisor"),
    ("prefect.engine", "flow run: engine"),
    ("multiprocessing", "flow run: served subprocess"),
    ("cli.dev._prefect_server", "Prefect server"),
    ("prefect server", "Prefect server"),
    ("prefect worker", "Prefect worker"),
    ("changeflow worker", "Prefect worker"),
    ("from prefect import serve", "Prefect runner (serve)"),
    ("prefect deploy", "prefect deploy / automation CLI"),
    ("prefect --no-prompt", "prefect deploy / automation CLI"),
    ("prefect automation", "prefect deploy / automation CLI"),
    ("prefect work-pool", "prefect deploy / automation CLI"),
    ("sys.stdin.readline", "pytest worker (tests in process)"),  # xdist's worker: python -c "...exec(eval(...))"
    ("pytest", "pytest"),
    ("bin/changeflow", "changeflow CLI / up / demo"),
    ("mypy", "mypy"),
    ("postgres", "PostgreSQL"),
    ("chrom", "Chromium"),
    ("nginx", "nginx"),
    ("prometheus", "Prometheus"),
    ("redis", "Redis"),
]


# `changeflow worker`'s forks share its command line; their names tell them apart (flows/_launcher.py).
NAMED = [("engine-", "flow run: engine (warm, forked)"), ("launcher", "Prefect worker: launcher")]


def kind_of(command_line: str, name: str = "") -> str:
    named = next((kind for prefix, kind in NAMED if name.startswith(prefix)), None)
    return named or next((kind for needle, kind in KINDS if needle in command_line), "other")


def sample(seen: dict[tuple[str, str], list]) -> None:
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            ticks = int(fields[11]) + int(fields[12])  # utime + stime
            key = (pid, fields[19])  # with its start time: a reused pid is another process
            # A fork names itself a moment after it starts (a warm engine first carries its launcher's name).
            if key not in seen or seen[key][0] in ("Prefect worker", "Prefect worker: launcher"):
                with open(f"/proc/{pid}/cmdline", "rb") as cmdline, open(f"/proc/{pid}/comm") as comm:
                    cmdline_text = cmdline.read().replace(b"\0", b" ").decode(errors="replace")
                    kind = kind_of(cmdline_text, comm.read())
                command_line = cmdline_text if kind == "other" else ""
                seen[key] = [kind, seen.get(key, [kind, 0])[1], command_line]
            seen[key][1] = ticks
        except (FileNotFoundError, ProcessLookupError, IndexError, PermissionError):
            continue


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command to measure, after --")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to measure after --")
    seen: dict[tuple[str, str], list] = {}
    sample(seen)
    before = {key: ticks for key, (_, ticks, _) in seen.items()}
    started = time.monotonic()
    process = subprocess.Popen(command)
    while process.poll() is None:
        sample(seen)
        time.sleep(1)
    wall_s = time.monotonic() - started
    totals: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    others: dict[str, float] = defaultdict(float)
    for key, (kind, ticks, command_line) in seen.items():
        used = (ticks - before.get(key, 0)) / TICKS_PER_S
        if used > 0 or key not in before:
            totals[kind] += used
            counts[kind] += 1
            if kind == "other":
                others[" ".join(command_line.split()[:3])[:100]] += used
    total = sum(totals.values())
    print(f"\n{' '.join(command)}: exit {process.returncode}, wall {wall_s:.0f} s, "
          f"{total:.0f} CPU-s seen ({total / wall_s / (os.cpu_count() or 1):.0%} of {os.cpu_count()} cores)\n")
    print("| kind of process | processes | CPU-s | share |\n|---|---:|---:|---:|")
    for kind, used in sorted(totals.items(), key=lambda item: -item[1]):
        print(f"| {kind} | {counts[kind]} | {used:.0f} | {used / total:.0%} |")
    print("\nThe largest of \"other\", by the start of their command line:\n")
    for command_line, used in sorted(others.items(), key=lambda item: -item[1])[:12]:
        print(f"- {used:.0f} CPU-s: `{command_line or '(no command line: a kernel thread or a zombie)'}`")
    return process.returncode


if __name__ == "__main__":
    sys.exit(main())

"""Processes found in /proc (a Prefect flow run's, a process's descendants), and kill -9 of a group of them as
one (fault-injection tests)."""

from __future__ import annotations

import os
import signal
from pathlib import Path


def _children() -> dict[int, list[int]]:
    """Each process's children; a warm flow-run engine (forked by its worker's launcher, flows/_launcher.py, and
    named `engine-<client pid>`) counts as a child of its client too: the worker's run process, whose environment
    names the run and whose death ends the engine."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                name = (entry / "comm").read_text().strip()
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
            client = name.removeprefix("engine-")
            if client != name and client.isdigit():
                children.setdefault(int(client), []).append(int(entry.name))
    return children


def with_descendants(roots: list[int]) -> list[int]:
    """`roots` and every process they started, and those started, ..."""
    children = _children()
    found: list[int] = []
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.append(pid)
            todo += children.get(pid, [])
    return found


def processes_of_run(run_id: str) -> list[int]:
    """The flow-run process (its environment names the run) and everything it started."""
    roots = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if f"PREFECT__FLOW_RUN_ID={run_id}".encode() in (entry / "environ").read_bytes():
                roots.append(int(entry.name))
        except OSError:
            continue
    return with_descendants(roots)


def kill_as_one(pids: list[int]) -> int:
    """kill -9 of `pids` as one: each is stopped (SIGSTOP) before any is killed. Killed one by one, a child could
    die first and its parent, the flow, record the child's failure before its own kill arrived (seen on a loaded
    machine: the rollback's command died, the flow recorded a rollback, then died)."""
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
    return len(pids)


def kill_run(run_id: str) -> int:
    """kill -9 of the run's processes as one."""
    pids = processes_of_run(run_id)
    assert pids, "no process runs this flow run"
    return kill_as_one(pids)

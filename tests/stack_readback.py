"""What a test stack shows besides its record, read back as a person or a log shipper would: the worker's console
as JSON lines (issue 31) and a change's runbook artifact (issue 33)."""

from __future__ import annotations

import json
import time

import httpx


def console_lines(flow_stack, name: str = "worker") -> list[dict]:
    """The JSON lines a process of the stack wrote to its console (`logs/<name>.log`)."""
    text = (flow_stack.home.parent / "logs" / f"{name}.log").read_text()
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def console_lines_of(flow_stack, run_id: str, key: str, timeout_s: float = 30) -> list[dict]:
    """The run's JSON lines in the worker's console once one carries its change: the worker streams a run's console
    into its own a moment behind."""
    deadline = time.monotonic() + timeout_s
    while True:
        lines = [line for line in console_lines(flow_stack) if line.get("flow_run_id") == run_id]
        if any(line.get("change") == key for line in lines):
            return lines
        assert time.monotonic() < deadline, [(line.get("change"), line["message"][:60]) for line in lines]
        time.sleep(0.3)


def runbook_artifact(flow_stack, key: str) -> str:
    """The Markdown of the change's runbook artifact, or "" when there is none."""
    with httpx.Client(base_url=flow_stack.api_url, timeout=30) as http:
        found = http.post("/artifacts/filter", json={"artifacts": {"key": {"any_": [f"runbook-{key.lower()}"]}}})
        found.raise_for_status()
    return "\n".join(artifact["data"] for artifact in found.json())

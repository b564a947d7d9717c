"""Runs a change template's commands on the worker, keeping an excerpt of the output as evidence."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

EXCERPT_CHARS = 2000


@dataclass(frozen=True)
class CommandResult:
    command: str
    exit_code: int | None
    output: str
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def evidence(self) -> dict:
        return {"command": self.command, "exit_code": self.exit_code, "timed_out": self.timed_out,
                "output": self.output[-EXCERPT_CHARS:]}


def run_command(command: str, *, timeout_s: float) -> CommandResult:
    try:
        completed = subprocess.run(
            ["bash", "-c", command], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as exc:
        output = (exc.stdout or "") if isinstance(exc.stdout, str) else (exc.stdout or b"").decode(errors="replace")
        return CommandResult(command, None, output + f"\n[timed out after {timeout_s:g} s]", timed_out=True)
    return CommandResult(command, completed.returncode, completed.stdout + completed.stderr)


def run_commands(commands: list[str], *, service: str, timeout_s: float) -> list[CommandResult]:
    """Run in order, stopping at the first failure."""
    results = []
    for template in commands:
        result = run_command(template.replace("{service}", service), timeout_s=timeout_s)
        results.append(result)
        if not result.ok:
            break
    return results

"""command: run an administrator's command with the weight (`kubectl argo rollouts set weight ...`, a mesh CLI).

The command comes only from canary.yaml; each argument is a template, run without a shell.
"""

from __future__ import annotations

import subprocess

from ._base import RouterError


class CommandRouter:
    def __init__(self, config, *, service: str, stable_version: str, canary_version: str):
        self.config = config
        self.values = {"service": service, "stable_version": stable_version, "canary_version": canary_version}

    def set_weight(self, weight: int) -> dict:
        values = {**self.values, "weight": weight, "stable_weight": 100 - weight}
        argv = [arg.format(**values) for arg in self.config.command]
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=self.config.timeout_s)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RouterError(f"{argv[0]}: {type(exc).__name__}: {exc}") from None
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise RouterError(f"{' '.join(argv)} exited {result.returncode}: {' | '.join(tail) or 'no output'}")
        return {"router": "command", "weight": weight, "argv": argv, "stdout": result.stdout[-500:]}

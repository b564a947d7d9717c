"""nginx: weighted `server` lines of one upstream in an include file, validated with `nginx -t`, then reloaded.

The include file is replaced atomically, and the previous one is put back if `nginx -t` or the reload fails,
so a refused weight changes nothing. nginx has no weight 0: a version without traffic is left out of the
upstream.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from ._base import RouterError


def upstream_block(upstream: str, stable: str, canary: str, weight: int) -> str:
    servers = []
    if weight < 100:
        servers.append(f"    server {stable} weight={100 - weight};")
    if weight > 0:
        servers.append(f"    server {canary} weight={weight};")
    return (f"# written by changeflow: {weight}% to the canary; do not edit by hand\n"
            f"upstream {upstream} {{\n" + "\n".join(servers) + "\n}\n")


class NginxRouter:
    def __init__(self, config):
        self.config = config
        self.path = Path(config.include_file)

    def _nginx(self, *args: str) -> subprocess.CompletedProcess:
        command = [self.config.nginx, *args]
        if self.config.conf:
            command += ["-c", self.config.conf]
        if self.config.prefix:
            command += ["-p", self.config.prefix]
        try:
            return subprocess.run(command, capture_output=True, text=True, timeout=self.config.timeout_s)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return subprocess.CompletedProcess(command, 127, "", f"{type(exc).__name__}: {exc}")

    def _replace(self, content: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        with os.fdopen(fd, "w") as handle:
            handle.write(content)
        os.chmod(tmp, 0o644)
        os.replace(tmp, self.path)

    def set_weight(self, weight: int) -> dict:
        content = upstream_block(self.config.upstream, self.config.stable, self.config.canary, weight)
        previous = self.path.read_text() if self.path.exists() else None
        if previous == content:
            return {"router": "nginx", "weight": weight, "changed": False}
        self._replace(content)
        for step in ("-t", "reload"):
            result = self._nginx("-t", "-q") if step == "-t" else self._nginx("-s", "reload")
            if result.returncode != 0:
                self._restore(previous)
                detail = (result.stderr or result.stdout).strip().splitlines()
                what = "nginx -t" if step == "-t" else "nginx -s reload"
                raise RouterError(f"{what} failed, previous weights kept: {' | '.join(detail[-3:]) or 'no output'}")
        return {"router": "nginx", "weight": weight, "changed": True, "file": str(self.path)}

    def _restore(self, previous: str | None) -> None:
        if previous is None:
            self.path.unlink(missing_ok=True)
        else:
            self._replace(previous)

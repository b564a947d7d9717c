"""How a second shell finds the stack `changeflow up` started: `up` writes HOME/stack.json (0600) with the
Prefect API and UI addresses and removes it when it stops; every other command reads it when PREFECT_API_URL is
not set, and never lets Prefect start a temporary server of its own (issue 17: `reject` in a second shell used
to start one, print telemetry errors and report a stale state)."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import MutableMapping


def stack_file(home: Path) -> Path:
    return home / "stack.json"


def write_stack_file(home: Path, *, api_url: str, ui_url: str, basic_auth: bool = False,
                     processes: dict[str, int] | None = None, api_replicas: list[str] | None = None) -> Path:
    """`processes`: the process id of each role the stack runs (api-1, services, worker-2, ...);
    `api_replicas`: the API address of each replica behind the load balancer (`up --distributed`)."""
    path = stack_file(home)
    # Written aside, then renamed over the old one: `up` rewrites it when it starts a process again, and a reader
    # (another command, an operator's script) must never find it half written.
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"api_url": api_url, "ui_url": ui_url, "pid": os.getpid(), "basic_auth": basic_auth,
                   "processes": processes or {}, "api_replicas": api_replicas or []}, fh)
    os.replace(partial, path)
    return path


def auth_file(home: Path) -> Path:
    return home / "prefect-auth"


def ensure_basic_auth(home: Path) -> str:
    """The `user:password` Prefect's server checks (PREFECT_SERVER_API_AUTH_STRING) and its clients send
    (PREFECT_API_AUTH_STRING): created once in HOME (0600), so the CLI in another shell finds it too."""
    path = auth_file(home)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"changeflow:{secrets.token_urlsafe(24)}")
    return path.read_text().strip()


def remove_stack_file(home: Path) -> None:
    stack_file(home).unlink(missing_ok=True)


def connect_to_running_stack(home: Path, environ: MutableMapping[str, str] = os.environ) -> str | None:
    """Point this process's Prefect client at the stack `changeflow up` runs (unless PREFECT_API_URL says
    otherwise); returns the API URL used, or None. Must run before Prefect is imported (it reads settings once)."""
    environ.setdefault("PREFECT_SERVER_ALLOW_EPHEMERAL_MODE", "false")
    environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    if environ.get("PREFECT_API_URL"):
        return environ["PREFECT_API_URL"]
    try:
        found = json.loads(stack_file(home).read_text())
        os.kill(int(found["pid"]), 0)  # a file left behind by an `up` that was killed names a dead server
    except (OSError, ValueError, KeyError, TypeError):
        return None
    environ["PREFECT_API_URL"] = found["api_url"]
    environ.setdefault("CHANGEFLOW_PREFECT_UI_URL", found["ui_url"])
    if found.get("basic_auth") and auth_file(home).exists():
        environ.setdefault("PREFECT_API_AUTH_STRING", auth_file(home).read_text().strip())
    return str(found["api_url"])

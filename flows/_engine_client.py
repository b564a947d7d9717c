"""The flow-run command of the work pool: start this run's engine warm, from the worker's launcher, or cold.

Run by Prefect's process worker as `python -S flows/_engine_client.py` (the pool's job template, see
`cli/dev/_stack.py::engine_job_template`), so it starts in milliseconds: standard library only, no site-packages,
nothing of changeflow imported. When the worker was started with a launcher (`flows/_launcher.py`), it hands the
launcher its standard streams, arguments, directory and environment over a Unix socket; the launcher forks an
engine that has Prefect and the flows imported already, and this process stays as the run's process for the
worker: it passes the worker's signals on (a cancel's SIGTERM) and exits with the engine's exit status. Killed,
its socket closes and the engine kills itself at once (a worker killed with its runs takes them with it, as with
a process of its own). Without a launcher, it becomes the cold engine (`python -m prefect.engine`) in place.

The protocol, one message per line: the client sends one JSON request (with its three standard streams as
SCM_RIGHTS), then `signal N` lines; the launcher's engine answers `pid N`, then `exit N` as it ends, or `cold`
when this run is better started as a new interpreter."""

import array
import json
import os
import signal
import socket
import sys

LAUNCHER_ENV = "CHANGEFLOW_ENGINE_LAUNCHER"
ENGINE_CLIENT = os.path.abspath(__file__)  # the pool's command runs this file with `python -S`
KILLED = 128 + signal.SIGKILL  # what a shell reports for a process killed with -9: the engine vanished


def cold_start() -> None:
    """Become the engine the worker would have started: a new interpreter, importing everything."""
    python = sys.executable
    os.execv(python, [python, "-m", "prefect.engine", *sys.argv[1:]])


def connect(path: str) -> socket.socket | None:
    launcher = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        launcher.connect(path)
    except OSError:
        launcher.close()
        return None  # the launcher is gone (its worker restarted): start cold, the run still runs
    return launcher


def main() -> int:
    path = os.environ.get(LAUNCHER_ENV)
    launcher = connect(path) if path else None
    if launcher is None:
        cold_start()
        return 1  # (not reached: exec)
    request = json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ)}).encode() + b"\n"
    launcher.sendmsg([request], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [0, 1, 2]).tobytes())])

    def pass_on(signum: int, _frame: object) -> None:
        try:
            launcher.sendall(f"signal {signum}\n".encode())
        except OSError:
            pass

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, pass_on)
    answers = launcher.makefile("r", encoding="ascii")
    for line in answers:
        word, _, value = line.strip().partition(" ")
        if word == "exit":
            return int(value)
        if word == "cold":  # the launcher cannot serve this run (its Prefect settings differ): start it here
            launcher.close()
            cold_start()
    return KILLED


if __name__ == "__main__":
    sys.exit(main())

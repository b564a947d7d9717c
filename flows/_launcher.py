"""Warm flow-run processes: a worker whose runs start with Prefect and the flows already imported.

Why (issue 27): every flow run a process worker starts is a new interpreter that imports Prefect and changeflow
before it does anything: about 1.5 CPU-s and most of the 3.5 s between an approver's answer to a suspended gate and
the run past it; over the test suite, a third of all CPU. `run_worker` imports all of that once, forks a launcher
(a single-threaded copy of the worker that only forks), then runs Prefect's worker in this process. The pool's
command (`flows/_engine_client.py`) asks the launcher for an engine; the launcher forks one with everything
imported, hands it the client's standard streams, directory and environment, and the engine runs Prefect's own
`python -m prefect.engine` code from there. Whatever cannot be served warm (no launcher, Prefect settings that
differ from the launcher's) starts cold, exactly as before.

What a warm engine is to the rest of the system: a process with the run's environment variables in `os.environ`
(not in /proc/PID/environ, which keeps the launcher's), named `engine-<client pid>` (/proc/PID/comm); killed with
its client, as the worker's run process; exiting with the same status the client reports."""

from __future__ import annotations

import array
import atexit
import ctypes
import json
import logging
import os
import random
import runpy
import signal
import socket
import struct
import sys
import tempfile
import threading
from importlib import import_module
from typing import Any, NoReturn

from ._engine_client import LAUNCHER_ENV

logger = logging.getLogger("changeflow.launcher")

# What every run imports: the engine, and the modules of the deployments' entrypoints (prefect.yaml).
PRELOADED = ("prefect.engine", "prefect.flow_engine", "flows.change_request", "flows.sweep",
             "flows.maintenance", "flows.audit_report", "flows.review")
ENGINE_NAME = "engine-{client}"  # /proc/PID/comm holds 15 bytes: "engine-" and a pid fit
_PR_SET_NAME, _PR_SET_PDEATHSIG = 15, 1


def _prctl(option: int, value: Any) -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: names and the parent-death signal are niceties
        pass


def run_worker(prefect_worker_args: list[str]) -> NoReturn:
    """`prefect worker start ARGS` in this process, with a launcher for its runs when one can be forked."""
    path = start_launcher()
    if path is not None:
        os.environ[LAUNCHER_ENV] = path  # the worker passes its environment on to each run's command
    else:
        os.environ.pop(LAUNCHER_ENV, None)
    from prefect.cli import app

    sys.argv = ["prefect", "worker", "start", *prefect_worker_args]
    app()  # exits with the worker's status
    sys.exit(0)


def start_launcher() -> str | None:
    """Import what runs need, fork the launcher, and return its socket's path (None: runs start cold)."""
    for module in PRELOADED:
        import_module(module)
    if threading.active_count() != 1:
        # fork() copies one thread: a lock another thread held would stay held in every engine.
        logger.warning("flow runs start cold: %d threads run before the launcher could fork",
                       threading.active_count())
        return None
    path = os.path.join(tempfile.mkdtemp(prefix="changeflow-launcher-"), "engine.sock")  # 0700: ours alone
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    settings = _prefect_settings()
    sys.stdout.flush()
    sys.stderr.flush()
    if os.fork() == 0:
        try:
            _prctl(_PR_SET_NAME, b"launcher")
            _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)  # it serves its worker only; its engines live on alone
            if os.getppid() == 1:
                os._exit(0)  # the worker died before the parent-death signal was set
            _serve(listener, settings)
        finally:
            os._exit(0)
    listener.close()
    return path


def _prefect_settings() -> dict[str, str]:
    """Prefect's settings as the current environment (and profile) make them: what the imports above captured."""
    from prefect.settings import Settings

    return Settings().to_environment_variables(exclude_unset=True)


def _serve(listener: socket.socket, settings: dict[str, str]) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # engines are reaped by the kernel: nobody here waits
    while True:
        connection, _ = listener.accept()
        if os.fork() == 0:
            listener.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # an engine waits for the commands it starts
            _become_engine(connection, settings)
        connection.close()


def _receive(connection: socket.socket) -> tuple[dict[str, Any], list[int]]:
    fds = array.array("i")
    data, ancillary, _flags, _address = connection.recvmsg(1 << 20, socket.CMSG_LEN(3 * fds.itemsize))
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
    while not data.endswith(b"\n"):
        more = connection.recv(1 << 20)
        if not more:
            raise ConnectionError("the client left before its request was complete")
        data += more
    return json.loads(data), list(fds)


def _become_engine(connection: socket.socket, settings: dict[str, str]) -> NoReturn:
    """In a fresh fork: take the client's streams, directory and environment, then run Prefect's engine module as
    `python -m prefect.engine` does. Never returns."""
    try:
        request, fds = _receive(connection)
        client_pid = struct.unpack("3i", connection.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))[0]
        if len(fds) != 3:
            raise ValueError(f"expected the client's three standard streams, got {len(fds)}")
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        if _prefect_settings() != settings:
            # Prefect read its settings when the launcher imported it: a run configured otherwise starts cold.
            connection.sendall(b"cold\n")
            os._exit(0)
    except Exception:  # noqa: BLE001 - whatever went wrong here, the client still has a way to run the engine
        logger.exception("a warm start failed; the run starts cold")
        try:
            connection.sendall(b"cold\n")
        finally:
            os._exit(0)
    _prctl(_PR_SET_NAME, ENGINE_NAME.format(client=client_pid).encode()[:15])
    random.seed()  # every fork would draw the launcher's sequence
    connection.sendall(f"pid {os.getpid()}\n".encode())
    ending = threading.Event()
    exit_code = [1]

    def report_exit() -> None:  # registered first, so it runs last: after Prefect's own exit handlers
        ending.set()
        try:
            connection.sendall(f"exit {exit_code[0]}\n".encode())
        except OSError:
            pass

    atexit.register(report_exit)
    threading.Thread(target=_obey_client, args=(connection, ending), name="engine-client", daemon=True).start()
    sys.argv = ["prefect.engine", *request["argv"]]
    # A fresh `__main__` instance of the engine module, as Prefect's own workspace bootstrap runs it
    # (prefect/runner/_workspace_runtime_bootstrap.py): the library instance the launcher imported is set aside.
    sys.modules.pop("prefect.engine", None)
    try:
        runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)
        exit_code[0] = 0
    except SystemExit as exit:
        exit_code[0] = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
    except BaseException:  # noqa: BLE001 - reported as the interpreter would, then the status says it failed
        import traceback

        traceback.print_exc()
        exit_code[0] = 1
    _finish_as_the_interpreter_would(exit_code[0])


def _finish_as_the_interpreter_would(code: int) -> NoReturn:
    """The shutdown `python -m prefect.engine` gets at its end, then the exit. Raising SystemExit here would unwind
    into the launcher's frames and their `os._exit(0)`, which skips it all: Prefect drains its log and event queues
    in threading's exit hooks (a short run's logs never reached the API), and the exit report is an atexit hook
    (the client said 137, killed, for every run). Python's finalisation runs them in this order too: threading's
    hooks and non-daemon threads, then atexit's."""
    try:
        threading._shutdown()  # type: ignore[attr-defined]
    finally:
        try:
            atexit._run_exitfuncs()
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
            os._exit(code)


def _obey_client(connection: socket.socket, ending: threading.Event) -> None:
    """Signals the worker sent the client are the engine's; a client gone (killed) takes the engine with it."""
    for line in connection.makefile("r", encoding="ascii"):
        word, _, value = line.strip().partition(" ")
        if word == "signal":
            os.kill(os.getpid(), int(value))
    if not ending.is_set():
        os.kill(os.getpid(), signal.SIGKILL)

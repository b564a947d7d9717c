"""`changeflow up`: the whole local stack for a person to use the Prefect UI, until Ctrl-C."""

from __future__ import annotations

import os
import signal
import time

import typer

from models import ChangeflowError, InputError, Settings, load_org
from notifications import inboxes

from ._output import console
from ._setup import init
from ._stack_file import ensure_basic_auth, remove_stack_file, write_stack_file
from .dev import (
    FAST_POLLING,
    DistributedLayout,
    Stack,
    create_pool_and_deploy,
    missing_pieces,
    port_in_use,
    prefect_env,
    start_distributed_server,
    start_endpoint,
    start_server,
    start_worker,
    start_workers,
    wait_healthy,
)


def print_inboxes(settings: Settings) -> None:
    """Where each person's codes and approval links arrive: a newcomer acting as grace or alice reads them there
    (the console carries neither, issue 31)."""
    found = inboxes(load_org(settings.config_dir).directory, settings.home)
    if not found:
        console.print("  nobody has a personal channel: codes reach people only through `changeflow approval-code`")
        return
    console.print("  each person's inbox (their codes and approval links):")
    for person, path in found.items():
        console.print(f"    {person:<10} {path}")


class StackError(ChangeflowError):
    exit_code = 1


LOOPBACK = ("127.0.0.1", "localhost", "::1")
# A process that exits this often within CRASH_LOOP_WINDOW_S is not coming back (a port taken, a broken config):
# the stack stops, naming it, instead of starting it twice a second for ever.
CRASH_LOOP_RESTARTS = 5
CRASH_LOOP_WINDOW_S = 60.0


class Supervisor:
    """What `up` does while it runs (issue 28): every process of the stack that exits is started again, in either
    layout (a killed endpoint took the server and the worker down with it), until one keeps exiting."""

    def __init__(self, stack: Stack):
        self.stack = stack
        self.restarts: dict[str, list[float]] = {}

    def check(self) -> list[str]:
        """Start again what exited; the names started. StackError for a process caught in a crash loop."""
        restarted = self.stack.respawn_exited(list(self.stack.named))
        now = time.monotonic()
        for name in restarted:
            recent = [t for t in self.restarts.get(name, []) if now - t < CRASH_LOOP_WINDOW_S] + [now]
            self.restarts[name] = recent
            if len(recent) >= CRASH_LOOP_RESTARTS:
                raise StackError(f"{name} exited {len(recent)} times within {CRASH_LOOP_WINDOW_S:.0f} s: see its log")
        return restarted


def _configured_api_url() -> str | None:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def up(
    port: int = typer.Option(4200, help="Port of the Prefect server to start on 127.0.0.1."),
    endpoint_port: int = typer.Option(4280, help="Port of the approval endpoint (e-mail links, Slack clicks)."),
    host: str = typer.Option("127.0.0.1", help="Address the Prefect server listens on. Beyond 127.0.0.1 only with "
                             "basic auth (--basic-auth, or PREFECT_SERVER_API_AUTH_STRING)."),
    basic_auth: bool = typer.Option(False, "--basic-auth", help="Require Prefect's basic auth on the API and UI; "
                                    "the credentials are created in HOME/prefect-auth (0600)."),
    once: bool = typer.Option(False, help="Start everything, print the addresses and stop again (a smoke test)."),
    distributed: bool = typer.Option(False, "--distributed", help="Prefect's scaled self-hosted layout: API "
                                     "replicas behind nginx, background services apart, PostgreSQL and Redis, "
                                     "several workers (docs/scaling.md)."),
    api_replicas: int = typer.Option(2, help="--distributed: Prefect API replicas behind the load balancer."),
    workers: int = typer.Option(2, help="--distributed: process workers on the `changeflow` pool."),
    worker_limit: int = typer.Option(8, help="--distributed: flow runs each worker runs at once."),
    prefect_database_url: str = typer.Option(None, help="--distributed: the Prefect server's own PostgreSQL "
                                             "database [default: CHANGEFLOW_PREFECT_DATABASE_URL]"),
    redis_url: str = typer.Option(None, help="--distributed: Redis for Prefect's messaging "
                                  "[default: CHANGEFLOW_REDIS_URL]"),
) -> None:
    """Start a Prefect server (unless PREFECT_API_URL names one), the work pool, the deployments and a worker;
    with --distributed, Prefect's scaled layout (replicas, services, PostgreSQL, Redis, several workers)."""
    settings = Settings()
    layout = _distributed_layout(settings, api_replicas, workers, worker_limit, prefect_database_url, redis_url) \
        if distributed else None
    given_auth = os.environ.get("PREFECT_SERVER_API_AUTH_STRING")
    if host not in LOOPBACK and not (basic_auth or given_auth):
        # The Prefect server has no users: whoever reaches it can start, resume, retry or cancel every run.
        raise InputError(f"--host: {host} would let anyone who reaches it start, resume, retry or cancel runs; "
                         "add --basic-auth (or set PREFECT_SERVER_API_AUTH_STRING=user:password)",
                         [("host", "not loopback without basic auth")])
    init(force=False)
    auth_string = given_auth or (ensure_basic_auth(settings.home) if basic_auth else None)
    logs = settings.home / "logs"
    existing = None if layout else _configured_api_url()
    api_url = existing or f"http://127.0.0.1:{port}/api"
    ui_url = api_url.removesuffix("/api")
    # Links in notifications point at the endpoint this command serves, unless a public address is configured.
    approval_url = (settings.approval_url if "CHANGEFLOW_APPROVAL_URL" in os.environ
                    else f"http://127.0.0.1:{endpoint_port}")
    stack = Stack(api_url, prefect_env(api_url, settings.home / "prefect", {
        **FAST_POLLING, "CHANGEFLOW_PREFECT_UI_URL": ui_url, "CHANGEFLOW_HOME": str(settings.home),
        "CHANGEFLOW_APPROVAL_URL": approval_url,
        **({"PREFECT_SERVER_API_AUTH_STRING": auth_string, "PREFECT_API_AUTH_STRING": auth_string}
           if auth_string else {}),
    }))
    stopping = False
    replicas: list[str] = []

    def _stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        if existing:
            console.print(f"using the Prefect server at {api_url} (PREFECT_API_URL)")
            wait_healthy(api_url, timeout_s=10)
        else:
            if port_in_use(port):
                raise StackError(
                    f"port {port} is taken. Free it, choose another with --port, or set PREFECT_API_URL to use "
                    "the Prefect server already running there"
                )
            if layout:
                console.print(f"starting {layout.api_replicas} Prefect API replicas, their services and nginx on "
                              f"127.0.0.1:{port} (logs: {logs})")
                ports = start_distributed_server(stack, layout, port, logs, host)
                replicas = [f"http://127.0.0.1:{p}/api" for p in ports]
            else:
                console.print(f"starting Prefect server on 127.0.0.1:{port} (logs: {logs})")
                start_server(stack, port, logs, host=host)
        console.print("creating work pool `changeflow` and deploying prefect.yaml")
        create_pool_and_deploy(stack)
        if port_in_use(endpoint_port):
            raise StackError(f"port {endpoint_port} is taken: choose another with --endpoint-port")
        start_endpoint(stack, endpoint_port, logs)
        if layout:
            start_workers(stack, layout, logs)
        else:
            start_worker(stack, logs)
        write_stack_file(settings.home, api_url=api_url, ui_url=ui_url, basic_auth=auth_string is not None,
                         processes={name: process.pid for name, process in stack.named.items()},
                         api_replicas=replicas)
        console.print(f"[bold green]changeflow is up[/]: Prefect UI {ui_url}; approval endpoint {approval_url}")
        console.print(f"  submit a change: {ui_url}/deployments -> change-request / submit -> Run -> Custom run")
        console.print(f"  `changeflow pending` lists the gates waiting; the worker's log: {logs}/worker*.log")
        print_inboxes(settings)
        if auth_string:
            console.print(f"  the API and UI ask for basic auth: user and password in {settings.home / 'prefect-auth'}"
                          if basic_auth and not given_auth else "  the API and UI ask for basic auth")
        console.print("  Ctrl-C stops everything this command started")
        # A process that dies is started again while the others carry on: up stops only when asked.
        supervisor = Supervisor(stack)
        while not stopping and not once:
            restarted = supervisor.check()
            for name in restarted:
                console.print(f"{name} exited: started again (logs: {logs})")
            if restarted:
                write_stack_file(settings.home, api_url=api_url, ui_url=ui_url, basic_auth=auth_string is not None,
                                 api_replicas=replicas,
                                 processes={name: process.pid for name, process in stack.named.items()})
            time.sleep(settings.up_supervise_poll_s)
    except RuntimeError as exc:
        raise StackError(str(exc)) from None
    finally:
        console.print("stopping ...")
        remove_stack_file(settings.home)
        stack.stop()
        console.print("stopped")


def _distributed_layout(settings: Settings, api_replicas: int, workers: int, worker_limit: int,
                        prefect_database_url: str | None, redis_url: str | None) -> DistributedLayout:
    """The layout from options and settings, once every piece it needs answers; otherwise exit 2 naming each."""
    prefect_database_url = prefect_database_url or settings.prefect_database_url
    redis_url = redis_url or settings.redis_url
    absent = [(option, "missing: " + example) for option, value, example in (
        ("--prefect-database-url", prefect_database_url, "the Prefect server's own PostgreSQL database, e.g. "
                                                         "postgresql://postgres@127.0.0.1:5432/prefect"),
        ("--redis-url", redis_url, "Prefect's messaging broker, e.g. redis://127.0.0.1:6379/0"),
    ) if not value]
    if absent:
        raise InputError("; ".join(f"{o}: {p}" for o, p in absent), absent)
    assert prefect_database_url is not None and redis_url is not None
    layout = DistributedLayout(prefect_database_url, redis_url, api_replicas, workers, worker_limit)
    problems = missing_pieces(layout, settings.resolved_database_url)
    if problems:
        raise InputError("; ".join(f"{o}: {p}" for o, p in problems), problems)
    return layout

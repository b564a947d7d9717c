"""`changeflow up`: the whole local stack for a person to use the Prefect UI, until Ctrl-C."""

from __future__ import annotations

import os
import signal
import time

import typer

from models import ChangeflowError, InputError, Settings

from ._output import console
from ._setup import init
from ._stack_file import ensure_basic_auth, remove_stack_file, write_stack_file
from .dev import (
    FAST_POLLING,
    Stack,
    create_pool_and_deploy,
    port_in_use,
    prefect_env,
    start_endpoint,
    start_server,
    start_worker,
    wait_healthy,
)


class StackError(ChangeflowError):
    exit_code = 1


LOOPBACK = ("127.0.0.1", "localhost", "::1")


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
) -> None:
    """Start a Prefect server (unless PREFECT_API_URL names one), the work pool, the deployments and a worker."""
    settings = Settings()
    given_auth = os.environ.get("PREFECT_SERVER_API_AUTH_STRING")
    if host not in LOOPBACK and not (basic_auth or given_auth):
        # The Prefect server has no users: whoever reaches it can start, resume, retry or cancel every run.
        raise InputError(f"--host: {host} would let anyone who reaches it start, resume, retry or cancel runs; "
                         "add --basic-auth (or set PREFECT_SERVER_API_AUTH_STRING=user:password)",
                         [("host", "not loopback without basic auth")])
    init(force=False)
    auth_string = given_auth or (ensure_basic_auth(settings.home) if basic_auth else None)
    logs = settings.home / "logs"
    existing = _configured_api_url()
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
            console.print(f"starting Prefect server on 127.0.0.1:{port} (logs: {logs})")
            start_server(stack, port, logs, host=host)
        console.print("creating work pool `changeflow` and deploying prefect.yaml")
        create_pool_and_deploy(stack)
        if port_in_use(endpoint_port):
            raise StackError(f"port {endpoint_port} is taken: choose another with --endpoint-port")
        start_endpoint(stack, endpoint_port, logs)
        start_worker(stack, logs)
        write_stack_file(settings.home, api_url=api_url, ui_url=ui_url, basic_auth=auth_string is not None)
        console.print(f"[bold green]changeflow is up[/]: Prefect UI {ui_url}; approval endpoint {approval_url}")
        console.print(f"  submit a change: {ui_url}/deployments -> change-request / submit -> Run -> Custom run")
        console.print(f"  notifications are printed in {logs / 'worker.log'}; `changeflow pending` lists gates")
        if auth_string:
            console.print(f"  the API and UI ask for basic auth: user and password in {settings.home / 'prefect-auth'}"
                          if basic_auth and not given_auth else "  the API and UI ask for basic auth")
        console.print("  Ctrl-C stops everything this command started")
        while not stopping and not once:
            if any(p.poll() is not None for p in stack.processes):
                raise StackError(f"a process of the stack exited; see the logs in {logs}")
            time.sleep(0.5)
    except RuntimeError as exc:
        raise StackError(str(exc)) from None
    finally:
        console.print("stopping ...")
        remove_stack_file(settings.home)
        stack.stop()
        console.print("stopped")

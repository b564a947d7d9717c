"""`changeflow worker`: Prefect's process worker for the `changeflow` pool, with warm flow-run processes."""

from __future__ import annotations

import os

import typer


def worker(
    pool: str = typer.Option("changeflow", help="The work pool to take flow runs from."),
    limit: int = typer.Option(8, help="Flow runs this worker runs at once."),
    name: str = typer.Option("", help="The worker's name in Prefect (default: Prefect's)."),
) -> None:
    """Run `prefect worker start --pool POOL --limit N` with a launcher that starts each flow run from a process
    with Prefect and the flows already imported (a run past a suspended gate within about a second less; about
    1.5 CPU-s less a run). Runs the pool's command cannot reach it for start cold, as under `prefect worker`."""
    from models import settings_from_env

    # Before Prefect is imported (it reads its settings once): the poll of CHANGEFLOW_WORKER_POLL_S, unless the
    # operator set Prefect's own variable.
    settings = settings_from_env(os.environ)
    os.environ.setdefault("PREFECT_WORKER_QUERY_SECONDS", f"{settings.worker_poll_s:g}")
    from flows import prefect_logging_env  # (imports no Prefect)

    for variable, value in prefect_logging_env(settings.log_format).items():
        os.environ.setdefault(variable, value)
    from flows import run_worker

    run_worker(["--pool", pool, "--limit", str(limit), *(["--name", name] if name else [])])

"""What a flow run needs, built once per process from the settings of the worker that runs it."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from models import Services, Settings
from notifications import Notifier


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    services: Services
    notifier: Notifier


def run_attempt() -> str:
    """This run's attempt (flow run id and run count): recorded with each side effect's intent, so a restart
    tells its own attempts from a dead run's."""
    from prefect.runtime import flow_run

    return f"{flow_run.id}:{flow_run.run_count}"


@lru_cache(maxsize=1)
def runtime() -> Runtime:
    settings = Settings()
    services = Services.from_settings(settings)
    return Runtime(settings, services, Notifier(services, settings))

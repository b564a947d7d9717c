"""The wiring of a flow-run process: the settings, the services and the notifier a flow run needs, built once per
process from the settings of the worker that runs it. (Not `prefect.runtime`, which describes the current run.)"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from models import Services, Settings
from notifications import Notifier


@dataclass(frozen=True)
class Wiring:
    settings: Settings
    services: Services
    notifier: Notifier


def run_attempt() -> str:
    """This run's attempt (flow run id and run count): recorded with each side effect's intent, so a restart
    tells its own attempts from a dead run's."""
    from prefect.runtime import flow_run

    return f"{flow_run.id}:{flow_run.run_count}"


@lru_cache(maxsize=1)
def wiring() -> Wiring:
    settings = Settings()
    services = Services.from_settings(settings)
    return Wiring(settings, services, Notifier(services, settings))

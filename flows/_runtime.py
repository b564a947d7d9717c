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


@lru_cache(maxsize=1)
def runtime() -> Runtime:
    settings = Settings()
    services = Services.from_settings(settings)
    return Runtime(settings, services, Notifier(services, settings))

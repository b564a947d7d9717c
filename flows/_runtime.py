"""What a flow run needs, built once per process from the settings of the worker that runs it."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from models import ChangeService, Database, Settings, load_org
from notifications import Notifier


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    service: ChangeService
    notifier: Notifier


@lru_cache(maxsize=1)
def runtime() -> Runtime:
    settings = Settings()
    service = ChangeService(Database.from_settings(settings), load_org(settings.config_dir), settings.secret_bytes())
    return Runtime(settings, service, Notifier(service, settings))

"""Builds what a command needs from the settings: database, organisation config, service."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from models import AuditAnchors, Database, Org, Services, Settings, load_org


@dataclass
class AppContext:
    settings: Settings

    @cached_property
    def db(self) -> Database:
        return Database.from_settings(self.settings)

    @cached_property
    def org(self) -> Org:
        return load_org(self.settings.config_dir)

    @cached_property
    def anchors(self) -> AuditAnchors:
        return AuditAnchors.from_settings(self.settings, self.db)

    @cached_property
    def services(self) -> Services:
        return Services.build(self.db, self.org, self.settings.secret_bytes())


def context() -> AppContext:
    return AppContext(Settings())

"""Builds what a command needs from the settings: database, organisation config, service."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import cached_property

from typing import TYPE_CHECKING

from models import AuditAnchors, Database, Org, Services, Settings, load_org

if TYPE_CHECKING:
    from notifications import Notifier


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
        """Under the policy in force: the config directory's, or the version a pending policy change waits on."""
        return Services.governed(self.db, self.org, self.settings.secret_bytes())

    @cached_property
    def notifier(self) -> "Notifier":
        """The notifier of a command: messages to the console channel go to stderr, so that what the command
        prints on stdout (JSON included) stays its own."""
        from notifications import ConsoleChannel, Notifier, default_channels

        channels = {**default_channels(self.settings), "console": ConsoleChannel(sys.stderr)}
        return Notifier(self.services, self.settings, channels)


def context() -> AppContext:
    return AppContext(Settings())

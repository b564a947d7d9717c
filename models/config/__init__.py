"""Configuration: the settings object (environment, `CHANGEFLOW_` prefix) and the organisation's YAML files
(directory, policies, templates, checklists, maintenance, canary), with the shipped defaults."""

from ._loader import (
    DEFAULTS_DIR,
    load_canary,
    load_checklists,
    load_directory,
    load_maintenance,
    install_runbooks,
    load_org,
    load_policies,
    load_proposal,
    load_templates,
    parse_policies,
    parse_yaml,
)
from ._settings import Settings, normalise_database_url, settings_from_env

__all__ = [
    "DEFAULTS_DIR",
    "Settings",
    "load_canary",
    "load_checklists",
    "load_directory",
    "load_maintenance",
    "install_runbooks",
    "load_org",
    "load_policies",
    "load_proposal",
    "load_templates",
    "normalise_database_url",
    "parse_policies",
    "parse_yaml",
    "settings_from_env",
]

"""The demo's organisation config on top of the defaults: the sample services' checklists, a canary template,
canary.yaml for the two canary labs, and a weekly maintenance whose checks can pass on any machine."""

from __future__ import annotations

from pathlib import Path

import yaml

from ._canary_lab import Lab
from ._compressed_time import compress_notice
from ._demo_requests import PIPELINE_REQUEST

# Whose messages go to a file of their own (the demo's e-mail); the others' to the console, with Slack ids.
INBOX_PERSON = "alice"
# The post-change watch of the shop's canary: seconds, not the shipped two hours.
DEMO_WATCH_S = 5


def _merge(path: Path, extra: dict) -> None:
    data = yaml.safe_load(path.read_text()) if path.exists() else {}
    data = data or {}
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def canary_checklist(lab: Lab) -> dict:
    entry = f"{lab.entry_url}/health" if lab.nginx_port else f"{lab.stable.url}/health"
    return {
        "pre": [{"id": "stable-healthy", "title": "Stable version healthy", "kind": "http",
                 "url": f"{lab.stable.url}/health"},
                {"id": "canary-deployed", "title": "Canary version deployed and answering", "kind": "http",
                 "url": f"{lab.canary.url}/health"}],
        "during": [{"id": "entry-healthy", "title": "Service healthy through the router", "kind": "http",
                    "url": entry, "retries": 1}],
        "post": [{"id": "smoke", "title": "Smoke test", "kind": "command",
                  "command": f"python3 -c \"import urllib.request as u; u.urlopen('{entry}', timeout=5)\""}],
    }


def write_demo_config(config: Path, home: Path, labs: dict[str, Lab], commands: dict[str, Path]) -> None:
    checklists = {f"canary-{name}": canary_checklist(lab) for name, lab in labs.items()}
    backups = home / "backups"
    backups.mkdir(exist_ok=True)
    (backups / "nightly.dump").write_text("demo backup")
    platform_health = f"{next(iter(labs.values())).stable.url}/health"
    checklists["demo-maintenance"] = {
        "pre": [{"id": "backup-verified", "title": "Backup verified", "kind": "backup_fresh",
                 "path_glob": str(backups / "*.dump"), "max_age_hours": 26}],
        "during": [{"id": "platform-healthy", "title": "Platform healthy after the step", "kind": "http",
                    "url": platform_health}],
        "post": [{"id": "smoke", "title": "Smoke tests passed", "kind": "http", "url": platform_health}],
    }
    _merge(config / "checklists.yaml", checklists)
    templates = {
        f"canary-{name}": {
            "type": "standard", "title": f"Release a new {name} version as a canary",
            "implementation_plan": "deploy the new version beside the old one; shift traffic 10 -> 50 -> 100 %",
            "rollback_plan": "send all traffic back to the stable version and stop the canary",
            "rollback_commands": ["echo canary of {service} stopped"], "checklist": f"canary-{name}",
            "command_timeout_s": 30,
            "risk": {"users_affected": "many", "complexity": "medium", "backout_difficulty": "easy",
                     "tested_in_staging": True, "touches_data": False},
        } for name in labs
    }
    _merge(config / "templates.yaml", templates)
    # Every person's messages go to their inbox under HOME (the shipped directory, issue 31): alice approves from
    # the link in hers (`INBOX_PERSON`), the one place her codes and links appear.
    services = {}
    for name, lab in labs.items():
        router = lab.nginx_router() if lab.nginx_port else {
            # Without nginx the weights go to a command that records them; the analysis still probes both
            # versions for real.
            "kind": "command", "command": ["sh", "-c", f"echo {{weight}} >> {commands[name]}"]}
        services[lab.service] = {"router": router, "stable_url": f"{lab.stable.url}/",
                                 "canary_url": f"{lab.canary.url}/"}
    # The shop is watched after its changes are verified (issue 33): its users' error rate, for the policy's
    # duration (2 h shipped; seconds here), through its router, or on the promoted version without nginx.
    shop = labs["shop"]
    watches = {"shop": {"analysis": "shop-health", "interval_s": 1, "probe_requests": 10,
                        "url": f"{shop.entry_url}/" if shop.nginx_port else f"{shop.canary.url}/"}}
    analyses = {"shop-health": {"description": "what users of the shop see",
                                "metrics": [{"name": "error_rate", "query": "error_rate", "threshold": 0.05}]}}
    (config / "canary.yaml").write_text(yaml.safe_dump({"services": services, "analyses": analyses,
                                                        "watches": watches}, sort_keys=False))
    _merge(config / "policies.yaml", {"watch": {"duration": f"{DEMO_WATCH_S}s", "on_breach": "roll_back",
                                                "by_type": {"emergency": "ask"}}})
    # The sample services are services of the organisation: the run form offers only the directory's.
    directory = yaml.safe_load((config / "directory.yaml").read_text())
    for name in labs:
        directory["services"].setdefault(name, {"owners": ["frank"], "stakeholders": ["dave"]})
    # The pipeline's service, whose owner verifies what it deployed.
    directory["services"].setdefault(str(PIPELINE_REQUEST["service"]), {"owners": ["alice"], "stakeholders": ["dave"]})
    (config / "directory.yaml").write_text(yaml.safe_dump(directory, sort_keys=False))
    maintenance = yaml.safe_load((config / "maintenance.yaml").read_text())
    maintenance["windows"]["weekly"]["checklist"] = "demo-maintenance"
    (config / "maintenance.yaml").write_text(yaml.safe_dump(maintenance, sort_keys=False))
    compress_notice(config)  # the demo's week lasts minutes

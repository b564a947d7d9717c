"""The organisation config is validated with errors that name the file, the field and the problem."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from pydantic import ValidationError

from models import DEFAULTS_DIR, ConfigError, Settings, install_runbooks, load_org, settings_from_env


@pytest.fixture
def config_dir(tmp_path):
    for name in ("directory.yaml", "policies.yaml", "templates.yaml", "checklists.yaml"):
        shutil.copyfile(DEFAULTS_DIR / name, tmp_path / name)
    install_runbooks(tmp_path)  # (templates.yaml names one)
    return tmp_path


def _edit(path, change):
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data))


@pytest.mark.parametrize(
    ("file", "change", "message"),
    [
        # Types are data: removing one is allowed unless something still names it.
        ("policies.yaml", lambda d: [d["types"].pop("standard"), d["types"]["emergency"].pop("other_severities_as")],
         "templates.restart-service.type: no change type named 'standard' in policies.yaml"),
        ("policies.yaml", lambda d: d.update(types={}), "types: Dictionary should have at least 1 item"),
        ("policies.yaml", lambda d: d["types"]["standard"].update(approval_sla="two days"),
         "types.standard.approval_sla: Value error, 'two days' is not a duration"),
        ("policies.yaml", lambda d: d["types"]["emergency"].update(approvals=[{"role": "incident_commander",
                                                                               "count": 2}]),
         "role 'incident_commander' needs 2 approver(s) but the directory has 1"),
        ("policies.yaml", lambda d: d.update(colour="blue"), "colour: Extra inputs are not permitted"),
        ("policies.yaml", lambda d: d["types"]["emergency"].update(other_severities_as="urgent"),
         "types.emergency.other_severities_as: no change type named 'urgent'"),
        # A lockdown nobody may lift, or one that admits a type that does not exist, is found at load, not in the
        # incident it was meant for.
        ("policies.yaml", lambda d: d["lockdown"].update(declared_by=["firefighter"]),
         "policies.lockdown.declared_by: nobody in the directory holds firefighter"),
        ("policies.yaml", lambda d: d["lockdown"].update(admits=["hotfix"]),
         "lockdown.admits: no change type named hotfix"),
        ("policies.yaml", lambda d: d["lockdown"].update(canaries="pause"),
         "lockdown.canaries: Input should be 'stable' or 'hold'"),
        # Environments name windows, types, roles and each other: a typo is found at load (issue 32).
        ("policies.yaml", lambda d: d["environments"]["staging"].update(windows=["nightly"]),
         "environments.staging.windows: no window named nightly in `windows:`"),
        ("policies.yaml", lambda d: d["environments"]["production"].update(
            promotion={"from": "production", "types": ["standard"]}),
         "environments.production.promotion.from: 'production' is not another environment"),
        ("policies.yaml", lambda d: d["environments"]["production"].update(
            promotion={"from": "staging", "types": ["normal"]}),
         "environments.production.promotion.types: no change type named normal"),
        ("policies.yaml", lambda d: d["environments"]["development"].update(
            approvals={"standard": [{"role": "qa_lead", "count": 1}]}),
         "policies.environments.development.approvals.standard: role 'qa_lead' needs 1 approver(s) but the "
         "directory has 0"),
        ("directory.yaml", lambda d: d["services"]["payments"].update(owners=["zed"]),
         "services.payments: 'zed' is not in people"),
        ("directory.yaml", lambda d: d["people"]["alice"].update(channels=[{"type": "email"}]),
         "a email channel needs `address`"),
        # Issue 31: a check that passes whatever the machine's state (the shipped smoke test was `true`) is refused
        # at load, naming it, instead of being recorded as passed.
        ("checklists.yaml", lambda d: d["automated"]["post"].append(
            {"id": "smoke", "title": "Smoke tests", "kind": "command", "command": " true "}),
         "checklists.yaml: automated.post.1.command: Value error, command ' true ' checks nothing"),
        ("checklists.yaml", lambda d: d["maintenance"]["post"].append(
            {"id": "noop", "title": "Nothing", "kind": "command", "command": "exit 0;"}), "checks nothing"),
        ("directory.yaml", lambda d: d["services"]["platform"].update(health="127.0.0.1:4280/healthz"),
         "services.platform.health: String should match pattern"),
        ("policies.yaml", lambda d: d["types"]["major"].update(requires=["test_evidence", "screenshots"]),
         "types.major.requires.1: Input should be"),
    ],
    ids=["type-a-template-needs", "no-types", "bad-duration", "quorum-impossible", "unknown-key",
         "other-severities-unknown-type", "lockdown-nobody-may-lift", "lockdown-admits-unknown-type",
         "lockdown-canaries-unknown", "environment-unknown-window", "promotion-from-itself",
         "promotion-unknown-type", "environment-approver-nobody-holds", "unknown-owner", "channel-target",
         "no-op-smoke-test", "no-op-exit-0", "health-not-a-url", "requires-unknown-field"],
)
def test_invalid_config_is_refused_with_the_field_named(config_dir, file, change, message):
    _edit(config_dir / file, change)
    with pytest.raises(ConfigError) as raised:
        load_org(config_dir)
    assert message in str(raised.value)


def test_yaml_syntax_error_names_the_line(config_dir):
    (config_dir / "policies.yaml").write_text("types:\n  standard: [\n")
    with pytest.raises(ConfigError, match=r"policies.yaml: line 3, column 1: not valid YAML"):
        load_org(config_dir)


def test_policy_version_is_the_hash_of_the_file(config_dir):
    before = load_org(config_dir).policies.version
    with open(config_dir / "policies.yaml", "a") as fh:
        fh.write("\n# edited\n")
    assert load_org(config_dir).policies.version != before


def test_settings_come_from_the_environment_with_the_prefix(monkeypatch, tmp_path):
    monkeypatch.setenv("CHANGEFLOW_HOME", str(tmp_path))
    monkeypatch.setenv("CHANGEFLOW_DATABASE_URL", "postgresql://ops@127.0.0.1/changes")
    settings = Settings()
    assert settings.config_dir == tmp_path / "config"
    assert settings.resolved_database_url == "postgresql+psycopg://ops@127.0.0.1/changes"
    monkeypatch.delenv("CHANGEFLOW_DATABASE_URL")
    assert Settings().resolved_database_url == f"sqlite:///{tmp_path}/changeflow.db"


def test_init_writes_a_private_secret(monkeypatch, tmp_path):
    monkeypatch.setenv("CHANGEFLOW_HOME", str(tmp_path))
    monkeypatch.delenv("CHANGEFLOW_SECRET", raising=False)
    settings = Settings()
    assert settings.ensure_secret_file() is True
    assert (settings.secret_file.stat().st_mode & 0o777) == 0o600
    assert settings.ensure_secret_file() is False
    assert len(settings.secret_bytes()) == 64


def test_schema_revision_constant_is_alembics_head():
    from models import SCHEMA_REVISION, head_revision

    assert SCHEMA_REVISION == head_revision()


def test_crash_detection_timings_have_production_defaults_and_a_zombie_window_longer_than_a_heartbeat():
    """Issue 28: a machine that dies with its runs is found within 30 s: changeflow's own heartbeat every 5 s, a
    20 s window (Prefect looks every 5 s)."""
    settings = Settings()
    assert (settings.run_heartbeat_s, settings.zombie_after_s, settings.sweep_interval_s) == (5, 20, 60)
    assert settings.zombie_after_s + 5 <= 30
    # A window of fewer than three heartbeats would take a live run whose heartbeats came late for a dead one.
    with pytest.raises(ValidationError, match=r"zombie_after_s \(14\) must be at least three heartbeats \(3 x "
                                              r"run_heartbeat_s = 15 s\)"):
        Settings(zombie_after_s=14)
    with pytest.raises(ValidationError, match="run_heartbeat_s"):
        Settings(run_heartbeat_s=0.5)
    with pytest.raises(ValidationError, match="heartbeat_s"):
        Settings(heartbeat_s=5)  # Prefect's own: its floor is 30 s, a lower figure would never reach the runs
    assert Settings(run_heartbeat_s=10, zombie_after_s=30).zombie_after_s == 30


def test_a_worker_polls_every_half_second_and_a_hot_gate_never_yields_to_a_run_not_yet_polled_for():
    settings = Settings()
    assert (settings.worker_poll_s, settings.hot_gate_yield_after_s) == (0.5, 2.0)
    # A run due for less than one poll was not asked for yet: yielding to it would suspend every hot gate.
    with pytest.raises(ValidationError, match=r"hot_gate_yield_after_s \(2\) must be longer than worker_poll_s "
                                              r"\(2\)"):
        Settings(worker_poll_s=2)
    assert Settings(worker_poll_s=2, hot_gate_yield_after_s=4).worker_poll_s == 2


def test_stacks_hand_the_worker_poll_to_prefect_and_a_lone_worker_takes_it_too(tmp_path, monkeypatch):
    import os
    import subprocess
    import sys

    from cli.dev import prefect_env

    monkeypatch.setenv("CHANGEFLOW_WORKER_POLL_S", "3")
    monkeypatch.setenv("CHANGEFLOW_HOT_GATE_YIELD_AFTER_S", "5")
    assert prefect_env("http://127.0.0.1:1/api", tmp_path)["PREFECT_WORKER_QUERY_SECONDS"] == "3"
    # `changeflow worker` started on its own (not by `up`): the setting reaches Prefect's worker before it starts.
    seen = subprocess.run([sys.executable, "-c", (
        "import os, flows, cli._worker as w\n"
        "flows.run_worker = lambda args: print(os.environ['PREFECT_WORKER_QUERY_SECONDS'])\n"
        "w.worker(pool='p', limit=1, name='')")], capture_output=True, text=True, check=True,
        env={name: value for name, value in os.environ.items() if name != "PREFECT_WORKER_QUERY_SECONDS"})
    assert seen.stdout.strip() == "3"


def test_a_child_process_environment_is_read_as_that_process_will_read_it(tmp_path):
    env = {"CHANGEFLOW_HOME": str(tmp_path), "CHANGEFLOW_ZOMBIE_AFTER_S": "45", "CHANGEFLOW_SWEEP_INTERVAL_S": "20",
           "PREFECT_API_URL": "http://127.0.0.1:1/api"}
    settings = settings_from_env(env)
    assert (settings.home, settings.zombie_after_s, settings.sweep_interval_s) == (tmp_path, 45, 20)
    with pytest.raises(ValidationError, match="sweep_interval_s"):
        settings_from_env({"CHANGEFLOW_SWEEP_INTERVAL_S": "1"})


def test_the_zombie_automation_is_installed_with_the_configured_window():
    from cli.dev import zombie_automations

    (zombie,) = yaml.safe_load(zombie_automations(45))["automations"]
    assert zombie["trigger"]["within"] == 45
    assert zombie["actions"][0]["message"].startswith("No heartbeat for 45 s")
    # The file itself holds the production default.
    shipped = yaml.safe_load(zombie_automations(Settings().zombie_after_s))
    assert shipped == yaml.safe_load((Path(__file__).parents[2] / "automations.yaml").read_text())

"""The flow stack's config (tests/flow_stack.py starts the stack): the shipped config with the test checklists,
templates and a fourth change type, its timings turned down and its notices compressed, written into a HOME."""

from __future__ import annotations

from pathlib import Path

import yaml

from cli.dev import compress_notice
from models import DEFAULTS_DIR, Settings, install_runbooks
from tests.helpers import ROUTINE_RISK, SECRET


def test_checklists(health_url: str, backups: Path) -> dict:
    return {
        "pre-fails": {"pre": [
            {"id": "svc-healthy", "title": "Service healthy", "kind": "http", "url": f"{health_url}/failing"}]},
        "post-fails": {
            "pre": [{"id": "backup-fresh", "title": "Backup fresh", "kind": "backup_fresh",
                     "path_glob": str(backups / "*.dump"), "max_age_hours": 26}],
            "post": [{"id": "smoke", "title": "Smoke test", "kind": "command", "command": "exit 1"}]},
        "advisory": {
            "pre": [{"id": "status-page", "title": "Status page updated", "kind": "command", "command": "exit 1",
                     "required": False}],
            "during": [{"id": "still-healthy", "title": "Healthy after the step", "kind": "http",
                        "url": f"{health_url}/healthy", "retries": 1}],
            "post": [{"id": "latency", "title": "Fast enough", "kind": "http", "url": f"{health_url}/healthy",
                      "max_latency_ms": 2000}]},
        "fails-before-the-manual": {"pre": [
            {"id": "svc-healthy", "title": "Service healthy", "kind": "http", "url": f"{health_url}/failing"},
            {"id": "oncall-ready", "title": "On-call coordinated", "kind": "manual", "timeout_s": 600}]},
        "manual": {"pre": [
            {"id": "oncall-ready", "title": "On-call coordinated", "kind": "manual", "timeout_s": 600},
            {"id": "rollback-ready", "title": "Rollback plan reviewed", "kind": "manual", "timeout_s": 600}]},
        "automated-maintenance": {
            "pre": [{"id": "backup-fresh", "title": "Backup fresh", "kind": "backup_fresh",
                     "path_glob": str(backups / "*.dump"), "max_age_hours": 26}],
            "during": [{"id": "platform-healthy", "title": "Platform healthy", "kind": "http",
                        "url": f"{health_url}/healthy"}],
            "post": [{"id": "smoke", "title": "Smoke test", "kind": "command", "command": "echo smoke ok"}]},
        "manual-timeout": {"pre": [
            {"id": "nobody-answers", "title": "Nobody will confirm this", "kind": "manual", "timeout_s": 1}]},
        # A pre-check that writes a line and then takes long enough to be killed (tests/flows/test_crash_recovery).
        "slow-pre": {"pre": [slow_check("slow-pre")]},
        "slow-pre-idempotent": {"pre": [{**slow_check("slow-pre-idempotent"), "idempotent": True}]},
        "slow-post": {"post": [slow_check("slow-post")]},
    }


def slow_check(name: str) -> dict:
    return {"id": "slow-check", "title": "A slow pre-check", "kind": "command", "timeout_s": 120,
            "command": f'echo started >> "$CHANGEFLOW_HOME/checks-{name}.log"; sleep 15'}


# A dead run is acted on once its state is this old (the production default is 5 s): the same behaviour, sooner.
CRASH_SETTLE = {"CHANGEFLOW_CRASH_SETTLE_S": "1"}
# The stacks' workers ask Prefect for due runs every 2 s, not 0.5 s: each ask costs the server ~20 ms of CPU
# (benchmarks/idle_stack.py: a quiet server 6.3 % -> 2.8 % of a core), and five to eight stacks run at once on
# two cores. A hot gate yields its slot to a run due for 4 s (longer than a poll, as the settings require).
QUIET_WORKER = {"CHANGEFLOW_WORKER_POLL_S": "2", "CHANGEFLOW_HOT_GATE_YIELD_AFTER_S": "4"}
# A canary held by a lockdown looks for its lifting every second (production: 10 s).
LOCKDOWN_HOLD = {"CHANGEFLOW_LOCKDOWN_HOLD_POLL_S": "1"}
HOT_GATE = "30s"  # the shipped policies' hot gates (minutes), turned down for the flow stack
NORMAL_TYPE = {
    "description": "a routine change one team lead approves",
    "approvals": [{"role": "team_lead", "count": 1}],
    "approval_sla": "24h",
    "window": "maintenance",
    "notice": "3d",  # past compress_notice's 48 h: it holds here
    "early_start": ["team_lead"],
    "requires": ["rollback_plan", "test_evidence"],
    "escalation": [{"after": "4h", "role": "management"}],
}

# Changes the flow tests run end to end carry automation (a change without it waits for a person to confirm its
# manual work, tests/flows/test_bypass_flows.py): one template per type, none pre-approved.
SCRIPTED = {
    f"scripted-{change_type}": {
        "type": change_type, "title": f"A scripted {change_type} change", "rollback_plan": "run the undo script",
        "implementation_commands": ["echo applying to {service}"], "verify_commands": ["echo {service} verified"],
        "rollback_commands": ["echo undone on {service}"], "command_timeout_s": 30}
    for change_type in ("standard", "emergency", "major", "normal")}

# One step that writes a line, then takes long enough to be killed in the middle (tests/flows/test_crash_recovery.py).
SLOW_STEP = {"type": "standard", "title": "A slow step", "rollback_plan": "undo",
             "implementation_commands": ['echo started >> "$CHANGEFLOW_HOME/steps-{service}.log"; sleep 15'],
             "rollback_commands": ["echo undone"], "command_timeout_s": 60}

# A step that runs until the test lets it finish (a file appears): a live run mid-step, for as long as needed.
GATED_STEP = {**SLOW_STEP, "title": "A step the test lets finish", "command_timeout_s": 300,
              "implementation_commands": ['echo started >> "$CHANGEFLOW_HOME/steps-{service}.log"; '
                                          'while [ ! -e "$CHANGEFLOW_HOME/finish-{service}" ]; do sleep 0.2; done']}

TEST_TEMPLATES = {
    **SCRIPTED,
    "slow-step": SLOW_STEP,
    "gated-step": GATED_STEP,
    # A step that fails, then a rollback slow enough to be killed in the middle.
    "slow-rollback": {"type": "standard", "title": "A slow rollback", "rollback_plan": "undo",
                      "implementation_commands": ["exit 3"], "command_timeout_s": 60,
                      "rollback_commands": ['echo started >> "$CHANGEFLOW_HOME/rollbacks-{service}.log"; sleep 15']},
    "slow-idempotent-step": {**SLOW_STEP, "idempotent": True},
    "canary-release": {
        "type": "standard",
        "title": "Release a new version as a canary",
        "implementation_plan": "shift traffic in steps while the analysis watches",
        "rollback_plan": "send all traffic back to the stable version",
        "rollback_commands": ["echo rollback of {service} done"],
        "command_timeout_s": 30,
    },
    # A step that fails and a rollback that fails too: nothing may be recorded as undone.
    "failing-rollback": {"type": "standard", "title": "Deploy and undo that both fail", "rollback_plan": "undo",
                         "implementation_commands": ["exit 3"], "rollback_commands": ["echo undoing; exit 4"],
                         "command_timeout_s": 30},
    "failing-deploy": {
        "type": "standard",
        "title": "Deploy that fails",
        "implementation_plan": "run the deploy script",
        "rollback_plan": "run the rollback script",
        "implementation_commands": ["echo deploying {service}", "exit 3"],
        "rollback_commands": ["echo rolled back {service}"],
        "command_timeout_s": 30,
    }
}


def prepare_home(home: Path, health_url: str, hot_gate: str = HOT_GATE) -> dict[str, str]:
    config = home / "config"
    config.mkdir(parents=True)
    install_runbooks(config)
    directory = yaml.safe_load((DEFAULTS_DIR / "directory.yaml").read_text())
    # Alice reads her messages in a file of her own (the stand-in for her e-mail): codes and links land there.
    directory["people"]["alice"]["channels"] = [{"type": "file", "path": str(home / "inbox" / "alice.txt")}]
    # The platform the stack runs on answers at its health server (shipped: changeflow's own endpoint on :4280):
    # what the shipped checklists' service_health items probe (issue 31).
    directory["services"]["platform"]["health"] = f"{health_url}/healthy"
    (config / "directory.yaml").write_text(yaml.safe_dump(directory, sort_keys=False))
    backups = home / "backups"
    backups.mkdir()
    (backups / "nightly.dump").write_text("fresh")
    checklists = yaml.safe_load((DEFAULTS_DIR / "checklists.yaml").read_text())
    checklists.update(test_checklists(health_url, backups))
    (config / "checklists.yaml").write_text(yaml.safe_dump(checklists))
    templates = yaml.safe_load((DEFAULTS_DIR / "templates.yaml").read_text())
    templates.update(TEST_TEMPLATES)
    for name in test_checklists(health_url, backups):
        templates[f"with-{name}"] = {"type": "standard", "title": f"Checked by {name}", "checklist": name,
                                     "rollback_plan": "undo", "implementation_commands": ["echo step one",
                                                                                          "echo step two"],
                                     "rollback_commands": ["echo undone"], "command_timeout_s": 30}
    for template in templates.values():  # each carries reviewed risk answers and evidence, as a shipped one does
        template.setdefault("risk", ROUTINE_RISK)
        template.setdefault("test_evidence", "rehearsed in the flow stack")
    (config / "templates.yaml").write_text(yaml.safe_dump(templates))
    maintenance = yaml.safe_load((DEFAULTS_DIR / "maintenance.yaml").read_text())
    maintenance["windows"]["weekly"] = {"title": "Weekly maintenance", "service": "platform",
                                        "checklist": "automated-maintenance",
                                        "activities": ["rotate-logs", "vacuum-changeflow", "long-job", "after-long"],
                                        "risk": maintenance["windows"]["weekly"]["risk"]}
    maintenance["activities"]["long-job"] = {"title": "A job longer than the window", "command": "sleep 60",
                                             "timeout_s": 600}
    maintenance["activities"]["after-long"] = {"title": "Never fits", "command": "echo too late"}
    (config / "maintenance.yaml").write_text(yaml.safe_dump(maintenance))
    policies = yaml.safe_load((DEFAULTS_DIR / "policies.yaml").read_text())
    # A fourth change type, added by editing YAML only (tests/flows/test_flows.py runs it through the flow).
    policies["types"]["normal"] = NORMAL_TYPE
    # Gates wait hot for 30 s here, not the shipped minutes: a change a test leaves at its gate gives its worker
    # slot back soon (8 slots serve the whole worker's tests). Same behaviour, sooner.
    for policy in policies["types"].values():
        if policy.get("hot_gate"):
            policy["hot_gate"] = hot_gate
    policies["pre_approved_templates"] = ["restart-service", "failing-deploy", "failing-rollback", "canary-release",
                                          "slow-step", "gated-step",
                                          "slow-idempotent-step", "slow-rollback",
                                          *(f"with-{n}" for n in test_checklists(health_url, backups))]
    (config / "policies.yaml").write_text(yaml.safe_dump(policies, sort_keys=False))
    compress_notice(config)  # the stack's runs go in the release window open now, not two days on
    Settings(home=home).ensure_signing_key()  # the sweep signs audit checkpoints, as under `changeflow up`
    # JSON logs (issue 31) on every flow test's runs: the worker's console is read back by test_flows.
    return {"CHANGEFLOW_HOME": str(home), "CHANGEFLOW_SECRET": SECRET.decode(), **CRASH_SETTLE, **QUIET_WORKER,
            **LOCKDOWN_HOLD, "CHANGEFLOW_LOG_FORMAT": "json"}

"""A change type is data: a fourth type added to policies.yaml (nothing else edited) is filed, approved by its
own approvers, checked for its own required fields, and walks the lifecycle its rules give it."""

from __future__ import annotations

import shutil

import pytest
import yaml

from models import DEFAULTS_DIR, ChangeState, InputError, Services, change_type, load_org, transitions_for
from tests.flow_stack_config import NORMAL_TYPE
from tests.helpers import SECRET, approve, standard_request


@pytest.fixture
def normal_org(tmp_path):
    config = tmp_path / "config"
    shutil.copytree(DEFAULTS_DIR, config, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    policies = yaml.safe_load((config / "policies.yaml").read_text())
    policies["types"]["normal"] = NORMAL_TYPE
    (config / "policies.yaml").write_text(yaml.safe_dump(policies, sort_keys=False))
    return load_org(config)


def normal_request(**overrides) -> dict:
    return standard_request(**{"type": "normal", "title": "Rotate the payments log level",
                               "test_evidence": "staging run 4711", **overrides})


def test_a_fourth_type_gets_its_rules_from_yaml(normal_org):
    rules = change_type(normal_org.policies, "normal")
    assert rules.scheduled and not rules.always_reviewed and not rules.overrides_freeze
    assert [step.role for step in rules.ladder] == ["management"]
    assert ChangeState.scheduled in transitions_for(rules)[ChangeState.approved]


def test_a_fourth_type_needs_its_own_fields(db, normal_org):
    services = Services.build(db, normal_org, SECRET)
    with pytest.raises(InputError) as caught:
        services.changes.submit(normal_request(test_evidence=""))
    assert [p.field for p in caught.value.problems] == ["test_evidence"]
    assert "a normal change needs test evidence" in str(caught.value)


def test_a_fourth_type_is_approved_by_its_own_approvers_and_runs_its_lifecycle(db, normal_org):
    services = Services.build(db, normal_org, SECRET)
    change = services.approvals.request_approval(services.changes.submit(normal_request()).key)
    assert [(r.role, r.count) for r in services.approvals.required_for(change)] == [("team_lead", 1)]
    assert services.approvals.approval_sla(change).total_seconds() == 24 * 3600
    assert approve(services, change.key, "alice").change.state == ChangeState.approved.value
    for target in (ChangeState.scheduled, ChangeState.implementing, ChangeState.verifying, ChangeState.completed,
                   ChangeState.closed):
        services.changes.transition(change.key, target, actor="ops", reason="routine")
    assert services.changes.get(change.key).state == ChangeState.closed.value


def test_an_unknown_type_is_refused_naming_the_known_ones(db, normal_org):
    services = Services.build(db, normal_org, SECRET)
    with pytest.raises(InputError) as caught:
        services.changes.submit(standard_request(type="weird"))
    assert str(caught.value) == "type: unknown change type 'weird' (known: emergency, standard, major, normal)"

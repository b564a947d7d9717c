"""Runbooks (issue 33): named, versioned Markdown documents of the config directory. A change filed from a
template follows its runbook (or one the request names); the change records the name, version and text it was
filed with, so what it shows does not move when the file is edited later; a manual checklist item may point at a
runbook step, and a change whose runbook lacks that step is refused naming the field. Bad references are refused
when the config loads or at submit, naming them, and nothing is written."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from models import ChangeRequest, Checklist, ConfigError, InputError, Runbook, Services, load_org
from models.config import DEFAULTS_DIR
from tests.helpers import SECRET, standard_request


def restart(**overrides) -> dict:
    return standard_request(template="restart-service", rollback_plan="", implementation_plan="", **overrides)


def count(services: Services) -> int:
    with services.db.read() as session:
        return session.execute(select(func.count()).select_from(ChangeRequest)).scalar_one()


def test_a_change_records_the_runbook_it_was_filed_with_whatever_the_file_says_later(db, org):
    services = Services.build(db, org, SECRET)
    change = services.changes.submit(restart())
    shipped = org.runbooks["restart-service"]
    followed = services.runbooks.of(change.key)
    assert (followed.name, followed.version, followed.text) == ("restart-service", shipped.version, shipped.text)
    assert followed.steps()[3] == "Restart the instance and wait until its health check answers 200."
    # The file is edited (a new version): the change still follows, and shows, what was filed.
    edited = org.model_copy(update={"runbooks": {"restart-service": Runbook(name="restart-service",
                                                                            text="1. Reboot the host.\n")}})
    later = Services.build(db, edited, SECRET)
    assert later.runbooks.of(change.key).version == shipped.version
    assert later.runbooks.of(later.changes.submit(restart()).key).version == edited.runbooks["restart-service"].version
    assert services.runbooks.of(services.changes.submit(standard_request()).key) is None, "no template, no runbook"


@pytest.mark.parametrize(("request_", "message"), [
    (standard_request(runbook="reboot-everything"), "runbook: unknown runbook 'reboot-everything' (known: "
                                                    "restart-service)"),
    (restart(runbook="rotate-keys"), "runbook: unknown runbook 'rotate-keys'"),
], ids=["unknown", "unknown-beside-a-template"])
def test_a_request_naming_a_runbook_that_does_not_exist_is_refused_and_writes_nothing(db, org, request_, message):
    services = Services.build(db, org, SECRET)
    with pytest.raises(InputError) as refused:
        services.changes.submit(request_)
    assert message in str(refused.value)
    assert count(services) == 0


def test_a_request_may_not_swap_its_templates_runbook(db, org):
    other = Runbook(name="restart-quickly", text="1. Restart every instance at once.\n")
    services = Services.build(db, org.model_copy(update={"runbooks": {**org.runbooks, other.name: other}}), SECRET)
    with pytest.raises(InputError, match="runbook: the template restart-service follows the runbook "
                                         "'restart-service', not 'restart-quickly'"):
        services.changes.submit(restart(runbook="restart-quickly"))
    picked = services.changes.submit(standard_request(runbook="restart-quickly"))  # no template: its own choice
    assert services.runbooks.of(picked.key).name == "restart-quickly"


def test_a_checklist_item_pointing_at_a_runbook_step_needs_that_step(db, org):
    checklist = Checklist.model_validate({"during": [
        {"id": "instance-back", "title": "Instance back in the pool", "kind": "manual", "runbook_step": 4}]})
    services = Services.build(db, org.model_copy(update={"checklists": {**org.checklists, "by-the-book": checklist}}),
                              SECRET)
    followed = services.changes.submit(restart(checklist="by-the-book"))
    assert services.runbooks.step_line(followed.key, 4) == (
        f"runbook restart-service ({org.runbooks['restart-service'].version}), step 4: Put the instance back in the "
        "load balancer; repeat steps 2 to 4 for each instance.")
    with pytest.raises(InputError, match="checklist: item instance-back confirms runbook step 4, and the change "
                                         "follows no runbook"):
        services.changes.submit(standard_request(checklist="by-the-book"))
    short = Runbook(name="short", text="1. Only one step.\n")
    shorter = Services.build(db, services.org.model_copy(update={"runbooks": {"restart-service": short.model_copy(
        update={"name": "restart-service"}), "short": short}}), SECRET)
    with pytest.raises(InputError, match="the runbook restart-service has no step 4"):
        shorter.changes.submit(restart(checklist="by-the-book"))


def test_runbook_references_are_checked_when_the_config_loads(tmp_path):
    import shutil

    config = tmp_path / "config"
    shutil.copytree(DEFAULTS_DIR, config, ignore=shutil.ignore_patterns("__init__.py", "__pycache__"))
    assert load_org(config).runbooks["restart-service"].steps()[1].startswith("Announce the restart")
    (config / "runbooks" / "restart-service.md").unlink()
    with pytest.raises(ConfigError, match="templates.restart-service.runbook: no runbook named 'restart-service'"):
        load_org(config)
    (config / "runbooks" / "restart-service.md").write_text("")
    with pytest.raises(ConfigError, match=r"restart-service.md: text: String should have at least 1 character"):
        load_org(config)

"""`changeflow lockdown` (issue 32) on the shipped config: a code arrives in its owner's inbox only, the lockdown is
announced to everyone, a filing during it exits 1 naming it before any run is started, and each refusal exits
with its code (1 refused, 2 bad input) and writes nothing but its record."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import yaml
from sqlalchemy import select

from models import Database, Notification, Services, Settings, load_org
from tests.helpers import ROUTINE_RISK, SECRET

CODE = re.compile(r"--code ([A-Z0-9]{4}-[A-Z0-9]{4}-[A-Z0-9]{4})")


def inbox(person: str) -> list[dict]:
    path = Path(os.environ["CHANGEFLOW_HOME"]) / "inbox" / f"{person}.txt"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def last_code(person: str, event: str) -> str:
    message = [m for m in inbox(person) if m["event"] == event][-1]
    return CODE.search(message["text"]).group(1)


def test_a_lockdown_from_the_cli_is_announced_holds_filings_and_is_lifted_with_a_fresh_code(cli_env, tmp_path):
    services = Services.build(Database.from_settings(Settings()), load_org(Settings().config_dir), SECRET)
    status = cli_env("lockdown", "status", "--json")
    assert status.exit_code == 0 and json.loads(status.output)["on"] is False

    unknown = cli_env("lockdown", "code", "--for", "mallory")
    assert unknown.exit_code == 2 and "--for: 'mallory' is not in the approver directory" in unknown.output
    sent = cli_env("lockdown", "code", "--for", "erin")
    assert sent.exit_code == 0 and "sent to their channel" in sent.output
    code = last_code("erin", "lockdown_code")
    assert code == services.lockdown.code_for("erin") and code not in sent.output, "her inbox only, never printed"

    blank = cli_env("lockdown", "on", "--as", "erin", "--code", code, "--reason", " ")
    assert blank.exit_code == 2 and "reason: say why" in blank.output
    by_bob = cli_env("lockdown", "on", "--as", "bob", "--code", services.lockdown.code_for("bob"), "--reason", "x")
    assert by_bob.exit_code == 1 and "bob holds none of the roles" in by_bob.output
    on = cli_env("lockdown", "on", "--as", "erin", "--code", code, "--reason", "INC-7 payments down")
    assert on.exit_code == 0 and "lockdown on" in on.output, on.output
    again = cli_env("lockdown", "on", "--as", "erin", "--code", code, "--reason", "INC-7 payments down")
    assert again.exit_code == 1 and "wrong lockdown code for erin" in again.output, "a code works once"

    # Everyone is told; whoever may lift it gets their code for that, on their own channel only.
    people = load_org(Settings().config_dir).directory.people
    for person in people:
        (told,) = [m for m in inbox(person) if m["event"] == "lockdown_declared"]
        assert "INC-7 payments down" in told["text"] and "Erin Walsh" in told["text"]
        assert ("lockdown off --as" in told["text"]) == (person == "erin"), person
    with services.db.read() as session:
        stored = " ".join(n.subject + n.body_text + n.body_markdown + n.body_html
                          for n in session.execute(select(Notification)).scalars())
    assert code not in stored and services.lockdown.code_for("erin") not in stored, "the outbox holds no code"

    request = tmp_path / "standard.yaml"
    request.write_text(yaml.safe_dump({"type": "standard", "title": "Bump", "service": "payments",
                                       "requester": "grace", "rollback_plan": "redeploy", "implementation_plan": "x",
                                       "test_evidence": "CI", "risk": ROUTINE_RISK}))
    filed = cli_env("submit", str(request))
    assert filed.exit_code == 1 and "standard changes may not be filed until it is lifted" in filed.output
    status = cli_env("lockdown", "status")
    assert status.exit_code == 0 and "declared by erin: INC-7 payments down" in status.output

    off = cli_env("lockdown", "off", "--as", "erin", "--code", last_code("erin", "lockdown_declared"),
                  "--reason", "INC-7 resolved")
    assert off.exit_code == 0 and "lockdown off: lifted by erin" in off.output, off.output
    assert all([m["event"] for m in inbox(person)][-1] == "lockdown_lifted" for person in people)
    assert json.loads(cli_env("lockdown", "status", "--json").output)["on"] is False

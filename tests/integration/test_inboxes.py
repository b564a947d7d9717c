"""Issue 31: on the shipped directory every person has an inbox of their own under CHANGEFLOW_HOME, where their
codes and approval links arrive; the console, which everyone reads, gets neither; nobody else's inbox gets them."""

from __future__ import annotations

import json
import os
from pathlib import Path

from typer.testing import CliRunner

from cli import app
from models import Act, Database, Services, Settings, load_org
from notifications import FileChannel, Notifier, inboxes
from tests.helpers import SECRET, standard_request


def messages(inbox: Path) -> list[dict]:
    return [json.loads(line) for line in inbox.read_text().splitlines()] if inbox.exists() else []


def test_the_shipped_directory_delivers_each_approvers_code_and_link_to_their_own_inbox(tmp_path, monkeypatch):
    home = tmp_path / "home"
    elsewhere = tmp_path / "the worker's directory"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # a relative inbox path is under HOME, never where a process happens to run
    monkeypatch.setenv("CHANGEFLOW_HOME", str(home))
    monkeypatch.setenv("CHANGEFLOW_SECRET", SECRET.decode())
    assert CliRunner().invoke(app, ["init"]).exit_code == 0
    settings = Settings()
    org = load_org(settings.config_dir)
    services = Services.build(Database.from_settings(settings), org, SECRET)
    assert inboxes(org.directory, home) == {name: home / "inbox" / f"{name}.txt" for name in org.directory.people}

    change = services.changes.submit(standard_request(service="payments"))
    notifier = Notifier(services, settings)
    asked = notifier.request_approvals(services.approvals.request_approval(change.key))
    notifier.deliver()
    assert asked == 4  # payments' team leads and peer reviewers: alice, frank; bob, carol

    everyone = inboxes(org.directory, home)
    for person in ("alice", "bob", "carol", "frank"):
        (message,) = [m for m in messages(everyone[person]) if m["event"] == "approval_requested"]
        assert services.approvals.approval_code_for(change.key, person, Act.approve) in message["text"]
        assert services.links.link_for(change.key, person) in message["text"]
        others = [p for p in org.directory.people if p != person]
        assert not any(services.approvals.approval_code_for(change.key, other, Act.approve) in message["text"]
                       for other in others), "one person's inbox holds only their own code"
        assert oct(everyone[person].stat().st_mode & 0o777) == "0o600"
    assert oct((home / "inbox").stat().st_mode & 0o777) == "0o700"
    assert not messages(everyone["grace"]), "the requester is not asked to approve"
    assert not list(elsewhere.iterdir()), "nothing written where the process runs"


def test_an_absolute_inbox_path_stays_where_it_is_and_without_a_home_a_relative_one_is_relative(tmp_path):
    assert FileChannel(tmp_path).path_of({"path": "/var/mail/alice"}) == Path("/var/mail/alice")
    assert FileChannel(tmp_path).path_of({"path": "inbox/a.txt"}) == tmp_path / "inbox" / "a.txt"
    assert FileChannel().path_of({"path": "inbox/a.txt"}) == Path("inbox/a.txt")
    assert FileChannel(tmp_path).path_of({"path": "~/a.txt"}) == Path(os.path.expanduser("~/a.txt"))

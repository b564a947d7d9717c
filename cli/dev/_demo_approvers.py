"""The demo's approvers act as real ones do (issue 17): alice from the approval link in her own inbox (a file:
the demo's e-mail), everyone else with the Approve button of the Slack message, sent signed as Slack signs a
click. The approval endpoint records each decision and resumes the run."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import httpx

from ._demo_config import INBOX_PERSON


@dataclass(frozen=True)
class EndpointApprovers:
    home: Path
    services: object  # models.Services
    approval_url: str
    slack_secret: str

    def approve(self, key: str, person: str, comment: str, wait) -> str:
        """Approve `key` as `person`; returns what the demo says. `wait(probe, what)` polls."""
        if person == INBOX_PERSON:
            link = wait(lambda: self.link_in_inbox(key), f"{person}'s approval link for {key}")
            page = httpx.get(link, timeout=10)
            form_token = re.search(r'name="form_token" value="([^"]+)"', page.text)
            answer = httpx.post(link, data={"form_token": form_token.group(1) if form_token else "",
                                            "decision": "approve", "comment": comment}, timeout=30)
            if answer.status_code != 200:
                raise RuntimeError(f"{person}'s approval link was refused: {answer.text[-300:]}")
            return f"{person} approves from the link in her inbox: {comment}"
        from endpoint import signed_click

        services = self.services
        slack_user = services.org.directory.people[person].slack_user_id  # type: ignore[attr-defined]
        round_ = services.changes.get(key).approval_round  # type: ignore[attr-defined]
        body, headers = signed_click(key, round_, slack_user, self.slack_secret)
        text = httpx.post(f"{self.approval_url}/slack/actions", content=body, headers=headers,
                          timeout=30).json()["text"]
        if not text.startswith(":white_check_mark:"):
            raise RuntimeError(f"{person}'s Slack click was refused: {text}")
        return f"{person} clicks Approve in Slack: {text.split(';')[0].removeprefix(':white_check_mark: ')}"

    def link_in_inbox(self, key: str) -> str | None:
        """The approval link of the newest request for `key` in the inbox file."""
        inbox = self.home / "inbox" / f"{INBOX_PERSON}.txt"
        messages = [json.loads(line) for line in inbox.read_text().splitlines()] if inbox.exists() else []
        links = [re.search(r"(http://\S+/a/\S+)", m["text"]) for m in messages
                 if m["change"] == key and m["event"] == "approval_requested"]
        return links[-1].group(1) if links and links[-1] else None

"""Secrets are put into a message at the moment it is sent, and only into messages addressed to one person
(issue 17). The outbox stores the rendered message with placeholders, so `notifications.body_text` never holds a
code or a link token; a channel post (Slack, Teams, a webhook) or the worker log (console) gets a pointer
instead, and Slack approval messages get buttons, whose click Slack signs with the clicking person's id."""

from __future__ import annotations

import html
from dataclasses import replace

from models import Act, Services, Settings

from ._channels import Outbound

CODE = "\u27e6your personal code\u27e7"
LINK = "\u27e6your approval link\u27e7"
# The act the code in each kind of message is good for (a code works for one kind of act only, issue 27).
ACT_OF_MESSAGE = {
    "filing_received": Act.file, "approval_requested": Act.approve, "approval_reminder": Act.approve,
    "work_needed": Act.confirm_work, "work_overdue": Act.confirm_work,
    "checklist_item_needs_person": Act.confirm_check, "canary_gate_waiting": Act.answer_canary,
    "watch_breached": Act.answer_canary,
    "review_due": Act.review, "action_item_due": Act.follow_up,
}
# Messages that concern no change and carry the recipient's code for the next lockdown act (issue 32).
LOCKDOWN_MESSAGES = frozenset({"lockdown_declared", "lockdown_lifted", "lockdown_code"})
# Channels that reach exactly one person: an e-mail address, a personal file.
PERSONAL_CHANNELS = frozenset({"email", "file"})
NOT_HERE = "(not shown here, where others can read it: see your e-mail)"


class PersonalSecrets:
    """Fills the placeholders of one message for its channel, from the recipient's identity and the secret."""

    def __init__(self, services: Services, settings: Settings):
        self._services = services
        self._approval_url = settings.approval_url.rstrip("/")

    def fill(self, message: Outbound, channel_type: str) -> Outbound:
        if CODE not in message.text and LINK not in message.text:
            return message
        if message.change_key is None:
            if message.event not in LOCKDOWN_MESSAGES:
                return message
            code = (self._services.lockdown.code_for(message.recipient) if channel_type in PERSONAL_CHANNELS
                    else NOT_HERE)
            link = ""
        elif channel_type in PERSONAL_CHANNELS:
            act = ACT_OF_MESSAGE.get(message.event)
            code = (self._services.approvals.approval_code_for(message.change_key, message.recipient, act)
                    if act is not None else "(no code: this message asks for no act)")
            link = (f"{self._approval_url}/a/{self._services.links.link_for(message.change_key, message.recipient)}"
                    if LINK in message.text else "")
        else:
            code = link = NOT_HERE
        round_ = None
        if channel_type == "slack" and message.event == "approval_requested":
            round_ = self._services.changes.get(message.change_key).approval_round

        def filled(text: str, escape=lambda s: s) -> str:
            return text.replace(CODE, escape(code)).replace(LINK, escape(link))

        return replace(message, subject=filled(message.subject), text=filled(message.text),
                       markdown=filled(message.markdown), html=filled(message.html, html.escape),
                       approval_round=round_)

"""Who hears about a change, with what message: recipients from the directory, text from templates,
delivery through the outbox."""

from __future__ import annotations

import html
import json
from datetime import datetime, timedelta

from models import ChangeRequest, Checkpoint, Lockdown, Services, Settings

from ._channels import Channel, default_channels
from ._outbox import Outbox, enqueue, idempotency_key
from ._secrets import CODE, LINK, PersonalSecrets
from ._templates import Rendered, TemplateRenderer

# The event of a checkpoint sent to a witness.
WITNESSED = "audit_checkpoint"


def run_url(settings: Settings, flow_run_id: str | None) -> str:
    base = settings.prefect_ui_url.rstrip("/")
    return f"{base}/runs/flow-run/{flow_run_id}" if flow_run_id else base


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "-"


class Notifier:
    def __init__(self, services: Services, settings: Settings, channels: dict[str, Channel] | None = None):
        self.services = services
        self.settings = settings
        self.renderer = TemplateRenderer(settings.config_dir / "templates")
        self.outbox = Outbox(
            services.db,
            channels if channels is not None else default_channels(settings),
            max_attempts=settings.notify_max_attempts,
            backoff_s=settings.notify_backoff_s,
            next_channel=self.next_channel,
            fill_secrets=PersonalSecrets(services, settings).fill,
            lease=timedelta(seconds=settings.notify_lease_s),
        )

    def next_channel(self, person: str, failed: dict) -> tuple[int, dict] | None:
        """The directory's next channel for `person` after the one that failed for good."""
        entry = self.services.org.directory.people.get(person)
        if entry is None:
            return None
        channels = [c.model_dump(exclude_none=True) for c in entry.channels]
        try:
            index = channels.index(failed)
        except ValueError:
            # Not one of the person's channels any more (the directory changed since it was queued): start over
            # with their current first channel.
            return (0, channels[0]) if channels else None
        return (index + 1, channels[index + 1]) if index + 1 < len(channels) else None

    def _change_context(self, change: ChangeRequest) -> dict:
        evaluation = self.services.approvals.evaluation(change.key)
        deadline = self.services.approvals.approval_deadline(change)
        return {
            "change": change,
            "brief": self.services.briefs.of(change),  # what an approver must see to decide (issue 27)
            "missing": evaluation.describe_missing(),
            "deadline": _when(deadline),
            "ui_url": run_url(self.settings, change.flow_run_id),
        }

    def _enqueue(self, change: ChangeRequest, event: str, person: str, round_: int | str, context: dict) -> bool:
        return self._enqueue_personal(event, person, round_, context, change_key=change.key)

    def approvers_to_ask(self, change: ChangeRequest) -> dict[str, str]:
        """Each person who could fill a still-missing role (never the requester, never someone who acted)."""
        evaluation = self.services.approvals.evaluation(change.key)
        acted = set(self.services.approvals.decided_by(change.key))
        directory = self.services.delegations.directory_in_force(change.key)  # delegates are asked too
        people: dict[str, str] = {}
        for role in evaluation.missing:
            for person in directory.holders(role):
                if person != change.requester and person not in acted:
                    people.setdefault(person, role)
        return people

    def request_approvals(self, change: ChangeRequest) -> int:
        context = self._change_context(change)
        written = 0
        for person, role in self.approvers_to_ask(change).items():
            delegator = self.services.delegations.standing_of(change.key, person).get(role)
            # Placeholders: the outbox fills in the person's code and link when it sends, on personal channels only.
            written += self._enqueue(change, "approval_requested", person, change.approval_round, {
                **context,
                "role": f"{role} (standing in for {delegator})" if delegator else role,
                "code": CODE,
                "approve_link": LINK,
                "cli_approve": f"changeflow approve {change.key} --as {person} --code {CODE}",
                "cli_reject": f"changeflow reject {change.key} --as {person} --code {CODE} --comment \"why\"",
            })
        return written

    def remind(self, change: ChangeRequest, *, level: str, people: list[str], role: str, waited: str) -> int:
        context = self._change_context(change)
        waiting_on = sorted(self.approvers_to_ask(change))
        written = 0
        for person in people:
            written += self._enqueue(change, "approval_reminder", person, f"{change.approval_round}-{level}", {
                **context, "level": level, "role": role, "waited": waited, "waiting_on": waiting_on,
            })
        return written

    def announce(self, change: ChangeRequest, event: str, people: list[str], *, reason: str = "",
                 round_: int | str | None = None, deadline: datetime | None = None,
                 extra: dict | None = None, personal_code: bool = False) -> int:
        """`personal_code`: the message asks the person to act (confirm an item, answer a gate), which needs the
        code that proves who they are; each message carries its recipient's own code only."""
        context = {**self._change_context(change), **(extra or {})}
        if deadline is not None:
            context["deadline"] = _when(deadline)
        return sum(
            self._enqueue(change, event, person, change.approval_round if round_ is None else round_,
                          {**context, "reason": reason,
                           **({"code": CODE} if personal_code else {})})
            for person in people
        )

    def announce_lockdown(self, lockdown: Lockdown, aborted: list[str]) -> int:
        """Tell everyone in the directory that a lockdown was declared or lifted (issue 32), once per lockdown act.
        Whoever may turn it off (or on again) gets, on a personal channel, their code for the next lockdown act."""
        event = "lockdown_declared" if lockdown.on else "lockdown_lifted"
        policy = self.services.org.policies.lockdown
        directory = self.services.org.directory
        context = {"by": lockdown.by, "by_name": directory.people[lockdown.by].name if lockdown.by in directory.people
                   else lockdown.by, "since": _when(lockdown.since), "reason": lockdown.reason,
                   "admitted": ", ".join(policy.admits) or "no", "aborted": aborted, "hold": policy.canaries == "hold"}
        return sum(self._enqueue_personal(event, person, lockdown.round, {
            **context, "code": CODE if self.services.lockdown.may_declare(person) else ""})
            for person in directory.people)

    def send_lockdown_code(self, person: str) -> bool:
        """`person`'s code for the next lockdown act, to their own channel only (once per lockdown round)."""
        lockdown = self.services.lockdown.status()
        return self._enqueue_personal("lockdown_code", person, lockdown.round, {
            "code": CODE, "lockdown_on": lockdown.on, "next_act": "lift it" if lockdown.on else "declare one"})

    def _enqueue_personal(self, event: str, person: str, round_: int | str, context: dict, *,
                          change_key: str | None = None) -> bool:
        """A message to one person on their first channel, once per (change, event, person, round); `change_key`
        None: it concerns no change (a lockdown's). The outbox fills a code in on personal channels."""
        entry = self.services.org.directory.people[person]
        rendered = self.renderer.render(event, {**context, "person": person, "person_name": entry.name})
        with self.services.db.write() as session:
            return enqueue(session, key=idempotency_key(change_key, event, person, round_), change_key=change_key,
                           event=event, recipient=person, channel=entry.channels[0].model_dump(exclude_none=True),
                           rendered=rendered)

    def witness(self, checkpoint: Checkpoint) -> int:
        """Send a signed audit checkpoint to every witness of the directory (issue 28), once each: the text is the
        checkpoint's JSON line, what `audit verify-bundle --witness` reads back."""
        line = json.dumps(checkpoint.to_dict(), sort_keys=True)
        rendered = Rendered(subject=f"changeflow audit checkpoint at event {checkpoint.seq}", text=line,
                            markdown=f"`{line}`", html=f"<pre>{html.escape(line)}</pre>")
        written = 0
        with self.services.db.write() as session:
            for name, channel in self.services.org.directory.witnesses.items():
                recipient = f"witness:{name}"
                written += enqueue(session, key=idempotency_key(None, WITNESSED, recipient, checkpoint.seq),
                                   change_key=None, event=WITNESSED, recipient=recipient,
                                   channel=channel.model_dump(exclude_none=True), rendered=rendered)
        return written

    def deliver(self, change_key: str | None = None):
        return self.outbox.deliver_due(change_key=change_key)

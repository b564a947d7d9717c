"""Who someone is, as far as changeflow can know: a person of the directory presenting the personal code only they
were sent for this act on this change in this round. A typed name alone proves nothing (the Prefect UI carries no
identity). Every code in changeflow is issued and checked here, nowhere else."""

from __future__ import annotations

from ..domain import Act, Org, PolicyViolation, approval_code, verify_code
from ..storage import ChangeRequest


_ACTS = {
    Act.file: "confirm that you filed it", Act.approve: "approve or reject", Act.start_early: "start it early",
    Act.confirm_work: "confirm the work",
    Act.confirm_check: "confirm a checklist item", Act.answer_canary: "answer a canary gate",
    Act.review: "record the review", Act.withdraw: "withdraw it", Act.amend: "amend it",
    Act.lockdown: "turn the lockdown on or off", Act.follow_up: "close an action item of its review",
}
# What a lockdown code is bound to in place of a change key (no change key looks like it).
LOCKDOWN_SUBJECT = "lockdown"


class Identities:
    def __init__(self, org: Org, secret: bytes):
        self._org = org
        self._secret = secret

    def code_for(self, change: ChangeRequest, person: str, act: Act) -> str:
        return approval_code(self._secret, change.key, person, change.approval_round, act)

    def proves(self, change: ChangeRequest, person: str, code: str, act: Act) -> bool:
        """`code` is `person`'s own code for `act` on this change in its current round."""
        return verify_code(self._secret, change.key, person, change.approval_round, act, code)

    def refusal(self, change: ChangeRequest, person: str, code: str, act: Act) -> str | None:
        """Why `person` with `code` is not who they say for `act` on this change (None: they are)."""
        if not person:
            return "no name given"
        if person not in self._org.directory.people:
            return f"{person!r} is not in the approver directory"
        if not self.proves(change, person, code, act):
            return (f"wrong approval code for {person} on {change.key} (round {change.approval_round}): a code is "
                    f"good for one kind of act; this needs the one sent to {_ACTS[act]}")
        return None

    def lockdown_code_for(self, person: str, round_: int) -> str:
        """`person`'s code for the next lockdown act: `round_` is the latest lockdown event's sequence number, so the
        code stops working once that act (or anyone's) is recorded."""
        return approval_code(self._secret, LOCKDOWN_SUBJECT, person, round_, Act.lockdown)

    def lockdown_refusal(self, person: str, code: str, round_: int) -> str | None:
        if not person:
            return "no name given"
        if person not in self._org.directory.people:
            return f"{person!r} is not in the approver directory"
        if not verify_code(self._secret, LOCKDOWN_SUBJECT, person, round_, Act.lockdown, code):
            return (f"wrong lockdown code for {person}: a code is good for one kind of act, and a lockdown code for "
                    f"the next lockdown act only (`changeflow lockdown code --for {person}` sends a new one)")
        return None

    def check(self, change: ChangeRequest, person: str, code: str, act: Act) -> None:
        refusal = self.refusal(change, person, code, act)
        if refusal is not None:
            raise PolicyViolation(refusal)

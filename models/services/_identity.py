"""Who someone is, as far as changeflow can know: a person of the directory presenting the personal code only they
were sent for this change and round. A typed name alone proves nothing (the Prefect UI carries no identity)."""

from __future__ import annotations

from ..domain import Org, PolicyViolation, approval_code, verify_code
from ..storage import ChangeRequest


class Identities:
    def __init__(self, org: Org, secret: bytes):
        self._org = org
        self._secret = secret

    def code_for(self, change: ChangeRequest, person: str) -> str:
        return approval_code(self._secret, change.key, person, change.approval_round)

    def refusal(self, change: ChangeRequest, person: str, code: str) -> str | None:
        """Why `person` with `code` is not who they say for this change (None: they are)."""
        if not person:
            return "no name given"
        if person not in self._org.directory.people:
            return f"{person!r} is not in the approver directory"
        if not verify_code(self._secret, change.key, person, change.approval_round, code):
            return f"wrong approval code for {person} on {change.key} (round {change.approval_round})"
        return None

    def check(self, change: ChangeRequest, person: str, code: str) -> None:
        refusal = self.refusal(change, person, code)
        if refusal is not None:
            raise PolicyViolation(refusal)

"""Runbooks (issue 33): named, versioned Markdown documents of the config directory (`runbooks/<name>.md`). A
template names the one its changes follow (or a request does); the change records the name, the version and the
text it was filed with, the run shows it, and a manual checklist item may point at one of its numbered steps.
Pure: the loader reads the files, this says what a runbook is."""

from __future__ import annotations

import hashlib
import re

from pydantic import Field, computed_field

from ._fields import NAME_PATTERN, Strict

MAX_RUNBOOK_CHARS = 20_000
# A step is a top-level numbered list item ("3. Drain the node"): what a checklist item points at.
_STEP = re.compile(r"^(\d{1,3})\.\s+(.+)$")


class Runbook(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    text: str = Field(min_length=1, max_length=MAX_RUNBOOK_CHARS)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def version(self) -> str:
        """The first 12 hex digits of the text's SHA-256: what a change records it followed."""
        return hashlib.sha256(self.text.encode()).hexdigest()[:12]

    def steps(self) -> dict[int, str]:
        found: dict[int, str] = {}
        for line in self.text.splitlines():
            match = _STEP.match(line)
            if match:
                found.setdefault(int(match.group(1)), match.group(2).strip())
        return found


def runbook_step_text(runbook: Runbook | None, step: int) -> str | None:
    """`runbook`'s step `step` as a line a person reads beside a checklist item, or None when there is none."""
    steps = runbook.steps() if runbook is not None else {}
    if runbook is None or step not in steps:
        return None
    return f"runbook {runbook.name} ({runbook.version}), step {step}: {steps[step]}"

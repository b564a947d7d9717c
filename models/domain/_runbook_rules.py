"""What a request's runbook must satisfy (issue 33), from the organisation's config: pure."""

from __future__ import annotations

from ._checklist import ManualItem
from ._errors import FieldProblem
from ._org import Org
from ._runbooks import runbook_step_text
from ._schemas import ChangeRequestInput


def runbook_problems(org: Org, request: ChangeRequestInput) -> list[FieldProblem]:
    """The runbook a request names exists and does not replace its template's; every manual checklist item that
    points at a runbook step finds that step in the runbook the change follows."""
    template = org.template_of(request)
    if request.runbook and request.runbook not in org.runbooks:
        known = ", ".join(sorted(org.runbooks)) or "none configured"
        return [FieldProblem("runbook", f"unknown runbook {request.runbook!r} (known: {known})")]
    if request.runbook and template and template.runbook and request.runbook != template.runbook:
        return [FieldProblem("runbook", f"the template {request.template} follows the runbook "
                                        f"{template.runbook!r}, not {request.runbook!r}")]
    runbook = org.runbook_of(request, request.runbook)
    checklist = org.checklist_of(request)
    pointed = [(item.id, item.runbook_step) for phase in ("pre", "during", "post") if checklist
               for item in checklist.items(phase) if isinstance(item, ManualItem) and item.runbook_step]
    return [FieldProblem("checklist", f"item {item} confirms runbook step {step}, and "
                         + (f"the runbook {runbook.name} has no step {step}" if runbook
                            else "the change follows no runbook"))
            for item, step in pointed if step and runbook_step_text(runbook, step) is None]

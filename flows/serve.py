"""Serve changeflow's deployments from this process (no work pool needed): `python -m flows.serve`.

`changeflow up`, the tests and the benchmarks use a process work pool and `prefect.yaml` instead; this runner is for
a quick local try.
"""

from __future__ import annotations

from prefect import serve

from flows.audit_report import audit_report
from flows.change_request import change_request
from flows.lockdown import lockdown
from flows.maintenance import maintenance_announcement, maintenance_window
from flows.policy_what_if import policy_what_if
from flows.review import change_review
from flows.sweep import sweep


def deployments(escalation_interval_s: float | None = 60):
    return [
        change_request.to_deployment(name="submit"),
        sweep.to_deployment(
            name="every-minute", interval=escalation_interval_s if escalation_interval_s else None
        ),
        # Unscheduled here: tests and benchmarks start them with an explicit (compressed) window.
        maintenance_announcement.to_deployment(name="weekly", parameters={"kind": "weekly"}),
        maintenance_window.to_deployment(name="weekly", parameters={"kind": "weekly"}),
        audit_report.to_deployment(name="audit-report"),
        policy_what_if.to_deployment(name="what-if"),
        change_review.to_deployment(name="record"),
        lockdown.to_deployment(name="press"),
    ]


if __name__ == "__main__":
    serve(*deployments(), limit=8)

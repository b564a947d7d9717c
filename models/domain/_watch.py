"""The post-change watch (issue 33): the specifications' post-change step "monitor error rates for 2 hours", done by
changeflow. Once a change is verified (a canary promoted, the verify commands and post-checklist passed), its
service is measured with the canary's providers for the policy's duration before the change completes; a breach
tells the implementer and on-call, then rolls the change back or asks a person, as the policy says.

Two halves, as for canaries: policies.yaml says how long and what a breach does (`WatchPolicy`); canary.yaml says
what is measured on each service (`ServiceWatch`, an administrator's analysis). A service canary.yaml does not
watch has no watch: nothing could be measured. Pure rules: no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from pydantic import Field, field_validator

from ._analysis_templates import AnalysisTemplate
from ._canary import Measurement, MetricRule, StepDecision, decide_step
from ._canary_metric import CanaryMetric
from ._fields import Duration, Name, Strict

OnBreach = Literal["roll_back", "ask"]
# The measurements of a watch are stored beside the canary's, as step 0 of the change: one watch per change.
WATCH_STEP = 0
WATCH_BAKE = "watch"


class WatchPolicy(Strict):
    """policies.yaml `watch:`: how long a verified change's service is watched, and what a breach does."""

    duration: Duration = Field(
        default=timedelta(hours=2),
        description="How long the service is measured after verification before the change completes (the "
        "specification: monitor error rates for 2 hours); 0s: no watch")
    on_breach: OnBreach = Field(
        default="roll_back", description="roll_back: the change is rolled back at once (a promoted canary's traffic "
        "back to stable first); ask: a person answers keep or roll back with their code (canary.yaml "
        "gate_answerers), and nobody within gate_timeout_s rolls it back (fail-safe)")
    environments: list[Name] | None = Field(
        default=None, description="The environments whose changes are watched (None: every one). canary.yaml "
        "names one URL per service: the production one, where a staging change would be judged by users it never "
        "reached")
    by_type: dict[Name, OnBreach] = Field(
        default_factory=dict, description="`on_breach` for these change types instead (an emergency fix rolled "
        "back by itself may bring its incident back: a person is asked)")

    @field_validator("duration")
    @classmethod
    def _bounded(cls, value: timedelta) -> timedelta:
        if not timedelta(0) <= value <= timedelta(days=7):
            raise ValueError("duration must be between 0s and 7d")
        return value

    def watches(self, environment: str) -> bool:
        return self.duration > timedelta(0) and (self.environments is None or environment in self.environments)

    def on_breach_of(self, change_type: str) -> OnBreach:
        return self.by_type.get(str(change_type), self.on_breach)


class ServiceWatch(Strict):
    """canary.yaml `watches.<service>`: what a watch of the service measures (an analysis of `analyses`)."""

    analysis: Name = Field(description="The analysis (canary.yaml `analyses`) whose metrics and limits judge it")
    url: str | None = Field(default=None, pattern=r"^https?://",
                            description="Where the http_probe metrics send their requests (the service as users "
                            "reach it); needed when the analysis has one")
    interval_s: float = Field(default=60, ge=0.2, le=3600, description="Seconds between measurements")
    probe_requests: int = Field(default=20, ge=1, le=10_000, description="http_probe: requests per interval")


@dataclass(frozen=True)
class WatchSetup:
    """One change's watch: what is measured, how often, for how long, and what a breach does."""

    service: str
    version: str  # what `{version}` means in a PromQL query: the promoted canary's, or the change's release
    analysis: str
    metrics: tuple[CanaryMetric, ...]
    url: str | None
    interval_s: float
    probe_requests: int
    duration: timedelta
    on_breach: OnBreach

    @classmethod
    def of(cls, policy: WatchPolicy, watch: ServiceWatch, template: AnalysisTemplate, *, change_type: str,
           service: str, environment: str, version: str) -> "WatchSetup | None":
        """The watch of a change of `change_type` on `service` in `environment`; None where the policy watches
        none (a duration of 0, another environment)."""
        if not policy.watches(environment):
            return None
        return cls(service=service, version=version, analysis=watch.analysis, metrics=tuple(template.metrics),
                   url=watch.url, interval_s=watch.interval_s, probe_requests=watch.probe_requests,
                   duration=policy.duration, on_breach=policy.on_breach_of(change_type))

    @property
    def measurements_due(self) -> int:
        return max(1, round(self.duration.total_seconds() / self.interval_s))

    def rules(self) -> list[MetricRule]:
        return [metric.rule() for metric in self.metrics]

    def uses(self, provider: str) -> bool:
        return any(m.provider == provider for m in self.metrics)

    def judge(self, measurements: list[Measurement]) -> StepDecision:
        """The watch so far, as a canary's last step is judged (failure and inconclusive limits over the whole
        watch, Argo's analysis run): `rollback` is a breach, `pause` too much missing data (a person is asked),
        `promote` healthy so far."""
        return decide_step(self.rules(), measurements, last_step=True)

    def describe(self) -> dict[str, object]:
        """What the record keeps of it when it starts."""
        return {"analysis": self.analysis, "duration_s": self.duration.total_seconds(), "interval_s": self.interval_s,
                "on_breach": self.on_breach, "version": self.version,
                "limits": {m.name: f"{m.operator} {m.threshold:g}" for m in self.metrics}}

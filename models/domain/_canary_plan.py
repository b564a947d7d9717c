"""What a canary rollout is: the plan a requester files (part of the change request, so it is a UI form) and the
traffic targets an administrator configures per service (`canary.yaml`).

Split on purpose: the request says *what* to roll out and how to judge it; where traffic goes and which
command or URL moves it lives only in the config directory, so a request can never bring commands of its own.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ._analysis_templates import AnalysisTemplate, loosened
from ._canary_metric import CanaryMetric
from ._errors import FieldProblem
from ._watch import ServiceWatch

HOST_PORT = r"^[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}$|^unix:/\S+$"


class CanaryStep(BaseModel):
    model_config = ConfigDict(extra="forbid")

    weight: int = Field(ge=1, le=100, description="Percent of traffic sent to the canary during this step.")
    bake_s: float = Field(default=60, gt=0, le=86400, description="How long to hold this weight while measuring.")
    confirm: bool = Field(
        default=False, description="Wait for a person to confirm in the UI (or `changeflow canary`) before this step."
    )


class BaselineComparison(BaseModel):
    """Judge the canary against stable over the same interval (Kayenta): one-sided Mann-Whitney U on the
    latencies of probe requests sent to each version directly."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=False, description="Roll back when the canary is significantly slower than stable.")
    min_samples: int = Field(default=20, ge=5, le=100_000, description="Latency samples per version before judging.")
    alpha: float = Field(default=0.01, gt=0, lt=0.5, description="Significance level of the test.")
    tolerance: float = Field(
        default=0.10, ge=0, le=10, description="Ignore a slowdown of the median smaller than this (0.10 = 10 %)."
    )


def _default_steps() -> list[CanaryStep]:
    return [CanaryStep(weight=10), CanaryStep(weight=50), CanaryStep(weight=100)]


def _default_metrics() -> list[CanaryMetric]:
    return [
        CanaryMetric(name="error_rate", query="error_rate", threshold=0.05),
        CanaryMetric(name="latency_p95_ms", query="latency_p95_ms", threshold=500),
    ]


class CanaryPlan(BaseModel):
    """Ship a new version in traffic steps, analysing it at every interval; a breach rolls back automatically."""

    model_config = ConfigDict(extra="forbid")

    stable_version: str = Field(default="stable", max_length=100, description="Version serving traffic now.")
    canary_version: str = Field(max_length=100, min_length=1, description="The new version being rolled out.")
    steps: list[CanaryStep] = Field(
        default_factory=_default_steps, min_length=1, max_length=20,
        description="Traffic weights in order; the last must be 100 (promotion).",
    )
    interval_s: float = Field(default=10, ge=0.2, le=3600, description="Seconds between measurements.")
    metrics: list[CanaryMetric] = Field(
        default_factory=_default_metrics, min_length=1, max_length=20, description="What is measured and when it fails."
    )
    probe_requests: int = Field(
        default=20, ge=1, le=10_000, description="http_probe: requests sent to each version every interval."
    )
    probe_through_router: bool = Field(
        default=False, description="http_probe: send the requests through the router (the mix users see) "
        "instead of to the canary directly.",
    )
    comparison: BaselineComparison = Field(
        default_factory=BaselineComparison, description="Statistical comparison with the stable version."
    )
    analysis: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$",
        description="An analysis of canary.yaml to judge by (its metrics, unless the plan gives its own, which may "
        "only be stricter). A service that requires one uses it whatever this says.")

    @model_validator(mode="after")
    def _steps_climb_to_100(self) -> "CanaryPlan":
        weights = [step.weight for step in self.steps]
        if any(b <= a for a, b in zip(weights, weights[1:])):
            raise ValueError(f"steps: weights must increase step by step, got {weights}")
        if weights[-1] != 100:
            raise ValueError(f"steps: the last step must send 100 % to the canary (promotion), got {weights[-1]}")
        names = [m.name for m in self.metrics]
        if len(set(names)) != len(names):
            raise ValueError("metrics: names must be unique")
        return self

    def measurements_per_step(self, step: CanaryStep) -> int:
        return max(1, round(step.bake_s / self.interval_s))

    def progress_percent(self, index: int, measured_in_step: int = 0) -> float:
        """How far the rollout is with `measured_in_step` measurements of step `index` (1-based) taken."""
        ticks = [self.measurements_per_step(s) for s in self.steps]
        return 100.0 * (sum(ticks[: index - 1]) + measured_in_step) / sum(ticks)

    def uses(self, provider: str) -> bool:
        return any(m.provider == provider for m in self.metrics)


# ---- administrator side: where traffic goes (canary.yaml) ---------------------------------------------------


class _Router(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NginxRouter(_Router):
    """Weighted `server` lines of one upstream, written to an include file of the nginx configuration."""

    kind: Literal["nginx"]
    upstream: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    include_file: str = Field(description="File the main nginx.conf includes inside `http {}`; changeflow owns it.")
    stable: str = Field(pattern=HOST_PORT, description="host:port of the stable version")
    canary: str = Field(pattern=HOST_PORT, description="host:port of the canary version")
    nginx: str = Field(default="nginx", description="nginx binary")
    conf: str | None = Field(default=None, description="main configuration file (-c); default: nginx's own")
    prefix: str | None = Field(default=None, description="prefix path (-p)")
    timeout_s: float = Field(default=30, gt=0)


class CommandRouter(_Router):
    """A command run with the weight, e.g. `kubectl argo rollouts set weight ...` or a service-mesh CLI.

    Arguments are templates filled with {service}, {weight}, {stable_weight}, {stable_version},
    {canary_version}; the command is run without a shell.
    """

    kind: Literal["command"]
    command: list[str] = Field(min_length=1)
    timeout_s: float = Field(default=60, gt=0)


class HttpRouter(_Router):
    """POST {"service", "weight", "stable_weight", "canary_version"} to a control-plane URL."""

    kind: Literal["http"]
    url: str = Field(pattern=r"^https?://")
    headers: dict[str, str] = Field(default_factory=dict)
    timeout_s: float = Field(default=10, gt=0)


RouterConfig = Annotated[Union[NginxRouter, CommandRouter, HttpRouter], Field(discriminator="kind")]


class CanaryTarget(BaseModel):
    """One service's canary setup: how traffic moves and where each version answers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    router: RouterConfig
    stable_url: str | None = Field(default=None, pattern=r"^https?://", description="stable version, for probes")
    canary_url: str | None = Field(default=None, pattern=r"^https?://", description="canary version, for probes")
    router_url: str | None = Field(default=None, pattern=r"^https?://", description="the service through its router")
    analysis: str | None = Field(default=None, description="The analysis (canary.yaml `analyses`) every canary of "
                                 "this service is judged by at least: a request may tighten it, never loosen it")


class CanaryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prometheus_url: str | None = Field(default=None, pattern=r"^https?://")
    analyses: dict[str, AnalysisTemplate] = Field(
        default_factory=dict, description="Named analyses an administrator sets: a change picks one by name (or its "
        "service requires one) and may only tighten it")
    services: dict[str, CanaryTarget] = Field(default_factory=dict)
    gate_timeout_s: float = Field(
        default=1800, gt=0, le=7 * 86400,
        description="How long a canary gate (a confirm step, an inconclusive analysis) waits for a person before "
        "the canary is rolled back: traffic never stays on an unwatched canary (fail-safe)")
    gate_answerers: list[str] = Field(
        default_factory=lambda: ["requester", "owner", "team_lead", "oncall_primary"],
        description="Who may answer a canary gate (proceed or roll back): `requester`, `owner` (the service's "
        "owners) or roles of the directory")
    watches: dict[str, ServiceWatch] = Field(
        default_factory=dict, description="The post-change watch of each service (policies.yaml `watch`): what is "
        "measured after a change of it is verified. A service not named here is not watched")
    resume_after_crash: bool = Field(
        default=True,
        description="A canary whose run died is sent back to stable at once (the sweep). Its restarted run then "
        "resumes the step it was in from the measurements stored before the crash (true: Argo Rollouts resumes "
        "mid-rollout), or rolls the change back (false)")

    @model_validator(mode="after")
    def _analyses_named_exist(self) -> "CanaryConfig":
        for service, target in self.services.items():
            if target.analysis is not None and target.analysis not in self.analyses:
                raise ValueError(f"services.{service}.analysis: no analysis named {target.analysis!r}")
        for service, watch in self.watches.items():
            template = self.analyses.get(watch.analysis)
            if template is None:
                raise ValueError(f"watches.{service}.analysis: no analysis named {watch.analysis!r}")
            if watch.url is None and any(m.provider == "http_probe" for m in template.metrics):
                raise ValueError(f"watches.{service}.url: the analysis {watch.analysis!r} has http_probe metrics, "
                                 "which need a URL to send requests to")
            if any(m.provider == "prometheus" for m in template.metrics) and not self.prometheus_url:
                raise ValueError(f"watches.{service}: the analysis {watch.analysis!r} has prometheus metrics, "
                                 "which need prometheus_url")
        return self

    def watch_for(self, service: str) -> tuple[ServiceWatch, AnalysisTemplate] | None:
        """The watch of `service` and the analysis it measures by, or None: the service is not watched."""
        watch = self.watches.get(service)
        return None if watch is None else (watch, self.analyses[watch.analysis])

    def with_analysis(self, service: str, plan: CanaryPlan) -> tuple[CanaryPlan, list[FieldProblem]]:
        """The plan as it will be judged: its service's required analysis, or the one it names, with the template's
        metrics when the plan gives none; and what in it loosens that analysis (each refused, naming the field).
        The result is what the change records: the analysis used and the limits applied."""
        target = self.services.get(service)
        required = target.analysis if target is not None else None
        name = plan.analysis or required
        if name is None:
            return plan, []
        if required is not None and plan.analysis not in (None, required):
            return plan, [FieldProblem("canary.analysis", f"{service!r} is judged by the analysis {required!r} "
                                                          f"(canary.yaml), not {plan.analysis!r}")]
        template = self.analyses.get(name)
        if template is None:
            known = ", ".join(sorted(self.analyses)) or "none configured"
            return plan, [FieldProblem("canary.analysis", f"no analysis named {name!r} (known: {known})")]
        # A run form posts the default metrics as they stand: those are not the requester's own.
        own = "metrics" in plan.model_fields_set and plan.metrics != _default_metrics()
        metrics = plan.metrics if own else [m.model_copy() for m in template.metrics]
        judged = plan.model_copy(update={"analysis": name, "metrics": metrics})
        return judged, loosened(name, template, metrics)

    def check_plan(self, service: str, plan: CanaryPlan) -> list[FieldProblem]:
        """What stops `plan` from running on `service`, as field-named problems (empty: it can run)."""
        target = self.services.get(service)
        if target is None:
            return [FieldProblem("canary", f"no traffic router is configured for service {service!r} (canary.yaml)")]
        problems: list[FieldProblem] = []
        if plan.uses("prometheus") and not self.prometheus_url:
            problems.append(FieldProblem("canary.metrics", "a prometheus metric needs prometheus_url in canary.yaml"))
        if plan.uses("http_probe") and plan.probe_through_router and not target.router_url:
            problems.append(FieldProblem("canary.probe_through_router",
                                         f"needs router_url for {service!r} in canary.yaml"))
        elif plan.uses("http_probe") and not plan.probe_through_router and not target.canary_url:
            problems.append(FieldProblem("canary.metrics",
                                         f"http_probe needs canary_url for {service!r} in canary.yaml"))
        if plan.comparison.enabled and not (target.canary_url and target.stable_url):
            problems.append(FieldProblem("canary.comparison",
                                         f"needs stable_url and canary_url for {service!r} in canary.yaml"))
        return problems

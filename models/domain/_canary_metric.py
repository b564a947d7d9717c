"""One analysed metric of a canary, as a request or an administrator's analysis template writes it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ._canary import MetricRule, OnMissing

PROBE_QUERIES = ("error_rate", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms")


class CanaryMetric(BaseModel):
    """One analysed metric. The canary fails this metric when `value <operator> threshold`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$", description="Name shown in the analysis (error_rate).")
    provider: Literal["http_probe", "prometheus"] = Field(
        default="http_probe",
        description="http_probe: requests sent by changeflow each interval; prometheus: a PromQL query.",
    )
    query: str = Field(
        min_length=1, max_length=2000,
        description="http_probe: error_rate, latency_p50_ms, latency_p95_ms or latency_p99_ms. prometheus: PromQL, "
        "with {service}, {version} and {interval} filled in (e.g. an error ratio for version=\"{version}\").",
    )
    range_query: bool = Field(
        default=False, description="prometheus only: a range query over the interval; the worst point counts."
    )
    operator: Literal["<", "<=", ">", ">="] = Field(default=">", description="Failure condition operator.")
    threshold: float = Field(description="Failure condition: value <operator> threshold (0.05 = 5 % errors).")
    failure_limit: int = Field(default=2, ge=1, le=1000, description="Failed measurements in a step before rollback.")
    inconclusive_limit: int = Field(
        default=3, ge=1, le=1000, description="Missing or errored measurements in a step before pausing for a person."
    )
    on_missing: OnMissing = Field(
        default="inconclusive", description="What an interval with no data counts as (Prometheus: no series): "
        "inconclusive (a person is asked past the limit), fail (counts toward a rollback) or pass. A provider "
        "error is always inconclusive.")

    @model_validator(mode="after")
    def _query_fits_provider(self) -> "CanaryMetric":
        if self.provider == "http_probe" and self.query not in PROBE_QUERIES:
            raise ValueError(f"query: the http_probe provider measures one of {', '.join(PROBE_QUERIES)}, "
                             f"not {self.query!r}")
        if self.provider == "http_probe" and self.range_query:
            raise ValueError("range_query: only the prometheus provider has range queries")
        return self

    def rule(self) -> MetricRule:
        return MetricRule(name=self.name, operator=self.operator, threshold=self.threshold,
                          failure_limit=self.failure_limit, inconclusive_limit=self.inconclusive_limit,
                          on_missing=self.on_missing)

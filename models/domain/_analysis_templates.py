"""Analysis templates (issue 33): an administrator names how a service's canaries are judged (canary.yaml
`analyses:`), and a change that picks one, or rolls out on a service that requires one, may only tighten it. The
requester used to write every threshold in the request; now a floor holds whatever the request says.

Pure rules: what the template is, and what in a plan loosens it, named field by field."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ._canary import ON_MISSING_STRICTNESS
from ._canary_metric import CanaryMetric
from ._errors import FieldProblem



class AnalysisTemplate(BaseModel):
    """Named metrics with their limits: the least a canary of a service that uses it is judged by."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = Field(default="", max_length=500)
    metrics: list[CanaryMetric] = Field(min_length=1, max_length=20)

    @model_validator(mode="after")
    def _unique(self) -> "AnalysisTemplate":
        names = [m.name for m in self.metrics]
        if len(set(names)) != len(names):
            raise ValueError("metrics: names must be unique")
        return self


def _stricter_threshold(operator: str, plan: float, floor: float) -> bool:
    """The plan fails the canary at least whenever the template would: for `>`/`>=` (fail above) a threshold no
    higher, for `<`/`<=` (fail below) one no lower."""
    return plan <= floor if operator in (">", ">=") else plan >= floor


def loosened(name: str, template: AnalysisTemplate, metrics: list[CanaryMetric]) -> list[FieldProblem]:
    """What in `metrics` judges a canary more leniently than the template `name` does (empty: it only tightens).
    Metrics the template does not name are the plan's own, and only add to it."""
    problems: list[FieldProblem] = []
    by_name = {m.name: m for m in metrics}
    for floor in template.metrics:
        field = f"canary.metrics.{floor.name}"
        given = by_name.get(floor.name)
        if given is None:
            problems.append(FieldProblem("canary.metrics", f"the analysis {name!r} measures {floor.name}: the plan "
                                                           "may add metrics, not leave one out"))
            continue
        if (given.provider, given.query, given.range_query, given.operator) != (
                floor.provider, floor.query, floor.range_query, floor.operator):
            problems.append(FieldProblem(field, f"measured differently from the analysis {name!r} ({floor.provider} "
                                                f"{floor.query!r}, fails when {floor.operator} {floor.threshold:g})"))
            continue
        if not _stricter_threshold(floor.operator, given.threshold, floor.threshold):
            bound = "at most" if floor.operator in (">", ">=") else "at least"
            problems.append(FieldProblem(f"{field}.threshold", f"{given.threshold:g} loosens the analysis {name!r} "
                                                               f"({bound} {floor.threshold:g})"))
        for limit in ("failure_limit", "inconclusive_limit"):
            if getattr(given, limit) > getattr(floor, limit):
                problems.append(FieldProblem(f"{field}.{limit}", f"{getattr(given, limit)} loosens the analysis "
                                                                 f"{name!r} (at most {getattr(floor, limit)})"))
        if ON_MISSING_STRICTNESS[given.on_missing] < ON_MISSING_STRICTNESS[floor.on_missing]:
            problems.append(FieldProblem(f"{field}.on_missing", f"{given.on_missing!r} loosens the analysis {name!r} "
                                                                f"({floor.on_missing!r} or stricter)"))
    return problems

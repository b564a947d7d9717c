"""The run form of the change-request deployment: the change request model, shaped for the Prefect UI."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict

from models import ChangeflowError, ChangeRequestInput, Settings, load_policies


def shape_run_form(schema: dict[str, Any]) -> None:
    """The run form as a requester should meet it.

    The risk questionnaire is shown open, every question unanswered (issue 30): as an optional field Prefect drew
    it as a choice between "RiskAnswers" and "None", with None chosen. It stays optional in the schema, so a form
    that leaves the whole section out still reaches the services, which refuse it naming `risk`; a section with
    a question left out is refused by Prefect before any run exists, naming the question.

    The `type` and `environment` are drop-downs of the change types and environments in the deploying worker's
    policies.yaml (read when the deployment is made, so a new one in the YAML appears at the next `changeflow up` /
    deploy)."""
    risk = schema["properties"]["risk"]
    reference = next((choice for choice in risk.pop("anyOf", []) if "$ref" in choice), None)
    if reference is not None:
        risk.pop("default", None)
        risk.update(reference)
    try:
        policies = load_policies(Settings().config_dir / "policies.yaml")
    except (ChangeflowError, OSError):
        return  # no config yet: a free-text field, checked by the service at submit
    schema["properties"]["type"]["enum"] = list(policies.types)
    # The environments the same way, the first (production, the strictest) chosen: a requester who skips the field
    # files for production, never for a place with fewer controls.
    environment = schema["properties"]["environment"]
    environment.pop("anyOf", None)
    environment.update({"type": "string", "enum": list(policies.environments),
                        "default": policies.default_environment})


class ChangeRequestForm(ChangeRequestInput):
    """A change request as the Prefect run form asks for it."""

    model_config = ConfigDict(json_schema_extra=shape_run_form)

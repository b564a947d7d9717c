"""The run form of `change-request/submit` offers what the config knows (issue 17): change type, requester,
service, template, checklist and runbook become drop-downs in the Prefect UI, and the server, which enforces a
deployment's parameter schema, refuses anything else (an unknown requester such as `zoe`) before a run exists.

The flow's signature cannot know the organisation's YAML, so the schema `prefect deploy` generated is narrowed
here, each time `changeflow up` (or the demo) deploys, from the config it runs with."""

from __future__ import annotations

from typing import Any

import httpx

from models import Org

SUBMIT = "change-request/submit"


def _choices(field: dict[str, Any], values: list[str]) -> None:
    """A string field (or an optional one: anyOf string / null) becomes one of `values`."""
    if "anyOf" in field:
        field["anyOf"] = [{"type": "string", "enum": values}] + [o for o in field["anyOf"] if o.get("type") == "null"]
        return
    field.pop("pattern", None)
    field["enum"] = values


def narrow_run_form(api_url: str, org: Org, auth_string: str | None = None) -> dict[str, list[str]]:
    """Patch the submit deployment's parameter schema; returns the choices it set. `auth_string`: the
    `user:password` of a server that requires basic auth."""
    auth = httpx.BasicAuth(*auth_string.split(":", 1)) if auth_string else None
    deployment = httpx.get(f"{api_url}/deployments/name/{SUBMIT}", timeout=10, auth=auth)
    deployment.raise_for_status()
    body = deployment.json()
    schema = body["parameter_openapi_schema"]
    form = schema["definitions"]["ChangeRequestForm"]["properties"]
    choices = {
        "type": sorted(org.policies.types),
        "requester": sorted([*org.directory.people, *org.directory.automations]),
        "service": sorted(org.directory.services),
        "template": sorted(org.templates),
        "checklist": sorted(org.checklists),
        "runbook": sorted(org.runbooks),
    }
    for name, values in choices.items():
        if name in form and values:
            _choices(form[name], values)
    patched = httpx.patch(f"{api_url}/deployments/{body['id']}", json={"parameter_openapi_schema": schema},
                          timeout=10, auth=auth)
    patched.raise_for_status()
    return choices

"""A run is its change (issue 30): the Runs list shows `CHG-000123 <title>` instead of Prefect's random name, with
tags for type, service and risk, from the moment the change is recorded; a resumed run keeps them."""

from __future__ import annotations

import asyncio
from uuid import UUID

import pytest
from prefect import get_client

from tests.flows.test_flows import awaiting, submit
from tests.helpers import standard_request, wait_until

pytestmark = pytest.mark.flows


def run_name_and_tags(run_id: str) -> tuple[str, list[str]]:
    async def read():
        async with get_client() as client:
            return await client.read_flow_run(UUID(run_id))

    run = asyncio.run(read())
    return run.name, run.tags


def test_a_run_is_named_for_its_change_and_tagged_with_its_facets_and_keeps_them_when_resumed(flow_stack):
    title = "Upgrade the payments API to 2.4, then " + "every node one by one " * 6  # longer than a name shows
    run_id = submit(standard_request(title=title, service="run-names"), confirm=False)
    before = run_name_and_tags(run_id)[0]
    change = flow_stack.wait_for(run_id, lambda c: True, what="the change recorded")
    wait_until(lambda: run_name_and_tags(run_id)[0].startswith(change.key), 30, "the run renamed")
    name, tags = run_name_and_tags(run_id)
    assert before != name and not before.startswith("CHG-"), "Prefect's own name until the change exists"
    assert name == f"{change.key} {title}"[:120].rstrip() and len(name) <= 120
    assert {"type:standard", "service:run-names", f"risk:{change.risk_level}", "changeflow"} <= set(tags)

    # The requester confirms in the Resume form: the run starts again from the top and records nothing twice,
    # its name and tags included.
    awaiting(flow_stack, run_id)
    name_after, tags_after = run_name_and_tags(run_id)
    assert (name_after, sorted(tags_after)) == (name, sorted(tags)) and len(tags_after) == len(set(tags_after))

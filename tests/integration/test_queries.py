"""The change-log query layer: filters with hostile input, keyset pages, approver filter."""

from __future__ import annotations

import json

import pytest

from pydantic import ValidationError

from models import ChangeFilter, InputError
from tests.helpers import approve, standard_request

HOSTILE = ["O'Brien's \"quoted\" change", "100% done", "snake_case_title", "'; DROP TABLE change_requests; --",
           "SELECT * FROM audit_events", "back\\slash"]


@pytest.fixture
def titled(services):
    keys = {title: services.changes.submit(standard_request(title=title)).key for title in HOSTILE + ["plain change"]}
    return services, keys


@pytest.mark.parametrize("title", HOSTILE)
def test_text_filter_matches_hostile_titles_literally(titled, title):
    services, keys = titled
    found = [c.key for c in services.changes.query(ChangeFilter(text=title)).items]
    assert found == [keys[title]]


def test_wildcards_are_not_wildcards(titled):
    services, keys = titled
    assert [c.key for c in services.changes.query(ChangeFilter(text="%")).items] == [keys["100% done"]]
    assert [c.key for c in services.changes.query(ChangeFilter(text="_case_")).items] == [keys["snake_case_title"]]
    assert services.changes.query(ChangeFilter(text="O_Brien")).items == [], "_ must not match the apostrophe"


def test_hostile_values_in_exact_filters_match_nothing(titled):
    services, _ = titled
    for value in ("' OR '1'='1", "payments'; --", "x" * 100):
        assert services.changes.query(ChangeFilter(service=value)).items == []
        assert services.changes.query(ChangeFilter(requester=value)).items == []
    assert len(services.changes.query(ChangeFilter(service="payments")).items) == len(HOSTILE) + 1


def test_keyset_pages_cover_everything_once(services):
    keys = [services.changes.submit(standard_request(title=f"change {i}")).key for i in range(23)]
    seen, cursor = [], None
    while True:
        page = services.changes.query(ChangeFilter(), limit=5, after=cursor)
        seen += [c.key for c in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == list(reversed(keys))


def test_approver_filter(services):
    first = services.approvals.request_approval(services.changes.submit(standard_request(title="a")).key)
    second = services.approvals.request_approval(services.changes.submit(standard_request(title="b")).key)
    approve(services, first.key, "alice")
    approve(services, second.key, "frank")
    assert [c.key for c in services.changes.query(ChangeFilter(approver="alice")).items] == [first.key]


@pytest.mark.parametrize(("args", "message"), [
    (["--text", "x" * 10_000], "--text: String should have at most 200 characters"),
    (["--since", "2026-13-45"], "--since: '2026-13-45' is not a date"),
    (["--until", "next tuesday"], "--until: 'next tuesday' is not a date"),
    (["--after", "not-a-cursor"], "--after: not a cursor"),
    (["--service", "y" * 10_000], "--service: String should have at most 100 characters"),
])
def test_bad_filters_exit_2_with_a_clear_message(cli_env, args, message):
    result = cli_env("log", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output and "SQL" not in result.stderr


def test_hostile_filters_on_the_cli_give_results_not_errors(cli_env, services):
    services.changes.submit(standard_request(title="50% rollout of payments_v2"))
    for text in ("%", "_v2", "'; DELETE FROM change_requests; --", "\\"):
        result = cli_env("log", "--text", text, "--format", "json")
        assert result.exit_code == 0, result.output
    assert [r["title"] for r in json.loads(cli_env("log", "--text", "%", "--format", "json").stdout)] == [
        "50% rollout of payments_v2"]


def test_filter_model_refuses_unknown_fields():
    with pytest.raises(ValidationError, match="colour"):
        ChangeFilter(colour="blue")
    with pytest.raises(InputError):
        from models import decode_cursor

        decode_cursor("!!!")

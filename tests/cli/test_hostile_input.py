"""Hypothesis throws generated request files and `log` options at the CLI: every run exits 0 or 2, an exit 2 names
what was wrong, nothing is ever a traceback, and nothing is written on exit 2 (issue 16, "Bad input")."""

from __future__ import annotations

import base64
import os
from datetime import datetime, timedelta, timezone

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from tests.cli.test_cli import GOOD

pytestmark = pytest.mark.slow

# 2,000 examples each on SQLite; PostgreSQL (where a NUL byte once crashed) gets 500, to keep CI short.
EXAMPLES = int(os.environ.get("HOSTILE_EXAMPLES", 2000))


def hostile(db) -> settings:
    examples = EXAMPLES if db.url.startswith("sqlite") else max(EXAMPLES // 4, 1)
    return settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])


_dates = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                      timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=14)),
                                                 timezone(timedelta(hours=-12))]))
_text = st.one_of(st.text(max_size=40), st.sampled_from(["\x00", "a\x00b", "\ud7ff", "'; DROP TABLE x; --", " ", "",
                                                         "1733450400", "-1", "0", "9999-12-31T23:00:00Z",
                                                         "0001-01-01T00:00:00Z", "2026-12-06T02:00:00+14:00"]))
_scalar = st.one_of(_text, st.integers(min_value=-(2**70), max_value=2**70), st.booleans(), st.none(),
                    st.floats(allow_nan=True, allow_infinity=True), st.binary(max_size=8),
                    _dates.map(lambda d: d.isoformat()), _dates)
_value = st.recursive(_scalar, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                      st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=8)
_fields = st.sampled_from(["type", "title", "service", "requester", "description", "impact", "implementation_plan",
                           "rollback_plan", "test_evidence", "planned_start", "planned_end", "incident_id",
                           "incident_severity", "risk", "template", "checklist", "canary", "colour"])
_request = st.dictionaries(_fields, _value, max_size=4).map(lambda bad: {**GOOD, **bad})
_documents = st.one_of(
    _request.map(lambda r: yaml.safe_dump(r, allow_unicode=True)),
    st.integers(min_value=1, max_value=5000).map(lambda depth: "a: " + "[" * depth + "]" * depth),
    st.integers(min_value=1, max_value=5000).map(lambda depth: "{a: " * depth + "1" + "}" * depth),
    st.text(max_size=200),
    st.sampled_from(["a: &x [*x]", "a: !!python/object:os.system {}", "title: !!binary aGVsbG8=", "---\n---\n"]),
)


def _rows(db) -> tuple[int, int]:
    with db.read() as session:
        return (session.execute(text("SELECT COUNT(*) FROM change_requests")).scalar_one(),
                session.execute(text("SELECT COUNT(*) FROM audit_events")).scalar_one())


def _clean(result) -> None:
    assert result.exit_code in (0, 2), (result.exit_code, result.output[-2000:], repr(result.exception))
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output


def test_a_generated_request_file_exits_0_or_2_naming_the_field_and_writes_nothing_on_2(cli_env, db, tmp_path):
    path = tmp_path / "request.yaml"

    @hostile(db)
    @given(document=_documents)
    def check(document: str) -> None:
        path.write_text(document, encoding="utf-8", errors="surrogatepass")
        before = _rows(db)
        result = cli_env("submit", "--local", path)
        _clean(result)
        if result.exit_code == 2:
            assert _rows(db) == before, "a refused request wrote something"
            assert ": " in result.stderr and len(result.stderr) < 5000

    check()


def _cursor(at: str, change_id: str) -> str:
    return base64.urlsafe_b64encode(f"{at}|{change_id}".encode()).decode().rstrip("=")


_log_values = {
    "--after": st.one_of(_text, st.builds(_cursor, st.one_of(_dates.map(lambda d: d.isoformat()), _text),
                                          st.one_of(st.integers(-(2**80), 2**80).map(str), _text))),
    "--since": st.one_of(_text, _dates.map(lambda d: d.isoformat())),
    "--until": st.one_of(_text, _dates.map(lambda d: d.isoformat())),
    "--limit": st.one_of(st.integers(-(2**70), 2**70).map(str), _text),
    "--service": _text, "--text": _text, "--state": _text, "--type": _text, "--requester": _text,
}


_log_options = st.dictionaries(st.sampled_from(sorted(_log_values)), st.none(), min_size=1, max_size=4).flatmap(
    lambda keys: st.fixed_dictionaries({k: _log_values[k] for k in keys}))


def test_generated_log_options_exit_0_or_2(cli_env, db):
    @hostile(db)
    @given(options=_log_options)
    def check(options: dict[str, str]) -> None:
        args = [part for name, value in options.items() for part in (name, value)]
        before = _rows(db)
        result = cli_env("log", "--json", *args)
        _clean(result)
        assert _rows(db) == before

    check()


def test_the_shapes_that_crashed_before_now_name_their_field(cli_env, tmp_path):
    """The cases of issue 16, each a field-named exit 2."""
    cases = {
        "planned_start: give a date and time": {**GOOD, "planned_start": "1733450400"},
        "planned_start: give a date and time ": {**GOOD, "planned_start": -1},
        "planned_start: must be between": {**GOOD, "planned_start": "0001-01-01T00:00:00Z"},
        "planned_end: must be between": {**GOOD, "planned_start": "2026-12-06T02:00:00Z",
                                         "planned_end": "9999-12-31T23:00:00Z"},
        "title: contains a NUL character": {**GOOD, "title": "a\x00b"},
        "title: Input should be a valid string": {**GOOD, "title": b"binary"},
    }
    for message, request in cases.items():
        path = tmp_path / "request.yaml"
        path.write_text(yaml.safe_dump(request))
        result = cli_env("submit", "--local", path)
        assert result.exit_code == 2 and message.strip() in result.stderr, (message, result.output)
    deep = tmp_path / "deep.yaml"
    deep.write_text("a: " + "[" * 1000 + "]" * 1000)
    result = cli_env("submit", "--local", deep)
    assert result.exit_code == 2, result.output
    assert "nesting depth" in result.stderr or "nested deeper" in result.stderr, result.output
    for change_id in (2**80, 2**31):  # (2**31: past PostgreSQL's INTEGER, found by the generated test)
        huge = cli_env("log", "--after", _cursor("2026-01-01T00:00:00+00:00", str(change_id)))
        assert huge.exit_code == 2 and "--after" in huge.stderr

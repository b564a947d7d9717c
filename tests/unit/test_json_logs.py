"""JSON logs (issue 31): one object per record, on one line even with a traceback, with the change's key and the
flow run's id as trace fields."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from flows import JsonLines, prefect_logging_env, trace_change


def record(message: str, **extra) -> logging.LogRecord:
    made = logging.LogRecord("prefect.flow_runs", logging.INFO, __file__, 1, message, (), None)
    made.__dict__.update(extra)
    return made


@pytest.fixture
def untraced():
    trace_change(None)
    yield
    trace_change(None)


def test_a_run_named_for_its_change_is_traced_to_it(untraced):
    line = JsonLines().format(record("Finished in state Closed", flow_run_id="1f2c",
                                     flow_run_name="CHG-000123 Restart"))
    parsed = json.loads(line)
    assert (parsed["change"], parsed["flow_run_id"], parsed["level"], parsed["message"]) == (
        "CHG-000123", "1f2c", "INFO", "Finished in state Closed")
    assert "change" not in json.loads(JsonLines().format(record("a worker's record"))), "no run, no change"


def test_a_process_that_knows_its_change_traces_every_record_and_a_traceback_stays_on_one_line(untraced):
    trace_change("CHG-000007")
    try:
        raise ValueError("boom")
    except ValueError:
        failed = record("step failed", flow_run_id="9a", flow_run_name="cheerful-otter", exc_info=sys.exc_info())
    line = JsonLines().format(failed)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["change"] == "CHG-000007" and "ValueError: boom" in parsed["exception"]


def test_only_the_json_format_points_prefect_at_its_logging_file():
    assert prefect_logging_env("text") == {}
    (path,) = prefect_logging_env("json").values()
    import yaml

    setup = yaml.safe_load(open(path).read())
    assert path.endswith("logging-json.yml") and setup["formatters"]["json_lines"]["()"] == "flows._json_logs.JsonLines"
    # Prefect's handler, whose console exits on a broken pipe: a run whose worker was killed must die at its next
    # line of output (docs/crash-safety.md; five kill tests failed with a plain StreamHandler).
    assert setup["handlers"]["console"]["class"] == "prefect.logging.handlers.PrefectConsoleHandler"
    assert setup["handlers"]["console"]["formatter"] == "json_lines"

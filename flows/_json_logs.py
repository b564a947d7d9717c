"""JSON logs (issue 31): with `CHANGEFLOW_LOG_FORMAT=json`, every process changeflow starts on Prefect (server,
worker, flow runs) writes one JSON object per line to its console, with the change's key and the flow run's id as
trace fields, for a log shipper to index. Prefect reads its logging setup once per process from the file
`PREFECT_LOGGING_SETTINGS_PATH` names (`logging-json.yml` beside this module): the stack and `changeflow worker`
set it before Prefect is imported, and flow runs inherit it."""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime, timezone
from pathlib import Path

LOGGING_SETTINGS = Path(__file__).with_name("logging-json.yml")
# A change's run is named for its change (issue 30): `CHG-000123 Restart payments`.
_CHANGE_IN_NAME = re.compile(r"^(CHG-\d{6})\b")


def prefect_logging_env(log_format: str) -> dict[str, str]:
    """What a process's environment needs for `log_format` (`json`: this module's logging setup; `text`: none)."""
    return {"PREFECT_LOGGING_SETTINGS_PATH": str(LOGGING_SETTINGS)} if log_format == "json" else {}


# The change this process's flow run drives, once it is known: a flow-run process runs one flow run (warm ones
# too), and its logger keeps the run's first name, given before the run was renamed for its change.
_current_change: str | None = None


def trace_change(key: str | None) -> None:
    """From here on, this process's records carry `change: key` (None: no change)."""
    global _current_change
    _current_change = key


class JsonLines(logging.Formatter):
    """One JSON object per record: when, level, logger, message, and the trace fields a flow run's records carry
    (`flow_run_id`, `flow_run_name`, `task_run_id`, and `change` when the run is a change's). An exception goes in
    `exception` as text, so a line never spans two."""

    def format(self, record: logging.LogRecord) -> str:
        fields = record.__dict__
        run_name = fields.get("flow_run_name")
        change = _CHANGE_IN_NAME.match(run_name) if isinstance(run_name, str) else None
        line = {
            "at": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "change": _current_change or (change.group(1) if change else None),
            "flow_run_id": _text(fields.get("flow_run_id")),
            "flow_run_name": run_name,
            "task_run_id": _text(fields.get("task_run_id")),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps({key: value for key, value in line.items() if value is not None}, default=str)


def _text(value: object) -> str | None:
    return None if value is None else str(value)

"""Prefect flows: thin orchestration over `models/` and `notifications/`. The CLI reaches a flow run only
through the helpers exported here (resume a suspended gate, read its pause key, cancel it).

Loaded on first use: Prefect reads its settings once, when first imported, so importing `flows` (for the
traffic routers, say) must not import Prefect before a caller such as the demo has set PREFECT_API_URL."""

from __future__ import annotations

from typing import Any

_HOMES = {"ResumeRefused": "_prefect_api", "cancel": "_prefect_api", "paused_key": "_prefect_api",
          "paused_keys": "_prefect_api",
          "resume_with_input": "_prefect_api", "run_state": "_prefect_api", "stop": "_prefect_api",
          "nudge_suspended_run": "_prefect_api", "forget_answer": "_prefect_api",
          "work_gate": "_manual", "GateKind": "_pause_key", "PauseKey": "_pause_key",
          "anchored_checkpoints": "_anchors", "run_worker": "_launcher", "health_report": "_health",
          "start_launcher": "_launcher",
          "LAUNCHER_ENV": "_engine_client", "ENGINE_CLIENT": "_engine_client",
          "prefect_logging_env": "_json_logs", "JsonLines": "_json_logs",
          "trace_change": "_json_logs", "file_change": "_filing", "start_change_flow": "_filing",
          "PrefectUnavailable": "_filing", "SUBMIT_DEPLOYMENT": "_filing", "stop_run": "_calling_off",
          "Stopped": "_calling_off", "cancel_run": "_calling_off", "end_run_of": "_calling_off"}
__all__ = list(_HOMES)


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        from importlib import import_module

        return getattr(import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(name)

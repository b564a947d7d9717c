"""Prefect flows: thin orchestration over `models/` and `notifications/`. The CLI reaches a flow run only
through the helpers exported here (resume a suspended gate, read its pause key, cancel it).

Loaded on first use: Prefect reads its settings once, when first imported, so importing `flows` (for the
traffic routers, say) must not import Prefect before a caller such as the demo has set PREFECT_API_URL."""

from __future__ import annotations

from typing import Any

__all__ = ["ResumeRefused", "cancel", "paused_key", "resume_with_input", "run_state"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import _prefect_api

        return getattr(_prefect_api, name)
    raise AttributeError(name)

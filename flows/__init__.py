"""Prefect flows: thin orchestration over `models/` and `notifications/`. The CLI reaches a flow run only
through the helpers exported here (resume a suspended gate, read its pause key, cancel it)."""

from ._prefect_api import ResumeRefused, cancel, paused_key, resume_with_input

__all__ = ["ResumeRefused", "cancel", "paused_key", "resume_with_input"]

"""Prefect flows: thin orchestration over `models/` and `notifications/`."""

"""Flow tests: the real flows on a real Prefect server and runner, started once per session."""

from __future__ import annotations

import tests.prefect_env  # noqa: F401  (first: fixes Prefect's address before anything imports Prefect)

import pytest

from tests.flow_stack import SHARED


@pytest.fixture(scope="session")
def flow_stack(tmp_path_factory):
    """Prefect server + runner serving our deployments, shared by every test that needs one (~15 s to start)."""
    stack = SHARED.acquire(tmp_path_factory)
    try:
        yield stack
    finally:
        SHARED.release()

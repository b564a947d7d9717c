"""The Prefect client settings of a test session, for the folders whose tests talk to a Prefect server.

Prefect reads its settings once, when first imported, and threads do not inherit temporary_settings(): so the
conftest of each such folder imports this module first, before anything imports Prefect. It fixes the address
of the session's one server and never lets Prefect fall back to a temporary server.
"""

from __future__ import annotations

import os
import tempfile

from cli.dev import free_port  # (imports no Prefect)

FLOW_STACK_PORT = free_port()
os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{FLOW_STACK_PORT}/api"
os.environ["PREFECT_SERVER_ALLOW_EPHEMERAL_MODE"] = "false"
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="changeflow-test-prefect-"))

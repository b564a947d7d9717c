"""The flow stack a benchmark measures against: a Prefect server, a worker and a changeflow HOME of its own, as the
flows tests start them (tests/flow_stack.py). Started before anything imports Prefect, which reads its address
once, on first import."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from cli.dev import free_port


def start_bench_stack(prefix: str) -> tuple[Path, Any]:
    """A scratch folder and the stack running in it (`tests.flow_stack.FlowStack`); this process talks to it."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    port = free_port()
    os.environ.update({"PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "PREFECT_HOME": str(root / "prefect"),
                       "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
    from tests.flow_stack import SHARED, start_flow_stack
    from tests.helpers import SECRET

    stack = start_flow_stack(root, port)
    SHARED.stack = stack  # what submit() confirms filings through, as under the flow_stack fixture
    os.environ.update({"CHANGEFLOW_HOME": str(stack.home), "CHANGEFLOW_SECRET": SECRET.decode()})
    return root, stack

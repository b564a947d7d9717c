"""Flow tests: the real flows on a real Prefect server and worker, started once per session."""

from __future__ import annotations

import tests.prefect_env  # noqa: F401  (first: fixes Prefect's address before anything imports Prefect)
from tests.flow_stack import flow_stack  # noqa: F401, E402  (one stack per session, shared with the other folder)

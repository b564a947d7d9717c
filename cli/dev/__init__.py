"""Developer tooling, apart from the product commands: local Prefect stacks (server, runner, worker), the
canary lab (the sample service behind nginx and Prometheus) and the whole-story demo. `changeflow up`,
`changeflow demo`, the tests and the benchmarks start everything through these."""

from ._canary_lab import (
    PROMQL_ERROR_RATE,
    PROMQL_P95_MS,
    Lab,
    SampleVersion,
    TrafficLoad,
    prometheus_available,
)
from ._compressed_time import compress_notice
from ._demo import play_demo, run_demo
from ._distributed import DistributedLayout, missing_pieces, start_distributed_server, start_workers
from ._nginx import nginx_available
from ._requester import confirm_filing_in_form, filed_change
from ._scale_load import (
    ReplicaClient,
    Tally,
    UpProcess,
    drive_to_the_end,
    open_release_window,
    steps_run,
    submit_changes,
    up_environment,
    write_scale_config,
)
from ._stack import (
    FAST_POLLING,
    REPO_ROOT,
    WORK_POOL,
    Stack,
    create_pool_and_deploy,
    free_port,
    install_automations,
    port_in_use,
    prefect_env,
    start_endpoint,
    start_server,
    start_worker,
    wait_for_deployments,
    wait_healthy,
    zombie_automations,
)

__all__ = [
    "FAST_POLLING", "PROMQL_ERROR_RATE", "PROMQL_P95_MS", "REPO_ROOT", "WORK_POOL", "DistributedLayout", "Lab",
    "ReplicaClient", "SampleVersion", "Stack", "Tally", "TrafficLoad", "UpProcess", "compress_notice",
    "confirm_filing_in_form",
    "create_pool_and_deploy", "filed_change", "install_automations",
    "drive_to_the_end", "free_port", "missing_pieces", "nginx_available", "open_release_window", "play_demo",
    "port_in_use", "prefect_env", "prometheus_available", "run_demo", "start_distributed_server", "start_endpoint",
    "start_server", "start_worker", "start_workers", "steps_run", "submit_changes",
    "up_environment", "wait_for_deployments", "wait_healthy", "write_scale_config", "zombie_automations",
]

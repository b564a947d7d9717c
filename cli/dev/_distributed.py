"""The distributed layout of `changeflow up --distributed` (issue 15): the one Prefect documents for scaling a
self-hosted server ("How to scale self-hosted Prefect"), all on 127.0.0.1 and nothing home-made:

- PostgreSQL holds the Prefect server's own database (`postgresql+asyncpg`), apart from the change records;
- Redis carries Prefect's messaging, event ordering and concurrency leases (prefect-redis), which is what lets
  several API replicas and the background services run as separate processes;
- N replicas of `prefect server start --no-services`, one `prefect server services start`;
- nginx in front of the replicas as the load balancer (Prefect names NGINX or Traefik for it): a replica that
  is down is skipped, and a request it never received goes to the next one;
- N process workers on the `changeflow` pool, each with a concurrency limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from models import settings_from_env

from ._nginx import nginx_available, nginx_binary, write_nginx_conf
from ._stack import WORK_POOL, Stack, _bin, free_port, wait_healthy


@dataclass(frozen=True)
class DistributedLayout:
    prefect_database_url: str
    redis_url: str
    api_replicas: int = 2
    workers: int = 2
    worker_limit: int = 8


def asyncpg_url(url: str) -> str:
    """Prefect's server speaks asyncpg; accept the plain `postgresql://` spelling people copy from psql."""
    for prefix in ("postgresql+psycopg://", "postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix):]
    return url


def missing_pieces(layout: DistributedLayout, change_database_url: str) -> list[tuple[str, str]]:
    """(option, problem) for every piece of the layout that is not there: said before anything starts."""
    problems: list[tuple[str, str]] = []
    if not change_database_url.startswith("postgresql"):
        problems.append(("CHANGEFLOW_DATABASE_URL", "the change records need PostgreSQL in the distributed layout "
                                                    "(several workers write them at once); give postgresql://..."))
    prefect_url = asyncpg_url(layout.prefect_database_url)
    if not prefect_url.startswith("postgresql+asyncpg://"):
        problems.append(("--prefect-database-url", "must be a PostgreSQL URL (postgresql://user@host/prefect)"))
    elif prefect_url.split("://", 1)[1] == change_database_url.split("://", 1)[-1]:
        problems.append(("--prefect-database-url", "must be another database than the change records"))
    else:
        problems += _postgres_problems(layout.prefect_database_url)
    problems += _redis_problems(layout.redis_url)
    if layout.api_replicas < 1 or layout.workers < 1 or layout.worker_limit < 1:
        problems.append(("--api-replicas/--workers/--worker-limit", "must be at least 1"))
    if not nginx_available():
        problems.append(("nginx", "not installed: the load balancer in front of the API replicas "
                                  "(apt-get install nginx-light)"))
    return problems


def _postgres_problems(url: str) -> list[tuple[str, str]]:
    import psycopg

    plain = "postgresql://" + asyncpg_url(url).split("://", 1)[1]
    try:
        with psycopg.connect(plain, connect_timeout=5) as conn:
            version = conn.info.server_version
    except psycopg.Error as exc:
        return [("--prefect-database-url", f"cannot connect: {str(exc).strip().splitlines()[0]}")]
    if version < 140009:
        return [("--prefect-database-url", f"PostgreSQL {version // 10000} is too old: Prefect needs 14.9 or newer")]
    return []


def _redis_problems(url: str) -> list[tuple[str, str]]:
    import redis

    if not url.startswith(("redis://", "rediss://", "unix://")):
        return [("--redis-url", f"{url!r} is not a Redis URL (redis://host:6379/0)")]
    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        return [("--redis-url", f"Redis does not answer at {url}: {exc}")]
    return []


def prefect_server_env(layout: DistributedLayout) -> dict[str, str]:
    """The settings Prefect's scaling guide gives every server process (replicas and services alike)."""
    return {
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": asyncpg_url(layout.prefect_database_url),
        # Migrated once, before the replicas start: replicas migrating at once race each other.
        "PREFECT_SERVER_DATABASE_MIGRATE_ON_START": "false",
        "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
        "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
        "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
        "PREFECT_REDIS_MESSAGING_URL": layout.redis_url,
        "PREFECT_SERVER_DOCKET_URL": layout.redis_url,
    }


def start_distributed_server(stack: Stack, layout: DistributedLayout, port: int, logs: Path,
                             host: str = "127.0.0.1") -> list[int]:
    """Migrate Prefect's database, start the replicas, the services and nginx on host:port; returns the
    replicas' ports (on 127.0.0.1: only nginx faces others). The stack's API URL is nginx's."""
    server_env = prefect_server_env(layout)
    stack.env.update(server_env)
    migrated = stack.run([_bin("prefect"), "server", "database", "upgrade", "-y"])
    if migrated.returncode != 0:
        raise RuntimeError(f"migrating Prefect's database failed:\n{migrated.stdout}{migrated.stderr}")
    replica_ports = [free_port() for _ in range(layout.api_replicas)]
    for number, replica_port in enumerate(replica_ports, start=1):
        process = stack.spawn([_bin("prefect"), "server", "start", "--no-services", "--host", "127.0.0.1",
                               "--port", str(replica_port)], logs / f"prefect-api-{number}.log", name=f"api-{number}")
        wait_healthy(f"http://127.0.0.1:{replica_port}/api",
                     timeout_s=settings_from_env(stack.env).server_start_timeout_s, process=process)
    stack.spawn([_bin("prefect"), "server", "services", "start"], logs / "prefect-services.log", name="services")
    conf = write_lb_conf(logs.parent / "nginx", host, port, replica_ports)
    nginx = stack.spawn([nginx_binary(), "-c", str(conf), "-p", str(conf.parent), "-e",
                         str(conf.parent / "error.log")], logs / "nginx.log", name="load-balancer")
    wait_healthy(stack.api_url, timeout_s=30, process=nginx)
    return replica_ports


def start_workers(stack: Stack, layout: DistributedLayout, logs: Path) -> None:
    for number in range(1, layout.workers + 1):
        stack.spawn([_bin("changeflow"), "worker", "--pool", WORK_POOL, "--limit", str(layout.worker_limit),
                     "--name", f"changeflow-worker-{number}"], logs / f"worker-{number}.log", name=f"worker-{number}")


def write_lb_conf(base: Path, host: str, port: int, replica_ports: list[int]) -> Path:
    servers = "\n".join(f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=5s;" for p in replica_ports)
    # `proxy_next_upstream error timeout`: a request a dead replica never received goes to the next one; nginx
    # passes a POST on only when it could not be sent at all, so nothing that replica wrote is sent twice.
    # Websockets (Prefect's events and logs) need the Upgrade headers passed through.
    return write_nginx_conf(base, f"""
    client_max_body_size 64m;
    # In memory, never in temp files: nginx started by root runs its workers as nobody, who cannot write there.
    client_body_buffer_size 64m;
    proxy_max_temp_file_size 0;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
    upstream prefect_api {{
{servers}
        keepalive 64;
    }}
    server {{
        listen {host}:{port};
        location / {{
            proxy_pass http://prefect_api;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_read_timeout 3600s;
            proxy_next_upstream error timeout http_502 http_503 http_504;
            proxy_next_upstream_tries 3;
        }}
    }}""", foreground=True, worker_connections=4096)

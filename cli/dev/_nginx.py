"""nginx as the stack and the canary lab run it: Debian's binary, and a main configuration whose files all live
under one directory (pid, logs, temp paths), so that several instances run side by side without root's paths."""

from __future__ import annotations

import shutil
from pathlib import Path


def nginx_available() -> bool:
    return shutil.which("nginx") is not None or Path("/usr/sbin/nginx").exists()


def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def write_nginx_conf(base: Path, http_body: str, *, foreground: bool, worker_connections: int) -> Path:
    """`base`/nginx.conf: the process and http settings every instance shares, then `http_body` (upstreams,
    servers) inside the http block. `foreground`: `daemon off`, for a process a supervisor watches."""
    temp = base / "temp"
    temp.mkdir(parents=True, exist_ok=True)
    conf = base / "nginx.conf"
    conf.write_text(f"""
{"daemon off;" if foreground else ""}
worker_processes 1;
pid {base}/nginx.pid;
error_log {base}/error.log warn;
events {{ worker_connections {worker_connections}; }}
http {{
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
{http_body}
}}
""")
    return conf

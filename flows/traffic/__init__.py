"""Traffic routers: move a share of a service's traffic to its canary.

The interface is one method, `set_weight(weight)`, idempotent, raising RouterError when the weight could not
be applied (with the previous weights still in force). One module per kind; `router_for` picks by config.
To plug in your own, add a module with a class like these, a line in `router_for` and a `kind` in
models.domain.RouterConfig.
"""

from __future__ import annotations

from typing import Any

from ._base import Router, RouterError
from .command import CommandRouter
from .http import HttpRouter
from .nginx import NginxRouter


def router_for(config: Any, *, service: str, stable_version: str = "stable", canary_version: str = "canary") -> Router:
    """The registry of router kinds (`router.kind` in canary.yaml): one line per kind."""
    if config.kind == "nginx":
        return NginxRouter(config)
    if config.kind == "command":
        return CommandRouter(config, service=service, stable_version=stable_version, canary_version=canary_version)
    if config.kind == "http":
        return HttpRouter(config, service=service, canary_version=canary_version)
    raise ValueError(f"unknown router kind {config.kind!r}")


__all__ = ["CommandRouter", "HttpRouter", "NginxRouter", "Router", "RouterError", "router_for"]

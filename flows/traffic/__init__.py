"""Traffic routers: move a share of a service's traffic to its canary.

The interface is one method, `set_weight(weight)`, idempotent, raising RouterError when the weight could not
be applied (with the previous weights still in force). One module per kind; `router_for` picks by config.
To plug in your own, add a module with a class like these and a `kind` in models/_canary_plan.RouterConfig.
"""

from __future__ import annotations

from typing import Protocol


class RouterError(Exception):
    """The router refused the new weight; the previous weights are still in force."""


class Router(Protocol):
    def set_weight(self, weight: int) -> dict:
        """Send `weight` % of traffic to the canary (0: none, 100: all); returns evidence for the record."""


def router_for(config, *, service: str, stable_version: str = "stable", canary_version: str = "canary") -> Router:
    if config.kind == "nginx":
        from flows.traffic.nginx import NginxRouter

        return NginxRouter(config)
    if config.kind == "command":
        from flows.traffic.command import CommandRouter

        return CommandRouter(config, service=service, stable_version=stable_version, canary_version=canary_version)
    if config.kind == "http":
        from flows.traffic.http import HttpRouter

        return HttpRouter(config, service=service, canary_version=canary_version)
    raise ValueError(f"unknown router kind {config.kind!r}")

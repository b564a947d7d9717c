"""http: POST the weight to a control plane's URL (a gateway's admin API, a feature-flag service)."""

from __future__ import annotations

import httpx

from ._base import RouterError


class HttpRouter:
    def __init__(self, config, *, service: str, canary_version: str):
        self.config = config
        self.service = service
        self.canary_version = canary_version

    def set_weight(self, weight: int) -> dict:
        body = {"service": self.service, "weight": weight, "stable_weight": 100 - weight,
                "canary_version": self.canary_version}
        try:
            response = httpx.post(self.config.url, json=body, headers=self.config.headers,
                                  timeout=self.config.timeout_s)
        except httpx.HTTPError as exc:
            raise RouterError(f"POST {self.config.url}: {type(exc).__name__}") from None
        if response.status_code >= 300:
            raise RouterError(f"POST {self.config.url}: HTTP {response.status_code} {response.text[:200]}")
        return {"router": "http", "weight": weight, "status": response.status_code}

"""What every traffic router is: one idempotent method, and the error it raises."""

from __future__ import annotations

from typing import Protocol


class RouterError(Exception):
    """The router refused the new weight; the previous weights are still in force."""


class Router(Protocol):
    def set_weight(self, weight: int) -> dict:
        """Send `weight` % of traffic to the canary (0: none, 100: all); returns evidence for the record."""
        ...

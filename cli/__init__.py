"""The `changeflow` command line. `app` is loaded on first use, so importing `cli.dev` (the local stacks, the
canary lab) does not import the commands, and with them Prefect, before a caller has set Prefect's address."""

from __future__ import annotations

from typing import Any


def main() -> None:
    from ._app import app

    app()


def __getattr__(name: str) -> Any:
    if name == "app":
        from ._app import app

        return app
    raise AttributeError(name)


__all__ = ["app", "main"]

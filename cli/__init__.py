"""The `changeflow` command line."""

from ._app import app


def main() -> None:
    app()


__all__ = ["app", "main"]

"""`changeflow endpoint`: the approval endpoint on its own, for production behind a reverse proxy (`changeflow up`
starts it beside the Prefect server)."""

from __future__ import annotations

import typer

from ._context import context
from ._output import console


def endpoint(
    host: str = typer.Option("127.0.0.1", help="Address to listen on; behind a proxy, keep 127.0.0.1."),
    port: int = typer.Option(4280, min=1, max=65535, help="Port to listen on."),
) -> None:
    """Serve the approval endpoint: signed e-mail links (/a/...), Slack button clicks (/slack/actions) and the
    pipeline API (/api/v1/...)."""
    import uvicorn

    from endpoint import create_app

    ctx = context()
    settings = ctx.settings
    secret = settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else None
    from flows import health_report

    from .dev import WORK_POOL

    app = create_app(ctx.services, slack_signing_secret=secret, public_url=settings.approval_url.rstrip("/"),
                     http_timeout_s=settings.http_timeout_s, max_body_bytes=settings.endpoint_max_body_bytes,
                     refusal_summary_s=settings.endpoint_refusal_summary_s, api_wait_max_s=settings.api_wait_max_s,
                     api_poll_s=settings.wait_poll_s,
                     health=lambda: health_report(ctx.services, settings, WORK_POOL))
    console.print(f"approval endpoint on http://{host}:{port} (links point at {settings.approval_url}; Slack "
                  f"clicks {'accepted when signed' if secret else 'off: set CHANGEFLOW_SLACK_SIGNING_SECRET'})")
    uvicorn.run(app, host=host, port=port, log_level="warning", proxy_headers=True)

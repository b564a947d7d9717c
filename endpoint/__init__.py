"""The approval endpoint: approvers act from their e-mail link or a Slack button (issue 17)."""

from ._app import create_app
from ._slack import MAX_AGE_S, SlackRequestRefused, signature, signed_click

__all__ = ["MAX_AGE_S", "SlackRequestRefused", "create_app", "signature", "signed_click"]

"""Who hears about a change, and proof that they did: templates, channels and the outbox."""

from ._channels import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    ConsoleChannel,
    DeliveryError,
    FileChannel,
    Outbound,
    default_channels,
    describe_target,
    inboxes,
    verify_signature,
)
from ._notifier import Notifier, run_url
from ._outbox import Outbox, enqueue, idempotency_key
from ._secrets import ACT_OF_MESSAGE
from ._templates import Rendered, TemplateRenderer

__all__ = [
    "ACT_OF_MESSAGE",
    "DELIVERY_HEADER", "SIGNATURE_HEADER", "ConsoleChannel", "DeliveryError", "FileChannel", "Notifier", "Outbound",
    "Outbox", "Rendered", "TemplateRenderer", "default_channels", "describe_target", "enqueue", "inboxes",
    "idempotency_key", "run_url",
    "verify_signature",
]

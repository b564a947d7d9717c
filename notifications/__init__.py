"""Who hears about a change, and proof that they did: templates, channels and the outbox."""

from ._channels import ConsoleChannel, DeliveryError, FileChannel, Outbound, default_channels
from ._notifier import Notifier, run_url
from ._outbox import Outbox, enqueue, idempotency_key
from ._templates import Rendered, TemplateRenderer

__all__ = [
    "ConsoleChannel", "DeliveryError", "FileChannel", "Notifier", "Outbound", "Outbox", "Rendered",
    "TemplateRenderer", "default_channels", "enqueue", "idempotency_key", "run_url",
]

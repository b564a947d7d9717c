"""Delivery channels. Each sends one rendered message to one address and raises on failure."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol


class DeliveryError(Exception):
    """A send failed; `permanent` means retrying cannot help."""

    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class Outbound:
    change_key: str | None
    event: str
    recipient: str
    subject: str
    text: str
    markdown: str
    html: str


class Channel(Protocol):
    def send(self, message: Outbound, target: dict) -> None: ...


class ConsoleChannel:
    """Prints the plain-text message: the default of the embedded setup (it lands in the flow run's log)."""

    def __init__(self, stream=None):
        self._stream = stream

    def send(self, message: Outbound, target: dict) -> None:
        stream = self._stream or sys.stdout
        rule = "-" * 72
        stream.write(f"{rule}\nTo: {message.recipient}\nSubject: {message.subject}\n\n{message.text}{rule}\n")
        stream.flush()


class FileChannel:
    """Appends one JSON line per message to the channel's `path`."""

    def send(self, message: Outbound, target: dict) -> None:
        path = Path(target["path"]).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "at": datetime.now(timezone.utc).isoformat(),
            "to": message.recipient,
            "change": message.change_key,
            "event": message.event,
            "subject": message.subject,
            "text": message.text,
            "markdown": message.markdown,
        }
        with path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


def default_channels() -> dict[str, Channel]:
    return {"console": ConsoleChannel(), "file": FileChannel()}

"""Delivery channels. Each sends one rendered message to one target and raises DeliveryError on failure,
saying whether a retry can help and how long to wait. Messages never carry a webhook URL or a password."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import smtplib
import ssl
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import httpx

from models import Directory, url_problem

SIGNATURE_HEADER = "X-Changeflow-Signature"
TIMESTAMP_HEADER = "X-Changeflow-Timestamp"
DELIVERY_HEADER = "X-Changeflow-Delivery"


class DeliveryError(Exception):
    """A send failed; `permanent` means retrying cannot help; `retry_after_s` is the receiver's wish."""

    def __init__(self, message: str, *, permanent: bool = False, retry_after_s: float | None = None):
        super().__init__(message)
        self.permanent = permanent
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Outbound:
    change_key: str | None
    event: str
    recipient: str
    subject: str
    text: str
    markdown: str
    html: str
    approval_round: int | None = None  # set on an approval request to Slack: the message gets Approve / Reject
    # The outbox row's key: the same on every attempt, so a receiver drops a message sent again after a sender
    # died between the send and its record (delivery is at least once).
    delivery_id: str = ""


class Channel(Protocol):
    def send(self, message: Outbound, target: dict) -> None: ...


def mask_url(url: str | None) -> str:
    """Webhook URLs are credentials (the path is the key): keep scheme and host only."""
    if not url:
        return "-"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a port out of range
    except ValueError:
        return "(invalid URL)"
    return f"{parts.scheme}://{parts.hostname}{f':{port}' if port else ''}/***"


def describe_target(target: dict) -> str:
    """A channel for logs and audit data: type plus a masked address."""
    kind = target.get("type", "?")
    if kind in ("slack", "teams", "webhook"):
        return f"{kind} {mask_url(target.get('url'))}"
    if kind == "email":
        return f"email {target.get('address')}"
    if kind == "file":
        return f"file {target.get('path')}"
    return kind


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
    """Appends one JSON line per message to the channel's `path`: a person's inbox. A relative path is under
    `home` (CHANGEFLOW_HOME), so the shipped directory's `inbox/alice.txt` works wherever changeflow lives,
    never in the directory a worker happens to run in."""

    def __init__(self, home: Path | None = None) -> None:
        self.home = home

    def path_of(self, target: dict) -> Path:
        path = Path(target["path"]).expanduser()
        return self.home / path if self.home is not None and not path.is_absolute() else path

    def send(self, message: Outbound, target: dict) -> None:
        path = self.path_of(target)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        record = {
            "at": datetime.now(timezone.utc).isoformat(),
            "to": message.recipient,
            "change": message.change_key,
            "event": message.event,
            "subject": message.subject,
            "text": message.text,
            "markdown": message.markdown,
        }
        # A personal channel carries the person's codes and links: readable by its owner only (issue 17).
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max((parsedate_to_datetime(value) - datetime.now(timezone.utc)).total_seconds(), 0.0)
        except (TypeError, ValueError):
            return None


class _HttpChannel:
    """POSTs JSON; classifies failures: 408, 429 and 5xx and transport errors retry, other 4xx are permanent."""

    kind = "webhook"

    def __init__(self, timeout_s: float = 10.0, client: httpx.Client | None = None):
        self._client = client or httpx.Client(timeout=timeout_s, follow_redirects=False)

    def payload(self, message: Outbound) -> dict:
        raise NotImplementedError

    def headers(self, message: Outbound, body: bytes) -> dict[str, str]:
        return {}

    def send(self, message: Outbound, target: dict) -> None:
        url = target["url"]
        body = json.dumps(self.payload(message), separators=(",", ":")).encode()
        where = mask_url(url)
        if url_problem(url):
            # Will not parse on a retry either: fail this channel now so the person's next one is tried.
            raise DeliveryError(f"{self.kind} {where}: invalid URL", permanent=True)
        try:
            response = self._client.post(url, content=body,
                                         headers={"Content-Type": "application/json", **self.headers(message, body)})
        except httpx.HTTPError as exc:
            raise DeliveryError(f"{self.kind} {where}: {type(exc).__name__}") from None
        if response.status_code < 300:
            return
        status = response.status_code
        transient = status in (408, 429) or status >= 500
        raise DeliveryError(
            f"{self.kind} {where}: HTTP {status}",
            permanent=not transient,
            retry_after_s=_retry_after(response) if status in (429, 503) else None,
        )


class SlackChannel(_HttpChannel):
    """Slack incoming webhook: Block Kit sections with the plain text as the notification fallback."""

    kind = "slack"

    def payload(self, message: Outbound) -> dict:
        blocks: list[dict] = [{"type": "header", "text": {"type": "plain_text", "text": message.subject[:150]}},
                              {"type": "section", "text": {"type": "mrkdwn", "text": message.markdown[:2900]}}]
        if message.approval_round is not None and message.change_key:
            # Buttons, not codes: the channel is shared, and Slack signs each click with who clicked.
            value = f"{message.change_key}|{message.approval_round}"
            blocks.append({"type": "actions", "block_id": f"changeflow-{value}", "elements": [
                {"type": "button", "action_id": "approve", "style": "primary", "value": value,
                 "text": {"type": "plain_text", "text": "Approve"}},
                {"type": "button", "action_id": "reject", "style": "danger", "value": value,
                 "text": {"type": "plain_text", "text": "Reject..."}}]})
        return {"text": f"{message.subject}\n{message.text}", "blocks": blocks}


class TeamsChannel(_HttpChannel):
    """Microsoft Teams incoming webhook: an Adaptive Card."""

    kind = "teams"

    def payload(self, message: Outbound) -> dict:
        return {
            "type": "message",
            "summary": message.subject,
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [
                        {"type": "TextBlock", "text": message.subject, "weight": "Bolder", "wrap": True},
                        {"type": "TextBlock", "text": message.markdown, "wrap": True},
                    ],
                },
            }],
        }


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """HMAC-SHA256 over `<timestamp>.<body>`; the header carries both so receivers can refuse old replays."""
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(secret: bytes, header: str, body: bytes, *, now: float | None = None,
                     tolerance_s: float = 300) -> bool:
    """What a receiver does: check the HMAC in constant time and refuse signatures older than 5 minutes."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
    except (ValueError, KeyError):
        return False
    if abs((now if now is not None else time.time()) - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), header)


class WebhookChannel(_HttpChannel):
    """Generic JSON webhook, signed."""

    kind = "webhook"

    def __init__(self, secret: bytes, timeout_s: float = 10.0, client: httpx.Client | None = None):
        super().__init__(timeout_s, client)
        self._secret = secret

    def payload(self, message: Outbound) -> dict:
        return {"change": message.change_key, "event": message.event, "recipient": message.recipient,
                "subject": message.subject, "text": message.text, "markdown": message.markdown,
                "delivery": message.delivery_id}

    def headers(self, message: Outbound, body: bytes) -> dict[str, str]:
        timestamp = int(time.time())
        return {SIGNATURE_HEADER: sign(self._secret, timestamp, body), TIMESTAMP_HEADER: str(timestamp),
                DELIVERY_HEADER: message.delivery_id}


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    sender: str
    starttls: bool = False
    username: str | None = None
    password: str | None = None
    timeout_s: float = 10.0


class EmailChannel:
    """E-mail over SMTP: plain text and HTML alternatives; STARTTLS and login when configured."""

    def __init__(self, config: SmtpConfig):
        self._config = config

    def send(self, message: Outbound, target: dict) -> None:
        cfg = self._config
        mail = EmailMessage()
        mail["From"] = cfg.sender
        mail["To"] = target["address"]
        mail["Subject"] = message.subject
        mail["Date"] = formatdate(localtime=False)
        mail["Message-ID"] = make_msgid(domain="changeflow")
        mail.set_content(message.text)
        mail.add_alternative(message.html, subtype="html")
        where = f"smtp {cfg.host}:{cfg.port}"
        try:
            with smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout_s) as smtp:
                if cfg.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if cfg.username:
                    smtp.login(cfg.username, cfg.password or "")
                smtp.send_message(mail)
        except smtplib.SMTPAuthenticationError:
            raise DeliveryError(f"{where}: authentication failed for {cfg.username}", permanent=True) from None
        except smtplib.SMTPRecipientsRefused:
            raise DeliveryError(f"{where}: recipient {target['address']} refused", permanent=True) from None
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(f"{where}: SMTP {exc.smtp_code}", permanent=500 <= exc.smtp_code < 600) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(f"{where}: {type(exc).__name__}") from None


def inboxes(directory: Directory, home: Path) -> dict[str, Path]:
    """Each person's inbox (their first `file` channel), where it is on this machine: what `changeflow up` prints
    so that a newcomer finds the codes and links sent to the people they act as."""
    files = FileChannel(home)
    found = {}
    for name, person in directory.people.items():
        paths = [files.path_of({"path": channel.path}) for channel in person.channels
                 if channel.type == "file" and channel.path]
        if paths:
            found[name] = paths[0]
    return found


def default_channels(settings=None) -> dict[str, Channel]:
    """The channels for the settings' SMTP server, webhook secret and timeouts."""
    channels: dict[str, Channel] = {"console": ConsoleChannel(),
                                    "file": FileChannel(settings.home if settings is not None else None)}
    if settings is None:
        return channels
    timeout = settings.http_timeout_s
    secret = (settings.webhook_signing_secret.get_secret_value().encode()
              if settings.webhook_signing_secret else settings.secret_bytes())
    channels.update(
        slack=SlackChannel(timeout),
        teams=TeamsChannel(timeout),
        webhook=WebhookChannel(secret, timeout),
        email=EmailChannel(SmtpConfig(
            host=settings.smtp_host, port=settings.smtp_port, sender=settings.smtp_from,
            starttls=settings.smtp_starttls, username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            timeout_s=timeout,
        )),
    )
    return channels

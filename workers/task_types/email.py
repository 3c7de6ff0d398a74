"""email.send: a plain-text email through the SMTP server at SMTP_URL (standard library)."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from typing import Any
from urllib.parse import unquote, urlsplit

from server.store import JobView
from workers.context import WorkerContext
from workers.faults import TransientError
from workers.tasks import TaskType, register

_DEFAULT_PORTS = {"smtp": 25, "smtps": 465}


class EmailRejected(Exception):
    """The SMTP server refused the message for good (a 5xx reply); retrying will not help."""


def send_email(ctx: WorkerContext, view: JobView) -> dict[str, Any]:
    """Send the payload as one message; 4xx replies and lost connections are retried."""
    settings = ctx.settings
    if not settings.smtp_url:
        raise EmailRejected("email is not configured on this server (SMTP_URL is empty)")
    url = urlsplit(settings.smtp_url)
    if url.scheme not in _DEFAULT_PORTS:
        raise EmailRejected(f"SMTP_URL must start with smtp:// or smtps://, not {url.scheme}://")
    payload = view.job.payload
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = payload["to"]
    message["Subject"] = payload["subject"]
    message["X-Darkroom-Job"] = view.job.id
    message.set_content(payload.get("body", ""))
    ctx.reporter.progress(view.job.id, "sending", 50)
    host, port = url.hostname or "localhost", url.port or _DEFAULT_PORTS[url.scheme]
    timeout = settings.webhook_timeout_s
    try:
        client: smtplib.SMTP
        if url.scheme == "smtps":
            client = smtplib.SMTP_SSL(host, port, timeout=timeout,
                                      context=ssl.create_default_context())
        else:
            client = smtplib.SMTP(host, port, timeout=timeout)
        with client:
            if url.scheme == "smtp" and "starttls=1" in url.query:
                client.starttls(context=ssl.create_default_context())
            if url.username:
                client.login(unquote(url.username), unquote(url.password or ""))
            refused = client.send_message(message)
    except smtplib.SMTPResponseException as exc:
        text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) \
            else str(exc.smtp_error)
        if exc.smtp_code >= 500:
            raise EmailRejected(f"the mail server refused the message: {exc.smtp_code} {text}") \
                from None
        raise TransientError(f"the mail server said try later: {exc.smtp_code} {text}") from None
    except smtplib.SMTPRecipientsRefused as exc:
        raise EmailRejected(f"every recipient was refused: {', '.join(exc.recipients)}") \
            from None
    return {"to": payload["to"], "refused": sorted(refused)}


register(TaskType(
    name="email.send",
    description="Send a plain-text email through the server's SMTP relay.",
    schema={"type": "object", "properties": {
        "to": {"type": "string", "format": "email", "maxLength": 320},
        "subject": {"type": "string", "minLength": 1, "maxLength": 200,
                    "pattern": "[^\\r\\n]*", "patternMessage": "must be one line"},
        "body": {"type": "string", "maxLength": 100_000}},
        "required": ["to", "subject"], "additionalProperties": False},
    run=send_email,
    queue="email",
    time_limit_s=60,
    permanent=(EmailRejected,),
))

"""email.send: a plain-text email through the SMTP server at SMTP_URL (standard library).

Exactly one recipient: ``to`` must be one bare address, and the envelope names it alone,
so that the operator's relay and From address never mail a list an attacker wrote. Who may
be mailed (EMAIL_ALLOWED_RECIPIENTS, or anyone for an admin) is checked when the job or
schedule is made, and again here, so that a schedule made before that rule (or before the
list was narrowed) mails no one its owner may not; the send rates are counted again here,
once per job, so scheduled mail counts too.
The whole SMTP exchange has one deadline, EMAIL_DEADLINE_S.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
from email.message import EmailMessage
from typing import Any
from urllib.parse import unquote, urlsplit

from server.core import keys
from server.core.mail_limits import SendRates, recipient_allowed, single_address, take_send
from server.core.signing import hash_token
from server.core.tasks import EMAIL_SEND
from server.data import store
from server.data.store import JobView
from workers.context import WorkerContext
from workers.deadlines import Deadline
from workers.faults import TransientError
from workers.tasks.registry import TaskType, register

_DEFAULT_PORTS = {"smtp": 25, "smtps": 465}


class EmailRejected(Exception):
    """The message cannot go: refused for good (a 5xx reply), or not one recipient."""


class EmailRateLimited(Exception):
    """Sending now would pass a send rate (EMAIL_RATE_PER_USER_PER_HOUR / _PER_HOUR)."""


class _WatchedSMTP(smtplib.SMTP):
    """SMTP whose connection is shut down when the exchange's deadline passes."""

    def __init__(self, host: str, port: int, *, timeout: float, deadline: Deadline) -> None:
        self.deadline = deadline
        super().__init__(host, port, timeout=timeout)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        # smtplib's own, watched: the plain connection, before SMTP_SSL (which calls this)
        # wraps it, so the TLS handshake is bounded too.
        sock = socket.create_connection((host, port), timeout, self.source_address)
        try:
            return self.deadline.watch(sock)
        except BaseException:
            sock.close()
            raise


class _WatchedSMTPSSL(smtplib.SMTP_SSL, _WatchedSMTP):
    """SMTP over TLS from the start: SMTP_SSL wraps the socket _WatchedSMTP made."""

    def __init__(self, host: str, port: int, *, timeout: float, deadline: Deadline,
                 context: ssl.SSLContext) -> None:
        self.deadline = deadline
        # SMTP_SSL calls SMTP.__init__ itself, past _WatchedSMTP's.
        smtplib.SMTP_SSL.__init__(self, host, port, timeout=timeout, context=context)


def send_email(ctx: WorkerContext, view: JobView) -> dict[str, Any]:
    """Send the payload as one message; 4xx replies and lost connections are retried."""
    settings = ctx.settings
    if not settings.smtp_url:
        raise EmailRejected("email is not configured on this server (SMTP_URL is empty)")
    payload = view.job.payload
    recipient = single_address(str(payload["to"]))
    if recipient is None:
        raise EmailRejected(f"to must be exactly one address, not {payload['to']!r}")
    prefix, job = settings.redis_prefix, view.job
    allowed = settings.email_allowed_recipients
    if not recipient_allowed(recipient, allowed) and not owner_is_admin(ctx, job.user_id):
        which = ("the addresses and domains in EMAIL_ALLOWED_RECIPIENTS" if allowed
                 else "no address on this server (EMAIL_ALLOWED_RECIPIENTS is empty)")
        raise EmailRejected(f"not sent: {recipient} is not a recipient this job's owner may "
                            f"mail; without admin rights, e-mail may go to {which}")
    refused_now = take_send(ctx.redis, SendRates(settings.email_rate_per_user_per_hour,
                                                 settings.email_rate_per_hour),
                            keys.email_sends(prefix, job.user_id), keys.email_sends(prefix),
                            job.id)
    if refused_now is not None:
        raise EmailRateLimited(f"not sent: {refused_now.message()}")
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = recipient
    message["Subject"] = payload["subject"]
    message["X-Darkroom-Job"] = job.id
    message.set_content(payload.get("body", ""))
    ctx.reporter.progress(job.id, "sending", 50)
    refused = send(settings.smtp_url, message, recipient, timeout_s=settings.webhook_timeout_s,
                   deadline_s=settings.email_deadline_s)
    return {"to": recipient, "refused": sorted(refused)}


def owner_is_admin(ctx: WorkerContext, user_id: str) -> bool:
    """Whether the user has admin rights now (marked admin, or ADMIN_TOKEN's user)."""
    token = ctx.settings.admin_token
    return ctx.db.read(store.user_is_admin, user_id=user_id,
                       admin_token_hash=hash_token(token) if token else None)


def send(smtp_url: str, message: EmailMessage, recipient: str, *, timeout_s: float,
         deadline_s: float) -> dict[str, tuple[int, bytes]]:
    """Send ``message`` to ``recipient`` alone through the relay at ``smtp_url``.

    ``timeout_s`` bounds each socket operation, ``deadline_s`` the whole exchange.
    EmailRejected for a 5xx reply, TransientError for a 4xx one or a server too slow;
    other connection errors are OSErrors (transient too).
    """
    url = urlsplit(smtp_url)
    if url.scheme not in _DEFAULT_PORTS:
        raise EmailRejected(f"SMTP_URL must start with smtp:// or smtps://, not {url.scheme}://")
    host, port = url.hostname or "localhost", url.port or _DEFAULT_PORTS[url.scheme]
    try:
        with Deadline(deadline_s) as deadline:
            try:
                return _exchange(url.scheme, url.query, url.username, url.password, host,
                                 port, message, recipient, deadline,
                                 timeout=deadline.timeout(timeout_s))
            except OSError:  # smtplib's errors are OSErrors too
                if deadline.expired:
                    raise TransientError(f"the mail server took longer than "
                                         f"{deadline.seconds:g} s (EMAIL_DEADLINE_S)") from None
                raise
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


def _exchange(scheme: str, query: str, username: str | None, password: str | None, host: str,
              port: int, message: EmailMessage, recipient: str, deadline: Deadline, *,
              timeout: float) -> dict[str, tuple[int, bytes]]:
    client: smtplib.SMTP
    if scheme == "smtps":
        client = _WatchedSMTPSSL(host, port, timeout=timeout, deadline=deadline,
                                 context=ssl.create_default_context())
    else:
        client = _WatchedSMTP(host, port, timeout=timeout, deadline=deadline)
    with client:
        if scheme == "smtp" and "starttls=1" in query:
            client.starttls(context=ssl.create_default_context())
        if username:
            client.login(unquote(username), unquote(password or ""))
        # The envelope names the one checked address, whatever the headers say.
        return client.send_message(message, to_addrs=[recipient])


register(TaskType.of(EMAIL_SEND, run=send_email, permanent=(EmailRejected, EmailRateLimited)))

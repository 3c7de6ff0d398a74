"""email.send's network side: one envelope recipient, and one deadline for the exchange.

The SMTP peers are local servers on threads (aiosmtpd, or a raw socket that trickles).
"""

from __future__ import annotations

import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from server.core import keys
from server.core.mail_limits import Refused, SendRates, take_send
from server.core.signing import hash_token
from server.data import store
from server.data.db import SyncDatabase
from server.infra.settings import Settings
from workers.faults import TransientError, is_transient
from workers.tasks.email import EmailRejected, send, send_email


class Envelopes:
    """aiosmtpd handler: keeps each envelope's recipients."""

    def __init__(self) -> None:
        self.recipients: list[list[str]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.recipients.append(list(envelope.rcpt_tos))
        return "250 Message accepted"


class _Bound(Controller):
    """A Controller on a port the system picks (read back once bound)."""

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


def _message(to: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "darkroom@test.example"
    message["To"] = to
    message["Subject"] = "Hello"
    message.set_content("Hi")
    return message


def test_the_envelope_names_the_one_checked_recipient_alone() -> None:
    handler = Envelopes()
    controller = _Bound(handler, hostname="127.0.0.1", port=0)
    controller.start()
    try:
        # Were the To header a list, the envelope would still name only the checked address.
        refused = send(f"smtp://127.0.0.1:{controller.port}",
                       _message("ana@test.example, postmaster@test.example"),
                       "ana@test.example", timeout_s=5, deadline_s=5)
    finally:
        controller.stop()
    assert refused == {}
    assert handler.recipients == [["ana@test.example"]]


@pytest.fixture
def trickling_smtp() -> Iterator[int]:
    """A peer that greets one byte every 0.2 s ("220 220 220 ..."): no line ever ends, and
    no single read waits long enough to time out."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            while not stop.wait(0.2):
                try:
                    conn.sendall(b"2")
                except OSError:
                    return

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        listener.close()


def test_a_trickling_mail_server_is_cut_off_at_the_deadline(trickling_smtp: int) -> None:
    started = time.monotonic()
    with pytest.raises(TransientError, match="longer than 1 s"):
        send(f"smtp://127.0.0.1:{trickling_smtp}", _message("ana@test.example"),
             "ana@test.example", timeout_s=1, deadline_s=1)
    assert time.monotonic() - started < 2.5


def test_a_refused_connection_is_an_error_worth_retrying() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    with pytest.raises(ConnectionRefusedError) as raised:
        send(f"smtp://127.0.0.1:{port}", _message("a@test.example"), "a@test.example",
             timeout_s=1, deadline_s=5)
    assert is_transient(raised.value)


def test_the_worker_refuses_a_list_of_recipients_whatever_let_it_in() -> None:
    # A job stored before the web checked ``to`` (an old schedule's, say) never goes out:
    # refused before any connection or count is made.
    settings = Settings(smtp_url="smtp://127.0.0.1:1")
    job = SimpleNamespace(payload={"to": "victim@ex.com,postmaster", "subject": "Hi"})
    with pytest.raises(EmailRejected, match="exactly one address"):
        send_email(SimpleNamespace(settings=settings),  # type: ignore[arg-type]
                   SimpleNamespace(job=job))  # type: ignore[arg-type]


@pytest.fixture
def users(memory_db: SyncDatabase) -> SyncDatabase:
    return memory_db


def test_the_worker_mails_no_one_the_jobs_owner_may_not(users: SyncDatabase) -> None:
    # A job from a schedule made before EMAIL_ALLOWED_RECIPIENTS (or before it was
    # narrowed): refused for good, with the reason, unless its owner is an admin now.
    handler = Envelopes()
    controller = _Bound(handler, hostname="127.0.0.1", port=0)
    controller.start()
    admin_token = "email-test-admin-token"
    settings = Settings(smtp_url=f"smtp://127.0.0.1:{controller.port}",
                        email_allowed_recipients=("@test.example",), admin_token=admin_token,
                        email_rate_per_user_per_hour=0, email_rate_per_hour=0)
    plain = users.write(store.create_user, token_hash=secrets.token_hex(32)).id
    marked = users.write(store.create_user, token_hash=secrets.token_hex(32),
                         is_admin=True).id
    env_admin = users.write(store.create_user, token_hash=hash_token(admin_token)).id
    ctx: Any = SimpleNamespace(settings=settings, db=users, redis=None,  # no rates here
                               reporter=SimpleNamespace(progress=lambda *args: None))

    def run(user_id: str, to: str) -> dict[str, Any]:
        job = SimpleNamespace(id=secrets.token_hex(8), user_id=user_id,
                              payload={"to": to, "subject": "Hi"})
        return send_email(ctx, SimpleNamespace(job=job))  # type: ignore[arg-type]

    try:
        with pytest.raises(EmailRejected, match=re.escape(
                "victim@ex.com is not a recipient this job's owner may mail")):
            run(plain, "victim@ex.com")
        assert run(plain, "ana@test.example")["to"] == "ana@test.example"
        assert run(marked, "victim@ex.com")["to"] == "victim@ex.com"
        assert run(env_admin, "boss@ex.com")["to"] == "boss@ex.com"
    finally:
        controller.stop()
    assert handler.recipients == [["ana@test.example"], ["victim@ex.com"], ["boss@ex.com"]]


@pytest.mark.integration
def test_send_rates_count_each_job_once_whoever_asks(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    prefix = f"t{secrets.token_hex(4)}"
    rates = SendRates(per_user=2, overall=3)

    def take(user: str, job: str) -> Refused | None:
        return take_send(client, rates, keys.email_sends(prefix, user), keys.email_sends(prefix),
                         job)

    assert take("ana", "j1") is None
    assert take("ana", "j1") is None  # the same job again (the worker after the web): free
    assert take("ana", "j2") is None
    refused = take("ana", "j3")
    assert refused is not None and (refused.scope, refused.limit) == ("user", 2)
    assert 3500 <= refused.retry_after_s <= 3600
    assert take("bob", "j4") is None
    overall = take("cy", "j5")
    assert overall is not None and overall.scope == "overall"
    client.close()

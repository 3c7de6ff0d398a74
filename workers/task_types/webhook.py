"""webhook.deliver: POST a JSON body to a URL, signed with the owner's webhook key.

Receivers check ``X-Darkroom-Signature: sha256=<hex>`` = HMAC-SHA256 over
``<timestamp>.<body>`` with the key ``GET /api/webhooks`` returns (derived from
WEBHOOK_SECRET and the user), and the timestamp from ``X-Darkroom-Timestamp`` (refuse
old ones to stop replays). A 5xx/429 answer or a timeout is retried with backoff; any
other 4xx, a redirect, or a private destination is final.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from server.signing import webhook_key, webhook_signature
from server.store import JobView
from workers.context import WorkerContext
from workers.faults import TransientError
from workers.tasks import TaskType, register

USER_AGENT = "Darkroom-Webhooks/1"


class DeliveryRejected(Exception):
    """The delivery cannot succeed: a 4xx answer, a redirect, or a forbidden destination."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # A redirect would resend (or drop) the body somewhere else: report it instead.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def check_destination(url: str, *, allow_private: bool) -> None:
    """Refuse loopback, private, link-local and other internal addresses (unless allowed)."""
    if allow_private:
        return
    host = urlsplit(url).hostname or ""
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror as exc:
        raise TransientError(f"cannot resolve {host}: {exc}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise DeliveryRejected(f"{host} is not a public address; deliveries go to "
                                   "public hosts only (WEBHOOK_ALLOW_PRIVATE)")


def deliver_webhook(ctx: WorkerContext, view: JobView) -> dict[str, Any]:
    payload = view.job.payload
    settings = ctx.settings
    check_destination(payload["url"], allow_private=settings.webhook_allow_private)
    body = json.dumps(payload.get("body", {}), separators=(",", ":"), sort_keys=True).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Darkroom-Event": str(payload.get("event", "")),
        "X-Darkroom-Delivery": view.job.id,
        "X-Darkroom-Timestamp": timestamp,
    }
    if settings.webhook_secret:
        key = webhook_key(settings.webhook_secret, view.job.user_id)
        headers["X-Darkroom-Signature"] = webhook_signature(key, timestamp, body)
    request = urllib.request.Request(payload["url"], data=body, headers=headers, method="POST")
    ctx.reporter.progress(view.job.id, "delivering", 50)
    try:
        with _OPENER.open(request, timeout=settings.webhook_timeout_s) as answer:
            status = int(answer.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
        exc.close()
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise TransientError(f"could not reach {payload['url']}: {exc}") from None
    if status >= 500 or status == 429:
        raise TransientError(f"the receiver answered {status}; will try again")
    if status >= 300:
        raise DeliveryRejected(f"the receiver answered {status}")
    return {"status": status}


register(TaskType(
    name="webhook.deliver",
    description="POST a signed JSON body to a URL; 5xx and timeouts are retried, 4xx are not.",
    schema={"type": "object", "properties": {
        "url": {"type": "string", "format": "uri", "maxLength": 2000},
        "event": {"type": "string", "maxLength": 100},
        "body": {"type": "object"}},
        "required": ["url"], "additionalProperties": False},
    run=deliver_webhook,
    queue="webhooks",
    time_limit_s=120,
    permanent=(DeliveryRejected,),
))

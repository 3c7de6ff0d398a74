"""webhook.deliver: POST a JSON body to a URL, signed with HMAC-SHA256 of WEBHOOK_SECRET.

Receivers check ``X-Darkroom-Signature: sha256=<hex>`` over ``<timestamp>.<body>``, with
the timestamp from ``X-Darkroom-Timestamp`` (reject old ones to stop replays).
A 5xx answer or a timeout is retried with backoff; a 4xx answer is final.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from typing import Any

from server.store import JobView
from workers.context import WorkerContext
from workers.faults import TransientError
from workers.tasks import TaskType, register

USER_AGENT = "Darkroom-Webhooks/1"


class DeliveryRejected(Exception):
    """The receiver answered 4xx: it refuses this delivery; a retry would not change that."""


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The value of X-Darkroom-Signature for a body sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def deliver_webhook(ctx: WorkerContext, view: JobView) -> dict[str, Any]:
    payload = view.job.payload
    body = json.dumps(payload.get("body", {}), separators=(",", ":"), sort_keys=True).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Darkroom-Event": str(payload.get("event", "")),
        "X-Darkroom-Delivery": view.job.id,
        "X-Darkroom-Timestamp": timestamp,
    }
    if ctx.settings.webhook_secret:
        headers["X-Darkroom-Signature"] = signature(ctx.settings.webhook_secret, timestamp, body)
    request = urllib.request.Request(payload["url"], data=body, headers=headers, method="POST")
    ctx.reporter.progress(view.job.id, "delivering", 50)
    try:
        with urllib.request.urlopen(request, timeout=ctx.settings.webhook_timeout_s) as answer:
            status = int(answer.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
        exc.close()
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        raise TransientError(f"could not reach {payload['url']}: {exc}") from None
    if status >= 500 or status == 429:
        raise TransientError(f"the receiver answered {status}; will try again")
    if status >= 400:
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

"""What a job's end sends to its owner's webhooks (pure).

Every final state is POSTed to each URL the owner registered (the public contract), by
one ``webhook.deliver`` job per URL with the type's own attempts.
"""

from __future__ import annotations

from typing import Any

from server.core.tasks import WEBHOOK_DELIVER


def announces_its_end(job_type: str) -> bool:
    """Whether a job of this type gets deliveries when it ends: a delivery does not, so a
    failing webhook cannot feed itself."""
    return job_type != WEBHOOK_DELIVER.name


def delivery_payload(url: str, event: str, body: dict[str, Any]) -> dict[str, Any]:
    """The payload of the ``webhook.deliver`` job that POSTs ``body`` to ``url``."""
    return {"url": url, "event": event, "body": body}

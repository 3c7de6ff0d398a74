"""Every Redis key and pub/sub channel name, in one place (pure)."""

from __future__ import annotations


def events_channel(prefix: str) -> str:
    """The one pub/sub channel every job event is published on."""
    return f"{prefix}:events"


def dramatiq_namespace(prefix: str) -> str:
    """Namespace of Dramatiq's own keys, so several deployments can share a Redis."""
    return f"{prefix}:dramatiq"

"""The audit trail: one log line per admin operation, on the ``darkroom.audit`` logger."""

from __future__ import annotations

import logging
from typing import Protocol

log = logging.getLogger("darkroom.audit")


class Actor(Protocol):
    """Who acted (``server.core.principal.Principal`` fits)."""

    @property
    def user_id(self) -> str: ...

    @property
    def is_admin(self) -> bool: ...


def audit(user_id: str, action: str, target: str, detail: str = "") -> None:
    """Log that admin ``user_id`` did ``action`` (``dlq.retry``) to ``target`` (``job:<id>``).

    The fields travel as ``extra`` (``action``, ``target``, ``user_id``) for structured
    log formatters; the message says the same for people reading plain logs.
    """
    log.info("admin %s: %s %s%s", user_id, action, target, f" ({detail})" if detail else "",
             extra={"action": action, "target": target, "user_id": user_id})


def audit_foreign(actor: Actor, owner_id: str, action: str, target: str,
                  detail: str = "") -> None:
    """Audit an admin touching another user's data; a user's own data is not audited."""
    if actor.is_admin and owner_id != actor.user_id:
        audit(actor.user_id, action, target,
              f"owner {owner_id}, {detail}" if detail else f"owner {owner_id}")

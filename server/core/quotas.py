"""How many webhooks and schedules one user may hold (pure).

The defaults of MAX_WEBHOOKS_PER_USER and MAX_SCHEDULES_PER_USER; the deployment's
settings may choose others, which the callers pass on.
"""

from __future__ import annotations

MAX_WEBHOOKS_PER_USER = 20
MAX_SCHEDULES_PER_USER = 100


def has_room(held: int, cap: int) -> bool:
    """Whether a user who holds ``held`` may add one more under ``cap``."""
    return held < cap

"""What the figures of a queue mean: the states counted, the throughput window (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

# A queued job whose run_at is still ahead is counted apart, as delayed.
DELAYED = "delayed"
COUNTED_STATES = ("queued", DELAYED, "active", "retrying", "completed", "failed", "cancelled")
# Throughput is the completions per minute over this window.
THROUGHPUT_WINDOW = timedelta(minutes=5)


@dataclass(frozen=True)
class QueueFigures:
    """One queue family's figures, as the admin page and ``queues:stats`` show them."""

    counts: dict[str, int]
    """Jobs by state, every state of COUNTED_STATES (zeros included)."""
    oldest_waiting_s: float | None
    """How long the oldest job due to run has waited (None: none waits)."""
    throughput_per_min: float


def figures(counts: Mapping[str, int], *, oldest_waiting: datetime | None, completed: int,
            now: datetime) -> QueueFigures:
    """The figures from the counts by state, since when the oldest due job has waited and
    how many jobs completed within THROUGHPUT_WINDOW before ``now``."""
    return QueueFigures(
        counts={**dict.fromkeys(COUNTED_STATES, 0), **counts},
        oldest_waiting_s=(round((now - oldest_waiting).total_seconds(), 1)
                          if oldest_waiting else None),
        throughput_per_min=round(completed / (THROUGHPUT_WINDOW.total_seconds() / 60), 2),
    )

"""How far a batch upload has got, from its jobs' states and progress (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from server.core.jobs import JobState, is_final


@dataclass(frozen=True)
class BatchTally:
    """A batch's jobs counted (CONTRACT ``batch:progress``)."""

    total: int
    done: int
    """Completed."""
    failed: int
    """Failed or cancelled."""
    progress: int
    """0-100: the mean of the jobs' progress, an ended job counting as 100; an empty batch
    is complete."""


def tally(jobs: Iterable[tuple[str, int]]) -> BatchTally:
    """Count a batch's jobs, given as ``(state, progress)``."""
    rows = list(jobs)
    done = sum(1 for state, _ in rows if state == JobState.COMPLETED.value)
    failed = sum(1 for state, _ in rows
                 if state in (JobState.FAILED.value, JobState.CANCELLED.value))
    points = [100 if is_final(state) else progress for state, progress in rows]
    return BatchTally(total=len(rows), done=done, failed=failed,
                      progress=round(sum(points) / len(points)) if points else 100)

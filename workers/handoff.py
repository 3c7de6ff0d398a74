"""The job row an attempt began with, handed from the lifecycle middleware to the actor.

Both run in the same worker thread, one right after the other: the actor takes the view
``begin_attempt`` just wrote instead of reading the row (and its image) again.
"""

from __future__ import annotations

import threading

from server.data.store import JobView

_began = threading.local()


def hand_over(view: JobView) -> None:
    """The view of the job whose attempt this thread just began."""
    _began.view = view


def clear() -> None:
    """Drop whatever an earlier message left (its actor never ran)."""
    _began.view = None


def take(job_id: str) -> JobView | None:
    """The view handed over for ``job_id`` in this thread (once), else None."""
    view: JobView | None = getattr(_began, "view", None)
    _began.view = None
    return view if view is not None and view.job.id == job_id else None

"""The job row an attempt began with, handed from the lifecycle middleware to the actor.

Both run in the same worker thread, one right after the other: the actor takes the view
``begin_attempt`` just wrote instead of reading the row (and its image) again. The thread
also keeps the attempt it runs, for the whole run: its progress writes name it, so that
those of a run a later attempt took over (one that hung) are refused.
"""

from __future__ import annotations

import threading

from server.data.store import JobView

_began = threading.local()


def hand_over(view: JobView) -> None:
    """The view of the job whose attempt this thread just began."""
    _began.view = view
    _began.attempt = (view.job.id, view.job.attempt)


def clear() -> None:
    """Drop whatever an earlier message left (its actor never ran, or its run is over)."""
    _began.view = None
    _began.attempt = None


def take(job_id: str) -> JobView | None:
    """The view handed over for ``job_id`` in this thread (once), else None."""
    view: JobView | None = getattr(_began, "view", None)
    _began.view = None
    return view if view is not None and view.job.id == job_id else None


def peek(job_id: str) -> JobView | None:
    """The view handed over for ``job_id`` in this thread, left for the actor to take."""
    view: JobView | None = getattr(_began, "view", None)
    return view if view is not None and view.job.id == job_id else None


def attempt_of(job_id: str) -> int | None:
    """The attempt of ``job_id`` this thread runs, if it runs one."""
    began: tuple[str, int] | None = getattr(_began, "attempt", None)
    return began[1] if began is not None and began[0] == job_id else None

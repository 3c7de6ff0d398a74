"""The job row an attempt began with, handed from the lifecycle middleware to the actor.

Both run in the same worker thread, one right after the other: the actor takes the view
``begin_attempt`` just wrote instead of reading the row (and its image) again. The thread
also keeps the attempt it runs, for the whole run (``Run``): its progress writes name it,
so that those of a run a later attempt took over (one that hung) are refused, and its
progress steps pushed from Redis alone (``server.core.live``) are counted there until the
attempt's next database write keeps them.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from server.core import live
from server.core.live import PushedStep
from server.data.store import JobView

_began = threading.local()


@dataclass
class Run:
    """The attempt this thread runs, as its progress pushes need it."""

    view: JobView
    """The row as the attempt's last database write left it (the events' shape)."""
    pushed: list[PushedStep] = field(default_factory=list)
    """Steps pushed from Redis alone since that write and not yet kept in the timeline."""
    last: PushedStep | None = None
    """The last step pushed since that write (kept or not)."""
    written_at: float = field(default_factory=time.monotonic)
    """When that write was made (``time.monotonic``)."""

    @property
    def attempt(self) -> int:
        return self.view.job.attempt

    @property
    def ceiling(self) -> int:
        """The highest seq this attempt may push before its row is written again."""
        return self.view.job.seq + live.SEQ_BLOCK

    def next_push(self) -> int | None:
        """The seq of the next push, or None when the next step goes to the database: the
        attempt's block is used up, or its row was written ROW_EVERY_S ago."""
        seq = (self.last.seq if self.last is not None else self.view.job.seq) + 1
        if seq > self.ceiling or time.monotonic() - self.written_at > live.ROW_EVERY_S:
            return None
        return seq

    @property
    def progress(self) -> int:
        """The progress last reported (pushes included)."""
        return self.last.progress if self.last is not None else self.view.job.progress

    def pushed_step(self, step: PushedStep) -> None:
        """``step`` went out from Redis alone."""
        self.pushed.append(step)
        self.last = step

    def kept(self, steps: list[PushedStep]) -> None:
        """A write kept these steps in the timeline (they are no longer the run's to pass
        on; a write that failed keeps them for the next)."""
        self.pushed = [step for step in self.pushed if step not in steps]

    def written(self, view: JobView) -> None:
        """The attempt's row was written again (and the steps before it kept)."""
        self.view, self.pushed, self.last = view, [], None
        self.written_at = time.monotonic()


def hand_over(view: JobView) -> None:
    """The view of the job whose attempt this thread just began."""
    _began.view = view
    _began.run = Run(view)


def clear() -> None:
    """Drop whatever an earlier message left (its actor never ran, or its run is over)."""
    _began.view = None
    _began.run = None


def run_of(job_id: str) -> Run | None:
    """The attempt of ``job_id`` this thread runs, if it runs one."""
    run: Run | None = getattr(_began, "run", None)
    return run if run is not None and run.view.job.id == job_id else None


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
    run = run_of(job_id)
    return run.attempt if run is not None else None

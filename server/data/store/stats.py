"""Counting jobs: a queue family's figures for the admin page, and what a metrics scrape
reads (what the figures mean: ``server.core.queue_figures``).

Unfinished jobs are the backlog: counted on every scrape, through the state index, so a
scrape costs the work waiting, never the history. Finished jobs are the history: counted
by ``finished_job_counts``, a pass over them all, which the scrape runs at most once per
METRICS_RECOUNT_S for the whole deployment.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from server.core.jobs import UNFINISHED_STATES, JobState, is_final, queue_family
from server.core.queue_figures import (
    COUNTED_STATES,
    DELAYED,
    THROUGHPUT_WINDOW,
    QueueFigures,
    figures,
)
from server.data.models import Job, as_utc, utcnow
from server.data.store.dead_letters import dead_letter_count


def _state_label(now: datetime) -> Any:
    """A job's state as counted: ``delayed`` for a queued job whose run_at is ahead."""
    delayed = (Job.state == JobState.QUEUED.value) & (Job.run_at > now)
    return case((delayed, DELAYED), else_=Job.state)


def queue_stats(s: Session, /, *, base: str) -> QueueFigures:
    """One queue family's counts by state, the oldest waiting job's age, and completions
    per minute over THROUGHPUT_WINDOW."""
    now = utcnow()
    family = queue_family(base)
    label = _state_label(now)
    counts = {str(state): int(count) for state, count in s.execute(
        select(label, func.count()).where(Job.queue.in_(family)).group_by(label))}
    oldest = s.scalar(
        select(func.min(func.coalesce(Job.run_at, Job.created_at)))
        .where(Job.queue.in_(family), Job.state == JobState.QUEUED.value)
        .where(Job.run_at.is_(None) | (Job.run_at <= now)))
    done = s.scalar(select(func.count()).select_from(Job).where(
        Job.queue.in_(family), Job.state == JobState.COMPLETED.value,
        Job.finished_at >= now - THROUGHPUT_WINDOW)) or 0
    return figures(counts, oldest_waiting=as_utc(oldest) if oldest else None,
                   completed=int(done), now=now)


def job_counts_by_type(s: Session, /, *, types: Iterable[str] = ()) -> dict[tuple[str, str], int]:
    """How many jobs of each type are in each state (``delayed`` as in queue_stats); the
    ``types`` given and every type found get all states, zeros included."""
    label = _state_label(utcnow())
    counts: dict[tuple[str, str], int] = {}
    for job_type, state, count in s.execute(
            select(Job.type, label, func.count()).group_by(Job.type, label)):
        counts[(str(job_type), str(state))] = int(count)
    for job_type in {*types, *(job_type for job_type, _ in counts)}:
        for state in COUNTED_STATES:
            counts.setdefault((job_type, state), 0)
    return counts


def unfinished_job_counts(s: Session, /, *, now: datetime) -> list[tuple[str, str, str, int]]:
    """``(queue, type, state, jobs)`` of unfinished jobs (``delayed`` as in queue_stats)."""
    label = _state_label(now)
    rows = s.execute(select(Job.queue, Job.type, label, func.count())
                     .where(Job.state.in_(UNFINISHED_STATES)).group_by(Job.queue, Job.type, label))
    return [(str(queue), str(job_type), str(state), int(count))
            for queue, job_type, state, count in rows]


def oldest_waiting(s: Session, /, *, now: datetime) -> dict[str, datetime]:
    """Per queue, since when its oldest job due to run has waited (run_at, else created)."""
    rows = s.execute(
        select(Job.queue, func.min(func.coalesce(Job.run_at, Job.created_at)))
        .where(Job.state == JobState.QUEUED.value)
        .where(Job.run_at.is_(None) | (Job.run_at <= now)).group_by(Job.queue))
    return {str(queue): as_utc(since) for queue, since in rows if since is not None}


def finished_job_counts(s: Session, /, *,
                        since: datetime) -> tuple[list[tuple[str, str, str, int, int]], int]:
    """``(queue, type, state, jobs, completed at or after since)`` of finished jobs, and the
    dead letters: a pass over every stored finished job (see above)."""
    finals = [state.value for state in JobState if is_final(state)]
    recent = (Job.state == JobState.COMPLETED.value) & (Job.finished_at >= since)
    rows = s.execute(
        select(Job.queue, Job.type, Job.state, func.count(),
               func.sum(case((recent, 1), else_=0)))
        .where(Job.state.in_(finals)).group_by(Job.queue, Job.type, Job.state))
    counts = [(str(queue), str(job_type), str(state), int(count), int(done or 0))
              for queue, job_type, state, count, done in rows]
    return counts, dead_letter_count(s)

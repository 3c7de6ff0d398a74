"""Retention: deleting what ended long ago, and the check the orphan-file clean-up needs."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from server.core.jobs import JobState, is_final, queue_family
from server.data.models import Batch, DeadLetter, Image, Job
from server.data.store.timeline import forget_events


def _finals() -> list[str]:
    return [state.value for state in JobState if is_final(state)]


def purge_finished(s: Session, /, *, finished_before: datetime) -> list[str]:
    """Delete what finished before the cutoff; returns the ids of images whose files go too.

    Images whose current job ended before the cutoff go with all their jobs; other jobs
    that ended before it go too. Kept: anything in the dead-letter queue (until an admin
    clears it) and anything unfinished.
    """
    finals = _finals()
    dead = select(DeadLetter.job_id)
    old_jobs = select(Job.id).where(Job.state.in_(finals), Job.finished_at < finished_before,
                                    Job.id.not_in(dead))
    image_ids = list(s.scalars(select(Image.id).where(Image.job_id.in_(old_jobs))))
    if image_ids:
        s.execute(delete(Image).where(Image.id.in_(image_ids)))
        s.execute(delete(Job).where(Job.image_id.in_(image_ids), Job.id.not_in(dead),
                                    Job.state.in_(finals)))
    s.execute(delete(Job).where(Job.state.in_(finals), Job.finished_at < finished_before,
                                Job.id.not_in(dead),
                                Job.id.not_in(select(Image.job_id)
                                              .where(Image.job_id.is_not(None)))))
    s.execute(delete(Batch).where(Batch.created_at < finished_before,
                                  Batch.id.not_in(select(Job.batch_id)
                                                  .where(Job.batch_id.is_not(None)))))
    forget_events(s)
    return image_ids


def existing_image_ids(s: Session, /, *, image_ids: list[str]) -> set[str]:
    """Which of these ids still have an image row (for the orphan-file clean-up)."""
    found: set[str] = set()
    for start in range(0, len(image_ids), 500):
        chunk = image_ids[start:start + 500]
        found.update(s.scalars(select(Image.id).where(Image.id.in_(chunk))))
    return found


def clean_finished(s: Session, /, *, base: str, finished_before: datetime) -> int:
    """Delete the family's final jobs finished before the cutoff; returns how many.

    Kept: jobs in the dead-letter queue (until an admin clears them) and the current
    job of an existing image (its <Image> names it).
    """
    finals = _finals()
    keep_dead = select(DeadLetter.job_id)
    keep_current = select(Image.job_id).where(Image.job_id.is_not(None))
    result = s.execute(delete(Job).where(
        Job.queue.in_(queue_family(base)), Job.state.in_(finals),
        Job.finished_at < finished_before, Job.id.not_in(keep_dead),
        Job.id.not_in(keep_current)))
    forget_events(s)
    return int(getattr(result, "rowcount", 0) or 0)

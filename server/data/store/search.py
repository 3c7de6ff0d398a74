"""Job search: the conditions a ``JobSearch`` puts on jobs, and pages of matching jobs.

Each page is newest first by id and at most ``limit`` long. The id, the time range, a
type, a queue, a state and an owner each use an index led by that column and ending in
the id (``models.Job``), so the database walks the index from the newest end and stops
at ``limit``. A short id has an index of its own, the content hash the images' hash
index. A filename or an error text ("contains") is checked row by row among the rows
the other filters leave; ``make bench`` (bench/search.py) measures each on large tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlalchemy import ColumnElement, Select, func, literal_column, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from server.core.jobs import JobState, queue_family
from server.core.queue_figures import DELAYED
from server.core.search import EVERYTHING, ID_CHARS, MIN_SHORT_ID, SHORT_ID_CHARS, JobSearch
from server.data.models import SHORT_ID_FROM, Image, Job, utcnow
from server.data.store.views import JobView

# Every id and content hash is lowercase hexadecimal: a prefix p covers [p, p + "g").
_PAST_HEX = "g"


def job_conditions(search: JobSearch, *,
                   error_columns: Sequence[ColumnElement[str] | InstrumentedAttribute[str]]
                   | None = None
                   ) -> list[ColumnElement[bool]]:
    """The WHERE conditions on ``Job`` (AND-ed) for ``search``.

    ``error_columns``: where the error text is looked for (by default the job's error
    type and message; the dead-letter queue passes its own columns).
    """
    where: list[ColumnElement[bool]] = []
    low, high = search.id_range()
    if low is not None:
        where.append(Job.id >= low)
    if high is not None:
        where.append(Job.id < high)
    if search.id is not None:
        where.append(_id_matches(search.id))
    if search.type is not None:
        where.append(Job.type == search.type)
    if search.queue is not None:
        where.append(Job.queue.in_(sorted({search.queue, *queue_family(search.queue)})))
    if search.user is not None:
        where.append(Job.user_id == search.user)
    if search.state == DELAYED:  # queued with a run_at still ahead, as queue_stats counts it
        where += [Job.state == JobState.QUEUED.value, Job.run_at > utcnow()]
    elif search.state is not None:
        where.append(Job.state == search.state)
    images = _image_conditions(search)
    if images:
        where.append(Job.image_id.in_(select(Image.id).where(*images)))
    if search.error is not None:
        columns = error_columns if error_columns is not None else (
            Job.error["type"].as_string(), Job.error["message"].as_string())
        needle = search.error.lower()
        where.append(or_(*(func.lower(c).contains(needle, autoescape=True) for c in columns)))
    return where


def _id_matches(fragment: str) -> ColumnElement[bool]:
    """A whole id; else an id's start, or (6 to 8 digits) the start of its short id."""
    if len(fragment) == ID_CHARS:
        return Job.id == fragment
    prefix = (Job.id >= fragment) & (Job.id < fragment + _PAST_HEX)
    if not MIN_SHORT_ID <= len(fragment) <= SHORT_ID_CHARS:
        return prefix
    # Spelled as ix_jobs_short_id is (the position a literal, not a bound parameter):
    # SQLite uses an expression index only for the very same expression.
    short = func.substr(Job.id, literal_column(str(SHORT_ID_FROM)))
    return or_(prefix, (short >= fragment) & (short < fragment + _PAST_HEX))


def _image_conditions(search: JobSearch) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if search.sha256 is not None:
        where += [Image.sha256 >= search.sha256, Image.sha256 < search.sha256 + _PAST_HEX]
    if search.filename is not None:
        where.append(func.lower(Image.filename).contains(search.filename.lower(),
                                                         autoescape=True))
    return where


def newest_first(query: Select[Job], *, limit: int, before: str | None) -> Select[Job]:
    """A page of ``query`` newest first, after the cursor ``before`` (a job id)."""
    if before:
        query = query.where(Job.id < before)
    return query.order_by(Job.id.desc()).limit(limit)


def list_jobs(s: Session, /, *, user_id: str | None, limit: int, before: str | None = None,
              search: JobSearch = EVERYTHING) -> list[JobView]:
    """A page of matching jobs, newest first: one user's, or everyone's (user_id None)."""
    query = select(Job).where(*job_conditions(search))
    if user_id is not None:
        query = query.where(Job.user_id == user_id)
    return views_of(s, s.scalars(newest_first(query, limit=limit, before=before)))


def views_of(s: Session, jobs: Iterable[Job]) -> list[JobView]:
    """The jobs with their images, read in one query (not one per job)."""
    found = list(jobs)
    wanted = sorted({job.image_id for job in found if job.image_id})
    images = {image.id: image for image in s.scalars(
        select(Image).where(Image.id.in_(wanted)))} if wanted else {}
    return [JobView(job, images.get(job.image_id) if job.image_id else None) for job in found]

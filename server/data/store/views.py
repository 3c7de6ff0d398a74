"""A job row with its image, as callers present it, and the row reads every module uses."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import instance_state

from server.data.models import Image, Job


@dataclass(frozen=True)
class JobView:
    """A job row with its image (if any), as needed to present it."""

    job: Job
    image: Image | None


def view(s: Session, job: Job) -> JobView:
    """The job with its image."""
    image = s.get(Image, job.image_id) if job.image_id else None
    return JobView(job, image)


# Built once: these run at every state change, and building a statement costs about as
# much CPU as running it.
_LOCKED_JOB = select(Job).where(Job.id == bindparam("job_id")).with_for_update()
_JOB_WITH_IMAGE = (select(Job, Image).outerjoin(Image, Image.id == Job.image_id)
                   .where(Job.id == bindparam("job_id")))


def locked_job(s: Session, job_id: str) -> Job | None:
    """The job's row, locked for the rest of the transaction (PostgreSQL)."""
    return s.scalars(_LOCKED_JOB, {"job_id": job_id}).first()


def locked_view(s: Session, job_id: str) -> JobView | None:
    """``locked_job`` with its image (if any, not locked). While the view is held, the
    session has the image at hand: ``view`` and writes to the image need no query of
    their own.

    On SQLite the image comes in the job's statement (writes are serialised, so nothing
    changes between them). On PostgreSQL it is read after the lock: a statement that waits
    for the job's lock re-reads the job's row when it gets it but not a joined image's,
    which could be older than what the lock's holder wrote."""
    if s.get_bind().dialect.name != "sqlite":
        job = locked_job(s, job_id)
        return view(s, job) if job is not None else None
    row = s.execute(_JOB_WITH_IMAGE, {"job_id": job_id}).first()
    return JobView(row[0], row[1]) if row is not None else None


def insert_rows(s: Session, rows: Sequence[Job] | Sequence[Image]) -> None:
    """Store new rows of one kind in one Core INSERT, run for each (executemany). Every
    column must be set (KeyError otherwise): a row built for it sets them all."""
    if not rows:
        return
    params = []
    for row in rows:
        state = instance_state(row)
        params.append({attr.columns[0].key: state.dict[attr.key]
                       for attr in state.mapper.column_attrs})
    s.connection().execute(insert(type(rows[0])), params)


# The UPDATE ``save`` runs for each kind of row: its SET clause is the columns each call's
# parameters name.
_SAVE = {kind: update(kind).where(kind.id == bindparam("id_")) for kind in (Job, Image)}


def save(s: Session, *rows: Job | Image | None) -> None:
    """Write the changed columns of stored ``rows`` now and mark them clean: what the
    session's flush would write at commit, without its unit of work (most of a worker's
    CPU per state change). Rows of one kind with the same columns changed go in one
    statement, run for each (executemany). New rows are left to the flush.

    Not inside a savepoint that may roll back: the rows are marked clean outside the
    session's own bookkeeping, so a savepoint's rollback would not expire them (the whole
    transaction's rollback does)."""
    batches: dict[tuple[type[Job] | type[Image], frozenset[str]], list[dict[str, Any]]] = {}
    written = []
    for row in rows:
        if row is None:
            continue
        state = instance_state(row)
        if not state.persistent or not state.committed_state:
            continue
        columns = state.mapper.column_attrs
        values = {columns[key].columns[0].key: state.dict[key] for key in state.committed_state}
        batches.setdefault((type(row), frozenset(values)), []).append({"id_": row.id, **values})
        written.append(state)
    for (kind, _), params in batches.items():
        s.connection().execute(_SAVE[kind], params)
    for state in written:
        # The values written are now the stored ones (what a flush marks after its UPDATE).
        state._commit_all(state.dict, s.identity_map)

"""Queue positions: where waiting jobs stand in the line workers take them from.

The order is ``server.core.line``'s; here are the queries it needs: per priority and user,
how many jobs wait and the oldest of them (one grouped query), and a user's own waiting
jobs when a position or the front of the line needs them.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, case, func, select
from sqlalchemy.orm import Session

from server.core import line
from server.core.jobs import PRIORITY_ORDER, JobState, base_queue, is_final, queue_family
from server.data.models import Image, Job, as_utc, utcnow
from server.data.store.jobs import get_job
from server.data.store.views import JobView, save, view


def _waiting(query: Any) -> Any:
    """``query`` narrowed to the jobs waiting, eligible, in a queue family: its parameters
    are ``family`` (the family's queues) and ``now``."""
    return (query.where(Job.queue.in_(bindparam("family", expanding=True)),
                        Job.state == JobState.QUEUED.value)
            .where((Job.run_at.is_(None)) | (Job.run_at <= bindparam("now"))))


# Built once, with parameters: a position is read at every upload and job start, and
# building these statements cost several times what running them does.
_RANK = case(PRIORITY_ORDER, value=Job.priority, else_=PRIORITY_ORDER["normal"])
_GROUPS = _waiting(select(_RANK, Job.user_id, func.count(), func.min(Job.id), func.max(Job.id))
                   ).group_by(_RANK, Job.user_id)
_OWN = _waiting(select(Job.id)).where(
    Job.user_id == bindparam("user_id"), Job.priority == bindparam("priority")
).order_by(Job.id)
_OLDER = _waiting(select(func.count())).where(
    Job.user_id == bindparam("user_id"), Job.priority == bindparam("priority"),
    Job.id < bindparam("job_id"))
_TURN = func.row_number().over(partition_by=(Job.user_id, Job.priority),
                               order_by=Job.id).label("turn")
_RANKED = _waiting(select(Job.id, Job.user_id, Job.priority, _TURN)).where(
    Job.user_id.in_(bindparam("users", expanding=True)),
    Job.priority.in_(bindparam("priorities", expanding=True))).subquery()
_OLDEST = (select(_RANKED.c.id, _RANKED.c.user_id, _RANKED.c.priority)
           .where(_RANKED.c.turn <= bindparam("turns")).order_by(_RANKED.c.id))


class _Line:
    """The waiting (eligible) jobs of one queue family, as workers will take them.

    A job already handed to a worker's queue may still run before its turn, so a position
    is an estimate, off by at most the jobs there (about one per worker thread).
    """

    def __init__(self, s: Session, base: str, now: datetime) -> None:
        self.s, self.now = s, now
        self.family = queue_family(base)
        self.params: dict[str, Any] = {"family": list(self.family), "now": now}
        rows = s.execute(_GROUPS, self.params).all()
        self.groups: line.Groups = {}
        # Each group's newest waiting job: a job just recorded is usually that one, and
        # then how many of its group are older needs no query of its own.
        self._last: dict[tuple[int, str], str] = {}
        for rank_value, user_id, count, first, last in rows:
            self.groups.setdefault(int(rank_value), {})[user_id] = (int(count), first)
            self._last[(int(rank_value), user_id)] = last
        self._turns: dict[tuple[str, str], list[str]] = {}

    def _own(self, user_id: str, priority: str) -> list[str]:
        """The user's waiting job ids of one priority, oldest first."""
        return list(self.s.scalars(_OWN, {**self.params, "user_id": user_id,
                                          "priority": priority}))

    def preload(self, user_id: str) -> None:
        """Keep the user's waiting job ids at hand: many positions of theirs to come."""
        for priority in PRIORITY_ORDER:
            if user_id in self.groups.get(line.rank(priority), {}):
                self._turns[(user_id, priority)] = self._own(user_id, priority)

    def _earlier(self, job: Job) -> int:
        """How many of the owner's waiting jobs of its priority are older than it."""
        known = self._turns.get((job.user_id, job.priority))
        if known is not None:
            return bisect.bisect_left(known, job.id)
        rank = line.rank(job.priority)
        if self._last.get((rank, job.user_id)) == job.id:
            return self.groups[rank][job.user_id][0] - 1
        return int(self.s.scalar(_OLDER, {**self.params, "user_id": job.user_id,
                                          "priority": job.priority, "job_id": job.id}) or 0)

    def position(self, job: Job) -> int | None:
        if job.state != JobState.QUEUED.value or job.queue not in self.family:
            return None
        if job.run_at is not None and as_utc(job.run_at) > self.now:
            return None
        if job.user_id not in self.groups.get(line.rank(job.priority), {}):
            return None
        return line.position(self.groups, user_id=job.user_id, priority=job.priority,
                             turn=self._earlier(job) + 1)

    def front(self, limit: int) -> list[str]:
        """The ids of the first ``limit`` jobs in start order."""
        picks = line.front(self.groups, limit)
        own = self._oldest(line.turns_needed(picks))
        return [own[(p.user_id, p.priority)][p.turn - 1] for p in picks
                if p.turn <= len(own[(p.user_id, p.priority)])]

    def _oldest(self, needed: dict[tuple[str, str], int]) -> dict[tuple[str, str], list[str]]:
        """For each (user, priority): that many of the user's oldest waiting job ids of that
        priority, oldest first; one query for all of them (a query per user was most of a
        refresh's cost)."""
        own: dict[tuple[str, str], list[str]] = {key: [] for key in needed}
        if not needed:
            return own
        rows = self.s.execute(_OLDEST, {
            **self.params, "users": sorted({user for user, _ in needed}),
            "priorities": sorted({priority for _, priority in needed}),
            "turns": max(needed.values())})
        for job_id, user_id, priority in rows:
            ids = own.get((user_id, priority))
            if ids is not None and len(ids) < needed[(user_id, priority)]:
                ids.append(job_id)
        return own


def queue_position(s: Session, /, *, job: Job) -> int | None:
    """How many waiting jobs of the same queue family start before this one: those of
    higher priorities, then those of its own whose turn comes first (``core.line``)."""
    return queue_positions(s, jobs=[job])[0]


def queue_positions(s: Session, /, *, jobs: Sequence[Job]) -> list[int | None]:
    """``queue_position`` of each of ``jobs``, reading each queue family's line once (a
    group of uploads recorded together needs one grouped count, not one each)."""
    lines: dict[str, _Line] = {}
    now = utcnow()
    owners: dict[str, int] = {}
    for job in jobs:
        owners[job.user_id] = owners.get(job.user_id, 0) + 1
    positions: list[int | None] = []
    for job in jobs:
        if job.state != JobState.QUEUED.value or (
                job.run_at is not None and as_utc(job.run_at) > now):
            positions.append(None)
            continue
        base = base_queue(job.queue)
        if base not in lines:
            lines[base] = _Line(s, base, now)
            for user_id, count in owners.items():
                if count > 1:  # their own line once, not a count per job
                    lines[base].preload(user_id)
        positions.append(lines[base].position(job))
    return positions


def get_job_positioned(s: Session, /, *, job_id: str,
                       user_id: str | None) -> tuple[JobView, int | None] | None:
    """``get_job`` plus the job's queue position (None unless it is waiting)."""
    found = get_job(s, job_id=job_id, user_id=user_id)
    return (found, queue_position(s, job=found.job)) if found else None


def line_front(s: Session, /, *, queue: str, limit: int) -> list[str]:
    """The ids of the first ``limit`` jobs waiting, eligible, in the queue's family, in start
    order (none when nobody waits). A read: the refresh that follows (``advance_line``)
    takes a write turn only when it has someone to tell, and holds it only for its writes."""
    return _Line(s, base_queue(queue), utcnow()).front(limit)


_FRONT_JOBS = (select(Job).where(Job.id.in_(bindparam("ids", expanding=True)),
                                 Job.state == JobState.QUEUED.value).with_for_update())
_IMAGES = select(Image).where(Image.id.in_(bindparam("ids", expanding=True)))


def advance_line(s: Session, /, *, ids: Sequence[str]) -> list[tuple[JobView, int]]:
    """The jobs of ``ids`` (``line_front``'s, in start order) still waiting, each with its
    position among them; their seq grows so that clients take the new position (a job
    ahead of them just started). A job that left the line since the read is skipped, and
    one that joined it in between is counted at the next refresh: a position is an
    estimate (see ``_Line``)."""
    if not ids:
        return []
    jobs = {job.id: job for job in s.scalars(_FRONT_JOBS, {"ids": list(ids)})}
    waiting = [jobs[job_id] for job_id in ids if job_id in jobs]
    for job in waiting:
        job.seq += 1
    save(s, *waiting)  # one statement for all of them
    # Their images in one query (a query per job was most of a refresh's cost).
    image_ids = [job.image_id for job in waiting if job.image_id]
    images = {image.id: image for image in s.scalars(_IMAGES, {"ids": image_ids})} \
        if image_ids else {}
    return [(JobView(job, images.get(job.image_id) if job.image_id else None), position)
            for position, job in enumerate(waiting)]


def snapshot_jobs(s: Session, /, *, user_id: str, finished_since: datetime,
                  limit: int = 500) -> list[tuple[JobView, int | None]]:
    """The user's unfinished jobs and those finished since the given time, oldest first,
    each with its queue position."""
    finals = [state.value for state in JobState if is_final(state)]
    query = (
        select(Job)
        .where(Job.user_id == user_id)
        .where(Job.state.not_in(finals) | (Job.finished_at >= finished_since))
        .order_by(Job.id.desc())
        .limit(limit)
    )
    jobs = list(reversed(list(s.scalars(query))))
    return [(view(s, job), position)
            for job, position in zip(jobs, queue_positions(s, jobs=jobs), strict=True)]

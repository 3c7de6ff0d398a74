"""A running job's live state: where its stage, progress and seq are true (pure).

While a job is ``active``, its worker pushes each ``job:progress`` through Redis alone: a
small hash per job (``keys.job_live``) holds the attempt, the last pushed seq, stage and
progress, written in the same script that publishes the event. The database is written
at the attempt's edges only: its start (``job:active``) and its end (completed,
retrying, failed, cancelled), which also stores the attempt's progress steps in the
job's timeline. So for an active job the truth is split:

- state, attempt, error, result and the times: the database row, always;
- stage, progress and seq: the live hash when it names the row's attempt with a higher
  seq (``shown``), else the row. Readers (``GET /api/jobs/{id}``, ``subscribe``,
  ``jobs:snapshot``, lists, batches) lay the one over the other.

Seqs stay strictly growing per job (CONTRACT) because an attempt's pushes take at most
``SEQ_BLOCK`` seqs past the row's, and any database write that changes an active job
moves its seq past that block (``next_seq``): a cancel, a takeover or the end always
outranks every push before it. Should the hash be gone (a Redis restart, its TTL), the
worker reports through the database again, which is correct, only slower; and a job
that reports steps has its row written at its first step ``ROW_EVERY_S`` after the last
write all the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from server.core.jobs import JobState

# How many progress pushes an attempt may make from Redis between database writes; one
# more goes to the database (and starts a new block). Seqs have gaps; they only grow.
SEQ_BLOCK = 100
# A running job's hash lives this long after its last write: a job quiet for longer
# reports through the database at its next step (and seeds the hash again).
LIVE_TTL_MS = 3_600_000
# After the job leaves ``active`` its hash says so this long, so that a push the run
# makes meanwhile is refused (the run stops): longer than any push takes to arrive.
ENDED_TTL_MS = 60_000
# A running job that reports steps has its row written at least this often: its next
# step after that goes to the database. It bounds how far the row lags behind the
# pushes (what readers show should Redis lose the hash), how long a run whose cancel's
# event was lost goes on, and how many steps a killed worker takes from the timeline.
ROW_EVERY_S = 10.0

# The hash's fields, in the order ``parse`` takes them.
FIELDS = ("attempt", "seq", "stage", "progress", "ended")


@dataclass(frozen=True)
class LiveState:
    """What the hash holds for a job: the attempt's last step pushed (or its start), and
    once the job left that attempt, the seq of the event that said so."""

    attempt: int
    seq: int
    stage: str
    progress: int
    ended: int | None = None


@dataclass(frozen=True)
class PushedStep:
    """A progress step a worker pushed from Redis alone, kept for the job's timeline when
    the attempt's next database write is made."""

    seq: int
    stage: str
    progress: int
    at: datetime


def parse(values: Sequence[bytes | str | None]) -> LiveState | None:
    """The hash's ``FIELDS`` as read (HMGET), or None when there is no usable state."""
    if len(values) != len(FIELDS) or any(v is None for v in values[:4]):
        return None
    text = [v.decode() if isinstance(v, bytes) else v for v in values]
    try:
        return LiveState(attempt=int(text[0] or 0), seq=int(text[1] or 0), stage=text[2] or "",
                         progress=int(text[3] or 0),
                         ended=int(text[4]) if text[4] is not None else None)
    except ValueError:
        return None


def shown(state: str, attempt: int, seq: int, live: LiveState | None) -> LiveState | None:
    """The live state to show over a row (its ``state``, ``attempt`` and ``seq``), if any:
    only for an active row, of the same attempt, pushed after the row was written. Also
    once the hash says the attempt ended: the row was read before that end, and the step
    is what was pushed last before it (a read never shows less than was pushed before
    it began)."""
    if live is None or state != JobState.ACTIVE.value:
        return None
    return live if live.attempt == attempt and live.seq > seq else None


def next_seq(seq: int, state: str) -> int:
    """The seq a database write gives a job whose row has ``seq`` and ``state``: past
    every push its attempt may have made from Redis when the job was active."""
    return seq + 1 + (SEQ_BLOCK if state == JobState.ACTIVE.value else 0)

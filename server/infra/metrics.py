"""Prometheus metrics (pure): definitions, an in-memory tally, and the figures a scrape shows
(``server.infra.exposition`` renders them as the text format, with prometheus_client).

Counters and histograms are deployment-wide: each process adds its increments (a
``Tally``) to one Redis hash now and then (``server.infra.telemetry``), one field per
series, and any web process renders that hash on a scrape. A field names its family,
its kind and its labels as JSON, so label values need no escaping in the hash.
Histogram buckets are stored per bucket (not cumulative) and summed when shown;
the count is the sum of the buckets, so ``_count`` always equals the ``+Inf`` bucket.
"""

from __future__ import annotations

import functools
import json
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from server.core.jobs import base_queue
from server.core.queue_figures import COUNTED_STATES

Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Counter:
    """A count that only grows; exposed as ``<name>_total``."""

    name: str
    help: str
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class Histogram:
    """Observations in cumulative buckets (upper bounds in seconds), with sum and count."""

    name: str
    help: str
    buckets: tuple[float, ...]
    labels: tuple[str, ...] = ()


UPLOADS = Counter(
    "darkroom_uploads",
    "Uploaded files by outcome: accepted (202), duplicate (200) or rejected (by status "
    "and error code; a request refused as a whole counts once).",
    ("outcome", "status", "reason"))
# Image stages take milliseconds to seconds; custom task types may take minutes.
STAGE_DURATION = Histogram(
    "darkroom_job_stage_duration_seconds",
    "Time a job spent in each stage it finished (a stage ends when the next one starts "
    "or the run completes), by job type.",
    (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    ("type", "stage"))
RUN_DURATION = Histogram(
    "darkroom_job_run_duration_seconds",
    "Time one run (attempt) of a job took in a worker, by job type and how it ended "
    "(completed, retrying, failed, cancelled).",
    (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600),
    ("type", "outcome"))
# From when a job could run (made, its delay or retry back-off over, or a failed job's
# retry made) to the start of the run: a fraction of a second when workers keep up,
# minutes behind a backlog.
WAIT_DURATION = Histogram(
    "darkroom_job_wait_duration_seconds",
    "Time a job waited in its queue before a run began, from when it could run (made, or "
    "its delay or back-off over; a failed job's retry from the retry), by job type.",
    (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
    ("type",))
# Publish → emit is usually a millisecond or two; seconds mean a backlog.
RELAY_DELAY = Histogram(
    "darkroom_event_relay_delay_seconds",
    "Time from publishing an event on the bus to its Socket.IO emit (wall clocks; each "
    "web process relays every event).",
    (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
SHARED: tuple[Counter | Histogram, ...] = (UPLOADS, STAGE_DURATION, RUN_DURATION, WAIT_DURATION,
                                           RELAY_DELAY)


# -- recording ---------------------------------------------------------------------------------

def _pairs(declared: tuple[str, ...], given: Mapping[str, object]) -> Labels:
    if set(given) != set(declared):
        raise ValueError(f"labels {sorted(given)} do not match {list(declared)}")
    return tuple((name, str(given[name])) for name in declared)


@functools.lru_cache(maxsize=4096)
def encode_field(family: str, kind: str, labels: Labels) -> str:
    """The hash field of one series: ``[family, kind, [[label, value], ...]]`` as JSON.
    Kept for the series seen most lately: every event, request and job records a few
    observations, nearly always of the same series."""
    return json.dumps([family, kind, [list(pair) for pair in labels]], separators=(",", ":"))


def decode_field(raw: str | bytes) -> tuple[str, str, Labels] | None:
    """The family, kind and labels of a hash field; None for anything else."""
    try:
        family, kind, pairs = json.loads(raw)
        labels = tuple((str(name), str(value)) for name, value in pairs)
    except (ValueError, TypeError):
        return None
    if not isinstance(family, str) or not isinstance(kind, str):
        return None
    return family, kind, labels


def bucket_bound(buckets: Sequence[float], value: float) -> float:
    """The smallest upper bound ``le`` with ``value <= le`` (``inf`` past the last)."""
    for bound in buckets:
        if value <= bound:
            return float(bound)
    return math.inf


def format_number(value: float) -> str:
    """A bucket bound as its ``le`` label spells it, stored and shown alike: whole numbers
    without a fraction (``le="1"``, as these series have always been named, where
    prometheus_client's own histograms would write "1.0"), ``+Inf``/``-Inf``/``NaN`` as
    Prometheus does, anything else at full precision."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


@dataclass(frozen=True)
class Increments:
    """What a tally held: whole-number increments per field, and float sums per field."""

    counts: dict[str, int] = field(default_factory=dict)
    sums: dict[str, float] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.counts or self.sums)


class Tally:
    """Increments not yet added to the shared hash; safe to use from several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending = Increments()

    def inc(self, counter: Counter, by: int = 1, **labels: object) -> None:
        """Add ``by`` to the counter's series with these labels."""
        key = encode_field(counter.name, "total", _pairs(counter.labels, labels))
        with self._lock:
            self._pending.counts[key] = self._pending.counts.get(key, 0) + by

    def observe(self, histogram: Histogram, value: float, **labels: object) -> None:
        """Record one observation (negative values count as 0: clocks of two hosts)."""
        value = max(0.0, float(value))
        pairs = _pairs(histogram.labels, labels)
        le = format_number(bucket_bound(histogram.buckets, value))
        bucket = encode_field(histogram.name, "bucket", (*pairs, ("le", le)))
        total = encode_field(histogram.name, "sum", pairs)
        with self._lock:
            self._pending.counts[bucket] = self._pending.counts.get(bucket, 0) + 1
            self._pending.sums[total] = self._pending.sums.get(total, 0.0) + value

    def drain(self) -> Increments:
        """Everything recorded since the last drain; the tally starts again empty."""
        with self._lock:
            pending, self._pending = self._pending, Increments()
        return pending

    def restore(self, increments: Increments) -> None:
        """Put back increments that could not be written (they go out with the next ones)."""
        with self._lock:
            for key, count in increments.counts.items():
                self._pending.counts[key] = self._pending.counts.get(key, 0) + count
            for key, amount in increments.sums.items():
                self._pending.sums[key] = self._pending.sums.get(key, 0.0) + amount


# -- per-process socket reports ----------------------------------------------------------------

@dataclass(frozen=True)
class SocketReport:
    """One web process's connected sockets and distinct users."""

    process: str
    sockets: int
    users: int


def encode_socket_report(sockets: int, users: int, at: float) -> str:
    """The value a web process writes under its name in the sockets hash."""
    return json.dumps({"sockets": sockets, "users": users, "at": at})


def live_socket_reports(raw: Mapping[Any, Any], *, now: float,
                        max_age_s: float) -> tuple[list[SocketReport], list[str]]:
    """Reports fresher than ``max_age_s`` and the processes whose report is stale or bad."""
    live, stale = [], []
    for key, value in raw.items():
        process = key.decode() if isinstance(key, bytes) else str(key)
        try:
            data = json.loads(value)
            report = SocketReport(process, int(data["sockets"]), int(data["users"]))
            fresh = now - float(data["at"]) <= max_age_s
        except (ValueError, TypeError, KeyError):
            fresh = False
        if fresh:
            live.append(report)
        else:
            stale.append(process)
    return sorted(live, key=lambda r: r.process), stale


# -- the shared series, as a scrape shows them --------------------------------------------------

Grouped = dict[tuple[str, str], dict[Labels, float]]


def _names(labels: Labels) -> tuple[str, ...]:
    """The label names of a stored series: a series under other names than its family
    declares now (a definition since changed) is not shown, as no family's series may
    carry names it does not declare."""
    return tuple(name for name, _ in labels)


def _parse_number(text: str) -> float:
    return math.inf if text == "+Inf" else float(text)


def group_samples(samples: Mapping[Any, Any]) -> Grouped:
    """The shared hash grouped by (family, kind) → labels → value; fields not ours and
    values that are not numbers are left out."""
    grouped: Grouped = {}
    for raw_field, raw_value in samples.items():
        decoded = decode_field(raw_field)
        if decoded is None:
            continue
        family, kind, labels = decoded
        try:
            value = float(raw_value)
        except (TypeError, ValueError):
            continue
        grouped.setdefault((family, kind), {})[labels] = value
    return grouped


def counter_series(counter: Counter, grouped: Grouped) -> list[tuple[Labels, float]]:
    """The counter's series, sorted by labels; an unlabelled counter shows 0 before its
    first increment (a labelled one has no series to show until then)."""
    series = {labels: value for labels, value in grouped.get((counter.name, "total"), {}).items()
              if _names(labels) == counter.labels}
    if not series and not counter.labels:
        return [((), 0.0)]
    return sorted(series.items())


@dataclass(frozen=True)
class HistogramSeries:
    """One series of a histogram as shown: cumulative buckets, sum and count."""

    labels: Labels
    buckets: tuple[tuple[str, float], ...]
    """(``le`` as spelled, observations at or below it), every declared bound and ``+Inf``
    last, so ``_count`` (the ``+Inf`` bucket) always equals the sum of the buckets."""
    sum: float


def histogram_series(histogram: Histogram, grouped: Grouped) -> list[HistogramSeries]:
    """The histogram's series, sorted by labels, from its per-bucket counts and sums; an
    unlabelled histogram shows zeros before its first observation."""
    by_series: dict[Labels, dict[float, float]] = {}
    for labels, count in grouped.get((histogram.name, "bucket"), {}).items():
        rest = tuple(pair for pair in labels if pair[0] != "le")
        le = dict(labels).get("le")
        if le is None or _names(rest) != histogram.labels:
            continue
        try:
            bound = _parse_number(le)
        except ValueError:
            continue
        counts = by_series.setdefault(rest, {})
        counts[bound] = counts.get(bound, 0.0) + count
    if not by_series and not histogram.labels:
        by_series = {(): {}}
    sums = grouped.get((histogram.name, "sum"), {})
    shown = []
    for labels in sorted(by_series):
        counts = by_series[labels]
        # Cumulative: everything observed at or below each bound. A bound stored by an
        # older bucket layout lands in the next bound above it.
        buckets = tuple((format_number(float(bound)),
                         sum(c for le, c in counts.items() if le <= bound))
                        for bound in (*histogram.buckets, math.inf))
        shown.append(HistogramSeries(labels, buckets, sums.get(labels, 0.0)))
    return shown


@dataclass(frozen=True)
class QueueMessages:
    """Messages Dramatiq holds in Redis for one queue."""

    ready: int
    """In the queue's list, waiting for a worker to fetch them."""
    delayed: int
    """On the queue's delay queue, not yet due (or due and about to move)."""
    unacked: int
    """Fetched by a worker (prefetched or running), not yet acknowledged."""


# -- jobs by queue, type and state ---------------------------------------------------------------

# The states a job is counted in (a queued job not due yet counts as delayed).
JOB_STATES = COUNTED_STATES


@dataclass(frozen=True)
class FinishedCounts:
    """The figures that need a pass over every stored finished job, as counted at ``at``
    (Unix time): recounted at most once per METRICS_RECOUNT_S for the whole deployment and
    shared through Redis, so a scrape never pays for the history."""

    at: float
    jobs: Mapping[tuple[str, str, str], int]
    """Finished jobs by (queue, type, state)."""
    completed_recent: Mapping[str, int]
    """Jobs of each queue completed within ``window_s`` before ``at``."""
    window_s: float
    dead_letters: int

    def encode(self) -> str:
        return json.dumps({"at": self.at, "window_s": self.window_s,
                           "dead_letters": self.dead_letters,
                           "jobs": [[*key, n] for key, n in sorted(self.jobs.items())],
                           "completed_recent": dict(self.completed_recent)})

    @classmethod
    def decode(cls, raw: str | bytes | None) -> FinishedCounts | None:
        """The counts ``encode`` wrote; None for nothing or anything else."""
        if raw is None:
            return None
        try:
            data = json.loads(raw)
            jobs = {(str(q), str(t), str(st)): int(n) for q, t, st, n in data["jobs"]}
            recent = {str(q): int(n) for q, n in data["completed_recent"].items()}
            return cls(float(data["at"]), jobs, recent, float(data["window_s"]),
                       int(data["dead_letters"]))
        except (ValueError, TypeError, KeyError, AttributeError):
            return None


def count_finished(rows: Iterable[tuple[str, str, str, int, int]], dead_letters: int, *,
                   at: float, window_s: float) -> FinishedCounts:
    """``FinishedCounts`` from ``store.finished_job_counts``'s rows."""
    jobs: dict[tuple[str, str, str], int] = {}
    recent: dict[str, int] = {}
    for queue, job_type, state, count, completed_recent in rows:
        jobs[(queue, job_type, state)] = jobs.get((queue, job_type, state), 0) + count
        if completed_recent:
            recent[queue] = recent.get(queue, 0) + completed_recent
    return FinishedCounts(at, jobs, recent, window_s, dead_letters)


def job_figures(*, bases: Sequence[str], types: Iterable[str],
                unfinished: Iterable[tuple[str, str, str, int]],
                oldest: Mapping[str, datetime], finished: FinishedCounts, now: datetime,
                paused: set[str] | None, workers: int | None,
                ) -> tuple[dict[str, Any], dict[tuple[str, str], int]]:
    """The queue report (the shape of ``GET /api/queues``) and the jobs by type and
    state, from the unfinished jobs counted now and the finished ones counted last.

    ``paused`` and ``workers`` are None when Redis, which alone knows them, is away.
    """
    by_family: dict[str, dict[str, int]] = {base: dict.fromkeys(JOB_STATES, 0)
                                              for base in bases}
    by_type: dict[tuple[str, str], int] = {(job_type, state): 0 for job_type in types
                                           for state in JOB_STATES}
    every = [*unfinished, *((q, t, st, n) for (q, t, st), n in finished.jobs.items())]
    for queue, job_type, state, count in every:
        if state not in JOB_STATES:
            continue
        family = by_family.get(base_queue(queue))
        if family is not None:
            family[state] += count
        if (job_type, state) not in by_type:  # a type no longer registered: still shown
            by_type.update({(job_type, other): 0 for other in JOB_STATES})
        by_type[(job_type, state)] += count
    queues = []
    for base in bases:
        since = [at for queue, at in oldest.items() if base_queue(queue) == base]
        done = sum(n for queue, n in finished.completed_recent.items()
                   if base_queue(queue) == base)
        queues.append({
            "name": base, "paused": None if paused is None else base in paused,
            "counts": by_family[base],
            "oldest_waiting_s": round((now - min(since)).total_seconds(), 1) if since else None,
            "throughput_per_min": round(done / (finished.window_s / 60), 2),
        })
    return {"queues": queues, "workers": workers}, by_type


@dataclass(frozen=True)
class Scrape:
    """Everything one ``GET /metrics`` shows, read by the route (the I/O) beforehand."""

    report: dict[str, Any]
    dead_letters: int
    jobs_by_type: Mapping[tuple[str, str], int] = field(default_factory=dict)
    queue_messages: Mapping[str, QueueMessages] = field(default_factory=dict)
    sockets: Sequence[SocketReport] = ()
    samples: Mapping[Any, Any] = field(default_factory=dict)
    # False when Redis could not be read: only the database's figures are shown then.
    redis_up: bool = True
    # How old the counts of finished jobs, dead letters and throughput are (None: unknown).
    recount_age_s: float | None = None

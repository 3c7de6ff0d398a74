"""``GET /metrics``'s body: the figures of a scrape as Prometheus text, by prometheus_client.

A collector turns what the route read beforehand (``metrics.Scrape``: database counts,
Redis figures, the shared hash of counters and histograms) into metric families, and
prometheus_client's ``generate_latest`` writes them, escaping included. Each scrape has
a registry of its own: the library's default one would add this process's own collectors
(CPU, memory, GC), figures of one process among many in a deployment-wide scrape.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from server.infra.metrics import (
    SHARED,
    Counter,
    Grouped,
    Histogram,
    Labels,
    QueueMessages,
    Scrape,
    SocketReport,
    counter_series,
    group_samples,
    histogram_series,
)

# The classic text format, which generate_latest writes (its CONTENT_TYPE_LATEST names
# the 1.0.0 format, which it does not).
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


def _values(labels: Labels) -> list[str]:
    return [value for _, value in labels]


def _without_empty_labels(family: Metric) -> Metric:
    """Prometheus reads a label with an empty value as no label at all (the reason of an
    accepted upload): leave such labels out, so that the reference parser reads the same."""
    family.samples = [sample._replace(labels={k: v for k, v in sample.labels.items() if v})
                      for sample in family.samples]
    return family


def _gauge(name: str, help_text: str, labels: Sequence[str] = (),
           series: Iterable[tuple[Sequence[str], float]] = ()) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, help_text, labels=labels)
    for values, value in series:
        family.add_metric(values, value)
    return family


def _counter(counter: Counter, grouped: Grouped) -> CounterMetricFamily:
    family = CounterMetricFamily(counter.name, counter.help, labels=counter.labels)
    for labels, value in counter_series(counter, grouped):
        family.add_metric(_values(labels), value)
    return family


def _histogram(histogram: Histogram, grouped: Grouped) -> HistogramMetricFamily:
    family = HistogramMetricFamily(histogram.name, histogram.help, labels=histogram.labels)
    for series in histogram_series(histogram, grouped):
        family.add_metric(_values(series.labels), list(series.buckets), series.sum)
    return family


def _queue_report(report: dict[str, Any], dead_letters: int) -> Iterator[Metric]:
    queues = report["queues"]
    yield _gauge("darkroom_jobs",
                 "Jobs by queue and state (delayed: queued with a future run_at).",
                 ("queue", "state"),
                 (((str(queue["name"]), state), count) for queue in queues
                  for state, count in sorted(queue["counts"].items())))
    gauges = [
        ("darkroom_queue_oldest_waiting_seconds", "Age of the oldest job waiting to start.",
         "oldest_waiting_s"),
        ("darkroom_queue_completed_per_minute", "Completions per minute, last 5 minutes.",
         "throughput_per_min"),
        ("darkroom_queue_paused", "1 while an admin has paused the queue.", "paused"),
    ]
    for metric, help_text, key in gauges:
        # None: unknown (no job waiting; Redis away for the pause state), so no sample.
        yield _gauge(metric, help_text, ("queue",),
                     (((str(queue["name"]),), float(queue[key])) for queue in queues
                      if queue[key] is not None))
    workers = report["workers"]  # None: unknown, Redis is away
    yield _gauge("darkroom_workers", "Worker processes with a fresh heartbeat.",
                 series=[] if workers is None else [((), int(workers))])
    yield _gauge("darkroom_dead_letters", "Jobs in the dead-letter queue.",
                 series=[((), dead_letters)])


def _recount(age_s: float | None) -> Metric:
    return _gauge("darkroom_jobs_recount_age_seconds",
                  "Age of the counts of finished jobs (completed, failed, cancelled), dead "
                  "letters and completions per minute: recounted at most every "
                  "METRICS_RECOUNT_S for the whole deployment; unfinished jobs are counted "
                  "on every scrape.",
                  series=[] if age_s is None else [((), round(age_s, 3))])


def _jobs_by_type(counts: Mapping[tuple[str, str], int]) -> Metric:
    return _gauge("darkroom_jobs_by_type",
                  "Jobs by type and state (delayed: queued with a future run_at).",
                  ("type", "state"), sorted(counts.items()))


def _queue_messages(queues: Mapping[str, QueueMessages]) -> Metric:
    return _gauge("darkroom_queue_messages",
                  "Messages in each Dramatiq Redis queue: ready (waiting to be fetched), "
                  "delayed (on its delay queue), unacked (fetched by a worker, not yet done).",
                  ("queue", "state"),
                  (((name, state), getattr(queues[name], state)) for name in sorted(queues)
                   for state in ("ready", "delayed", "unacked")))


def _sockets(reports: Sequence[SocketReport]) -> Iterator[Metric]:
    yield _gauge("darkroom_socket_connections",
                 "Socket.IO connections, over every live web process.",
                 series=[((), sum(r.sockets for r in reports))])
    yield _gauge("darkroom_socket_users",
                 "Authenticated users with a socket, summed over web processes (a user "
                 "connected to two processes counts on each).",
                 series=[((), sum(r.users for r in reports))])
    yield _gauge("darkroom_web_processes", "Web processes that reported their sockets recently.",
                 series=[((), len(reports))])
    yield _gauge("darkroom_process_socket_connections",
                 "Socket.IO connections of each live web process (host:pid).", ("process",),
                 (((r.process,), r.sockets) for r in reports))


class SharedCollector:
    """A prometheus_client collector over the shared hash's counters and histograms."""

    def __init__(self, samples: Mapping[Any, Any],
                 families: Sequence[Counter | Histogram] = SHARED) -> None:
        self._samples, self._families = samples, families

    def collect(self) -> Iterator[Metric]:
        grouped = group_samples(self._samples)
        for family in self._families:
            shown = _counter(family, grouped) if isinstance(family, Counter) \
                else _histogram(family, grouped)
            yield _without_empty_labels(shown)


class ScrapeCollector:
    """A prometheus_client collector over one scrape's figures (read beforehand: collecting
    does no I/O)."""

    def __init__(self, scrape: Scrape) -> None:
        self._scrape = scrape

    def collect(self) -> Iterator[Metric]:
        scrape = self._scrape
        gauges: list[Metric] = [
            _gauge("darkroom_redis_up", "1 if this scrape could read Redis (queues, workers, "
                   "sockets, counters and histograms come from there).",
                   series=[((), int(scrape.redis_up))]),
            *_queue_report(scrape.report, scrape.dead_letters),
            _jobs_by_type(scrape.jobs_by_type),
            _recount(scrape.recount_age_s),
            _queue_messages(scrape.queue_messages),
            *_sockets(scrape.sockets),
        ]
        for family in gauges:
            yield _without_empty_labels(family)
        yield from SharedCollector(scrape.samples).collect()


def expose(collector: Collector) -> str:
    """The text format of what ``collector`` collects, on a registry of its own."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry).decode()


def render(scrape: Scrape) -> str:
    """The whole ``GET /metrics`` body."""
    return expose(ScrapeCollector(scrape))

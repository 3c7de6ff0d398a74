"""The tally, the series maths and the /metrics text (by prometheus_client), checked with
plain inputs and the reference parser."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from server.infra import exposition, metrics
from server.infra.exposition import SharedCollector
from server.infra.metrics import Counter, Histogram, Scrape, Tally

LATENCY = Histogram("t_latency_seconds", "Test latency.", (0.1, 0.5, 1.0), ("route",))
PLAIN = Histogram("t_plain_seconds", "No labels.", (1.0, 2.0))
HITS = Counter("t_hits", "Test hits.", ("path",))


def _samples(tally: Tally) -> dict[str, float]:
    """What the shared hash would hold after one flush of ``tally``."""
    drained = tally.drain()
    return {**{k: float(v) for k, v in drained.counts.items()}, **drained.sums}


def _shown(samples: dict[Any, Any], families: list[Counter | Histogram]) -> str:
    """The text format of these families from the shared hash's fields."""
    return exposition.expose(SharedCollector(samples, families))


def _parse(text: str) -> dict[str, Any]:
    """Every sample by (name, sorted labels), via prometheus_client's own parser."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _report() -> dict[str, Any]:
    return {"queues": [{"name": "images", "paused": False,
                        "counts": {"queued": 2, "completed": 5},
                        "oldest_waiting_s": 1234567.5, "throughput_per_min": 0.4}],
            "workers": 3}


@pytest.mark.parametrize(("value", "bound"), [
    (0.0, 0.1), (0.1, 0.1), (0.1000001, 0.5), (0.5, 0.5), (0.7, 1.0), (1.0, 1.0),
    (1.5, math.inf),
])
def test_an_observation_lands_in_the_smallest_bucket_that_holds_it(value: float,
                                                                    bound: float) -> None:
    assert metrics.bucket_bound(LATENCY.buckets, value) == bound


def test_histogram_buckets_are_cumulative_and_inf_equals_count() -> None:
    tally = Tally()
    for value in (0.05, 0.1, 0.3, 0.3, 0.9, 7.0):
        tally.observe(LATENCY, value, route="/a")
    tally.observe(LATENCY, 0.2, route="/b")
    parsed = _parse(_shown(_samples(tally), [LATENCY]))

    def bucket(route: str, le: str) -> float:
        return float(parsed[("t_latency_seconds_bucket", (("le", le), ("route", route)))])

    assert [bucket("/a", le) for le in ("0.1", "0.5", "1", "+Inf")] == [2, 4, 5, 6]
    assert parsed[("t_latency_seconds_count", (("route", "/a"),))] == 6
    assert parsed[("t_latency_seconds_sum", (("route", "/a"),))] == pytest.approx(8.65)
    assert [bucket("/b", le) for le in ("0.1", "0.5", "1", "+Inf")] == [0, 1, 1, 1]


def test_bucket_text_uses_prometheus_spellings() -> None:
    tally = Tally()
    tally.observe(LATENCY, 3, route="r")
    text = _shown(_samples(tally), [LATENCY])
    buckets = {dict(labels)["le"]: value for (name, labels), value in _parse(text).items()
               if name == "t_latency_seconds_bucket"}
    # le="1", not "1.0": the series keep the names they have always had.
    assert buckets == {"0.1": 0, "0.5": 0, "1": 0, "+Inf": 1}
    assert 't_latency_seconds_bucket{le="1",route="r"} ' in text
    assert "# TYPE t_latency_seconds histogram\n" in text


def test_increments_from_several_flushes_add_up() -> None:
    first, second = Tally(), Tally()
    first.observe(PLAIN, 0.5)
    second.observe(PLAIN, 0.5)
    second.observe(PLAIN, 1.5)
    merged: dict[str, float] = {}
    for part in (_samples(first), _samples(second)):
        for key, value in part.items():
            merged[key] = merged.get(key, 0.0) + value
    parsed = _parse(_shown(merged, [PLAIN]))
    assert parsed[("t_plain_seconds_bucket", (("le", "1"),))] == 2
    assert parsed[("t_plain_seconds_bucket", (("le", "2"),))] == 3
    assert parsed[("t_plain_seconds_sum", ())] == 2.5


def test_a_bucket_of_an_older_layout_counts_in_the_next_bound_above() -> None:
    stale = metrics.encode_field(PLAIN.name, "bucket", (("le", "0.25"),))
    between = metrics.encode_field(PLAIN.name, "bucket", (("le", "1.5"),))
    parsed = _parse(_shown({stale: 1, between: 2}, [PLAIN]))
    assert parsed[("t_plain_seconds_bucket", (("le", "1"),))] == 1
    assert parsed[("t_plain_seconds_bucket", (("le", "2"),))] == 3
    assert parsed[("t_plain_seconds_count", ())] == 3


def test_unlabelled_families_show_zero_before_any_observation() -> None:
    parsed = _parse(_shown({}, [PLAIN, Counter("t_once", "Once.")]))
    assert parsed[("t_plain_seconds_bucket", (("le", "+Inf"),))] == 0
    assert parsed[("t_plain_seconds_count", ())] == 0
    assert parsed[("t_once_total", ())] == 0
    labelled = _shown({}, [HITS])
    assert labelled == "# HELP t_hits_total Test hits.\n# TYPE t_hits_total counter\n"


def test_series_under_label_names_the_family_no_longer_declares_are_not_shown() -> None:
    old_hits = metrics.encode_field(HITS.name, "total", (("route", "/"),))
    old_bucket = metrics.encode_field(LATENCY.name, "bucket", (("path", "/"), ("le", "1")))
    assert _parse(_shown({old_hits: 3, old_bucket: 1}, [HITS, LATENCY])) == {}


def test_negative_observations_count_as_zero() -> None:
    tally = Tally()
    tally.observe(PLAIN, -0.2)  # a web host whose clock is behind the publisher's
    parsed = _parse(_shown(_samples(tally), [PLAIN]))
    assert parsed[("t_plain_seconds_bucket", (("le", "1"),))] == 1
    assert parsed[("t_plain_seconds_sum", ())] == 0


@pytest.mark.parametrize("value", ['say "hi"', "back\\slash", "two\nlines", "ünï", "a,b=c}"])
def test_label_values_survive_the_hash_and_the_text_format(value: str) -> None:
    tally = Tally()
    tally.inc(HITS, 2, path=value)
    drained = tally.drain()
    (field,) = drained.counts
    assert metrics.decode_field(field) == ("t_hits", "total", (("path", value),))
    assert _parse(_shown({field: 2}, [HITS])) == {("t_hits_total", (("path", value),)): 2.0}


def test_label_values_are_escaped_in_the_text() -> None:
    text = _shown({metrics.encode_field("t_hits", "total", (("path", 'a"b\\c\nd'),)): 1},
                  [HITS])
    assert 't_hits_total{path="a\\"b\\\\c\\nd"} ' in text


def test_labels_must_match_the_definition() -> None:
    with pytest.raises(ValueError, match="labels"):
        Tally().inc(HITS, path="/", extra="x")
    with pytest.raises(ValueError, match="labels"):
        Tally().observe(LATENCY, 1.0)


def test_drain_empties_and_restore_puts_back() -> None:
    tally = Tally()
    tally.inc(HITS, path="/")
    tally.observe(PLAIN, 1.5)
    drained = tally.drain()
    assert drained and not tally.drain()
    tally.restore(drained)
    tally.inc(HITS, path="/")
    again = tally.drain()
    assert sorted(again.counts.values()) == [1, 2]
    assert list(again.sums.values()) == [1.5]


def test_fields_not_ours_are_ignored() -> None:
    text = _shown({"junk": "1", b'["t_hits","total",[["path","/"]]]': b"x",
                   b'["t_hits","total",[["path","/x"]]]': b"4"}, [HITS])
    assert _parse(text) == {("t_hits_total", (("path", "/x"),)): 4}


def test_numbers() -> None:
    assert metrics.format_number(3.0) == "3"
    assert metrics.format_number(0.25) == "0.25"
    assert metrics.format_number(1234567.5) == "1234567.5"
    assert metrics.format_number(math.inf) == "+Inf"
    assert metrics.format_number(math.nan) == "NaN"


def test_socket_reports_older_than_the_limit_are_stale() -> None:
    raw = {b"web-a:1": metrics.encode_socket_report(3, 2, at=100.0),
           b"web-b:2": metrics.encode_socket_report(5, 5, at=80.0),
           b"web-c:3": b"not json"}
    live, stale = metrics.live_socket_reports(raw, now=110.0, max_age_s=15.0)
    assert live == [metrics.SocketReport("web-a:1", 3, 2)]
    assert sorted(stale) == ["web-b:2", "web-c:3"]


def test_the_whole_scrape_parses_and_keeps_the_existing_names() -> None:
    tally = Tally()
    tally.inc(metrics.UPLOADS, outcome="accepted", status=202, reason="")
    tally.inc(metrics.UPLOADS, outcome="rejected", status=415, reason="unsupported_type")
    tally.observe(metrics.STAGE_DURATION, 0.02, type="image.process", stage="thumbnail")
    tally.observe(metrics.RELAY_DELAY, 0.003)
    scrape = Scrape(
        report=_report(), dead_letters=1,
        jobs_by_type={("image.process", "completed"): 5, ("email.send", "queued"): 0},
        queue_messages={"images": metrics.QueueMessages(ready=2, delayed=1, unacked=4)},
        sockets=[metrics.SocketReport("h:1", 3, 2), metrics.SocketReport("h:2", 1, 1)],
        samples=_samples(tally))
    text = exposition.render(scrape)
    parsed = _parse(text)
    assert parsed[("darkroom_jobs", (("queue", "images"), ("state", "completed")))] == 5
    assert parsed[("darkroom_queue_oldest_waiting_seconds", (("queue", "images"),))] \
        == 1234567.5
    assert parsed[("darkroom_queue_paused", (("queue", "images"),))] == 0
    assert parsed[("darkroom_workers", ())] == 3
    assert parsed[("darkroom_dead_letters", ())] == 1
    assert parsed[("darkroom_jobs_by_type", (("state", "completed"),
                                             ("type", "image.process")))] == 5
    assert parsed[("darkroom_queue_messages", (("queue", "images"), ("state", "unacked")))] == 4
    assert parsed[("darkroom_socket_connections", ())] == 4
    assert parsed[("darkroom_socket_users", ())] == 3
    assert parsed[("darkroom_web_processes", ())] == 2
    assert parsed[("darkroom_process_socket_connections", (("process", "h:2"),))] == 1
    assert parsed[("darkroom_uploads_total", (("outcome", "accepted"), ("status", "202")))] == 1
    assert parsed[("darkroom_uploads_total", (("outcome", "rejected"),
                                              ("reason", "unsupported_type"),
                                              ("status", "415")))] == 1
    assert parsed[("darkroom_job_stage_duration_seconds_count",
                   (("stage", "thumbnail"), ("type", "image.process")))] == 1
    assert parsed[("darkroom_event_relay_delay_seconds_count", ())] == 1
    assert "# TYPE darkroom_job_run_duration_seconds histogram" in text  # none observed yet
    # A registry of the scrape's own: none of prometheus_client's default process collectors.
    assert not any(name.startswith(("python_", "process_")) for name, _ in parsed)
    # Every family has HELP and TYPE exactly once.
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name = line.split()[2]
            assert text.count(f"# TYPE {name} ") == 1
            assert f"# HELP {name} " in text


def test_without_redis_the_scrape_still_shows_the_databases_figures() -> None:
    report = _report()
    report["workers"] = None
    for queue in report["queues"]:
        queue["paused"] = None
    parsed = _parse(exposition.render(Scrape(report=report, dead_letters=2, redis_up=False)))
    assert parsed[("darkroom_redis_up", ())] == 0
    assert parsed[("darkroom_dead_letters", ())] == 2
    assert parsed[("darkroom_jobs", (("queue", "images"), ("state", "completed")))] == 5
    assert ("darkroom_workers", ()) not in parsed  # unknown, not zero
    assert not any(name == "darkroom_queue_paused" for name, _ in parsed)
    assert _parse(exposition.render(Scrape(report=_report(), dead_letters=0)))[
        ("darkroom_redis_up", ())] == 1


def test_finished_counts_survive_redis_and_anything_else_reads_as_none() -> None:
    counted = metrics.count_finished(
        [("images", "image.process", "completed", 7, 2), ("images.high", "image.process",
                                                          "completed", 1, 1),
         ("default", "email.send", "failed", 3, 0)], 4, at=1000.5, window_s=300.0)
    assert counted.completed_recent == {"images": 2, "images.high": 1}
    again = metrics.FinishedCounts.decode(counted.encode().encode())
    assert again == counted
    for bad in (None, b"", b"not json", b"[]", b'{"at": 1}', b'{"at": "x", "jobs": [],'
                b' "completed_recent": {}, "window_s": 300, "dead_letters": 0}'):
        assert metrics.FinishedCounts.decode(bad) is None


def test_job_figures_add_unfinished_and_finished_jobs_up_by_family_and_type() -> None:
    now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    finished = metrics.count_finished(
        [("images", "image.process", "completed", 7, 2),
         ("images.low", "image.process", "completed", 1, 1),
         ("gone", "old.type", "failed", 2, 0)], 1, at=0.0, window_s=300.0)
    unfinished = [("images", "image.process", "queued", 3),
                  ("images.high", "image.process", "delayed", 1),
                  ("default", "email.send", "active", 2)]
    oldest = {"images": now - timedelta(seconds=30), "images.high": now - timedelta(seconds=90)}
    report, by_type = metrics.job_figures(
        bases=["default", "images"], types=["image.process", "email.send"],
        unfinished=unfinished, oldest=oldest, finished=finished, now=now,
        paused={"images"}, workers=2)
    images, default = report["queues"][1], report["queues"][0]
    assert images["counts"] == {"queued": 3, "delayed": 1, "active": 0, "retrying": 0,
                                "completed": 8, "failed": 0, "cancelled": 0}
    assert images["oldest_waiting_s"] == 90.0
    assert images["throughput_per_min"] == 0.6  # 3 completions in 5 minutes
    assert (images["paused"], default["paused"], report["workers"]) == (True, False, 2)
    assert default["counts"]["active"] == 2 and default["oldest_waiting_s"] is None
    assert by_type[("image.process", "completed")] == 8
    assert by_type[("email.send", "retrying")] == 0  # every state of a registered type
    assert by_type[("old.type", "failed")] == 2 and by_type[("old.type", "queued")] == 0
    # Redis away: pause state and workers are unknown, not false and zero.
    report, _ = metrics.job_figures(
        bases=["images"], types=[], unfinished=[], oldest={}, finished=finished, now=now,
        paused=None, workers=None)
    assert report["queues"][0]["paused"] is None and report["workers"] is None
    parsed = _parse(exposition.render(Scrape(report=report, dead_letters=1,
                                             recount_age_s=12.5)))
    assert parsed[("darkroom_jobs_recount_age_seconds", ())] == 12.5

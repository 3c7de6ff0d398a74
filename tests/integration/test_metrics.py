"""GET /metrics against real web and worker processes: the new series move as work is done."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from collections.abc import Callable

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Stack, start_web_process, stop
from tests.factories import LiveClient, connected, jpeg_bytes, new_token, upload

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
IMAGE_STAGES = ("decoding", "thumbnail", "preview", "metadata")


async def _scrape(http: httpx.AsyncClient) -> Samples:
    """Every sample, parsed by prometheus_client's own text-format parser."""
    response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(value for (sample, pairs), value in samples.items()
               if sample == name and labels.items() <= dict(pairs).items())


def _grew(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return _value(after, name, **labels) - _value(before, name, **labels)


async def test_uploads_stages_relay_sockets_and_queues_show_in_metrics(
        stack: Stack, http: httpx.AsyncClient, sockets: list[LiveClient]) -> None:
    before = await _scrape(http)
    token = await new_token(http)
    for _ in range(2):
        await connected(stack.url, token, sockets)

    n = 3
    images = [jpeg_bytes(320 + i, 240, color=(20 + 60 * i, 90, 17)) for i in range(n)]
    job_ids = []
    for data in images:
        response = await upload(http, token, data)
        assert response.status_code == 202, response.text
        job_ids.append(response.json()["job"]["id"])
    duplicate = await upload(http, token, images[0])
    assert duplicate.status_code == 200
    refused = await upload(http, token, b"plain text, not a picture", filename="notes.txt",
                           content_type="text/plain")
    assert refused.status_code == 415
    refused_code = refused.json()["error"]["code"]
    for job_id in job_ids:
        name, _ = await sockets[0].wait_final(job_id)
        assert name == "job:completed"

    # Every pushed event says when it was published (same host: no later than it arrived).
    for arrived, _name, payload in sockets[0].timed(job_ids[0]):
        assert isinstance(payload["published_at"], float)
        assert payload["published_at"] <= arrived

    after = await _scrape(http)
    assert _grew(before, after, "darkroom_uploads_total", outcome="accepted", status="202") >= n
    assert _grew(before, after, "darkroom_uploads_total", outcome="duplicate",
                 status="200") >= 1
    assert _grew(before, after, "darkroom_uploads_total", outcome="rejected", status="415",
                 reason=refused_code) >= 1
    for stage in IMAGE_STAGES:
        labels = {"type": "image.process", "stage": stage}
        assert _grew(before, after, "darkroom_job_stage_duration_seconds_count", **labels) >= n
        assert _value(after, "darkroom_job_stage_duration_seconds_bucket", le="+Inf",
                      **labels) == _value(after, "darkroom_job_stage_duration_seconds_count",
                                          **labels)
        assert _value(after, "darkroom_job_stage_duration_seconds_sum", **labels) > 0
    assert _grew(before, after, "darkroom_job_run_duration_seconds_count",
                 type="image.process", outcome="completed") >= n
    assert _grew(before, after, "darkroom_event_relay_delay_seconds_count") > 0
    assert _value(after, "darkroom_socket_connections") >= 2
    assert _value(after, "darkroom_socket_users") >= 1
    assert _value(after, "darkroom_web_processes") >= 1
    for queue in ("images", "images.high", "images.low"):
        for state in ("ready", "delayed", "unacked"):
            assert ("darkroom_queue_messages",
                    (("queue", queue), ("state", state))) in after
    assert _value(after, "darkroom_jobs_by_type", type="image.process",
                  state="completed") >= n
    # The existing series stay.
    assert _value(after, "darkroom_jobs", queue="images", state="completed") >= n
    assert _value(after, "darkroom_workers") >= 1
    assert ("darkroom_dead_letters", ()) in after


async def test_a_socket_that_leaves_leaves_the_count(stack: Stack, http: httpx.AsyncClient,
                                                     sockets: list[LiveClient]) -> None:
    token = await new_token(http)
    client = await connected(stack.url, token, sockets)
    with_it = _value(await _scrape(http), "darkroom_socket_connections")
    assert with_it >= 1
    await client.close()
    # The server notices the close on its own time: wait for it (bounded), then check.
    deadline = time.monotonic() + 10
    while (count := _value(await _scrape(http), "darkroom_socket_connections")) >= with_it \
            and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert count <= with_it - 1


async def _scrape_until(http: httpx.AsyncClient, done: Callable[[Samples], bool],
                        timeout: float = 40.0) -> Samples:
    """Scrape until ``done`` holds (other processes report every few seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = await _scrape(http)
        if done(samples) or time.monotonic() > deadline:
            return samples
        await asyncio.sleep(0.5)


async def test_any_web_process_reports_the_whole_deployment(
        stack: Stack, http: httpx.AsyncClient, sockets: list[LiveClient]) -> None:
    other, other_url = start_web_process(stack.env, stack.logs / "web-b.log")
    try:
        other_name = f"{socket.gethostname()}:{other.pid}"
        before = await _scrape(http)
        async with httpx.AsyncClient(base_url=other_url, timeout=30) as http_b:
            token = await new_token(http_b)
            client = await connected(other_url, token, sockets)
            response = await upload(http_b, token, jpeg_bytes(50, 40, color=(3, 141, 59)))
            assert response.status_code == 202, response.text

        # The first process's scrape shows the second one's socket and upload.
        def sees_b(samples: Samples) -> bool:
            return _value(samples, "darkroom_process_socket_connections",
                          process=other_name) >= 1 and _grew(
                before, samples, "darkroom_uploads_total", outcome="accepted") >= 1

        seen = await _scrape_until(http, sees_b)
        assert sees_b(seen), "the other web process's figures never showed"
        assert _value(seen, "darkroom_web_processes") >= 2

        # Killed without a word: it leaves the report once it has gone quiet. (The socket
        # closes first, so that no client is left reconnecting to a dead process.)
        await client.close()
        other.send_signal(signal.SIGKILL)
        other.wait()

        def b_gone(samples: Samples) -> bool:
            return not any(name == "darkroom_process_socket_connections"
                           and dict(labels).get("process") == other_name
                           for name, labels in samples)

        assert b_gone(await _scrape_until(http, b_gone))
    finally:
        stop(other)

"""Every task type, declared once: its name, payload schema, queue, retries and limits.

Declarations only (pure): the web process validates and routes submissions with them, and
each worker module in ``workers/tasks/`` registers the work (``run``) for one of them.
Adding a type is a declaration here plus one small module there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server.core.jobs import queue_family


@dataclass(frozen=True)
class TaskSpec:
    """One kind of background work, as clients and both processes know it."""

    name: str
    description: str
    schema: dict[str, Any]
    queue: str = "default"
    # None: take the deployment's RETRY_MAX_ATTEMPTS / JOB_TIME_LIMIT_S.
    max_attempts: int | None = None
    time_limit_s: int | None = None
    # Whether clients may submit it through POST /api/tasks (image jobs come from uploads).
    public: bool = True
    # A payload field naming one of the caller's images: checked at submit, and the job
    # is tied to that image (its status, its result, its deletion).
    image_field: str | None = None
    # Whether it waits on peers outside (SMTP servers, webhook receivers): such work runs
    # on the I/O worker (`darkroom worker --io`), on threads image jobs never wait for,
    # and its queue must be one of IO_QUEUES.
    io: bool = False


# The queues of the I/O types: the I/O worker's supervisor names them to Dramatiq (-Q),
# and no image worker declares their actors.
IO_QUEUES = ("webhooks", "email")
POOLS = ("images", "io")
# A webhook delivery's attempts: a ceiling for callers, and what every delivery of a
# job's end gets.
WEBHOOK_MAX_ATTEMPTS = 5

IMAGE_PROCESS = TaskSpec(
    name="image.process",
    description="Make the thumbnail, preview and metadata of an uploaded image.",
    schema={"type": "object", "properties": {"image_id": {"type": "string"}},
            "required": ["image_id"], "additionalProperties": False},
    queue="images",
    public=False,
)
IMAGE_REPROCESS = TaskSpec(
    name="image.reprocess",
    description="Make the thumbnail, preview and metadata of an existing image again.",
    schema={"type": "object", "properties": {"image_id": {"type": "string", "minLength": 1}},
            "required": ["image_id"], "additionalProperties": False},
    queue="images",
    image_field="image_id",
)
EMAIL_SEND = TaskSpec(
    name="email.send",
    description="Send a plain-text email to one address through the server's SMTP relay.",
    schema={"type": "object", "properties": {
        "to": {"type": "string", "format": "email", "maxLength": 320},
        "subject": {"type": "string", "minLength": 1, "maxLength": 200,
                    "pattern": "[^\\r\\n]*", "patternMessage": "must be one line"},
        "body": {"type": "string", "maxLength": 100_000}},
        "required": ["to", "subject"], "additionalProperties": False},
    queue="email",
    io=True,
    # A ceiling: callers may ask for fewer attempts, not more.
    max_attempts=3,
    # The deadline ends each attempt; this only bounds a resolver that never answers.
    time_limit_s=60,
)
WEBHOOK_DELIVER = TaskSpec(
    name="webhook.deliver",
    description="POST a signed JSON body to a URL; 5xx and timeouts are retried, 4xx are not.",
    schema={"type": "object", "properties": {
        "url": {"type": "string", "format": "uri", "maxLength": 2000},
        "event": {"type": "string", "maxLength": 100},
        "body": {"type": "object"}},
        "required": ["url"], "additionalProperties": False},
    queue="webhooks",
    io=True,
    # A ceiling: callers may ask for fewer attempts, not more (each can take a deadline);
    # a delivery of a job's end gets it too (store.create_webhook_deliveries).
    max_attempts=WEBHOOK_MAX_ATTEMPTS,
    # The deadline ends each attempt; this only bounds a resolver that never answers.
    time_limit_s=60,
)
# Types that exist only with ENABLE_TEST_TASKS (the tests' tools).
TEST_SLEEP = TaskSpec(
    name="test.sleep",
    description="Sleep for a while in steps (testing only).",
    schema={"type": "object", "properties": {
        "seconds": {"type": "number", "minimum": 0, "maximum": 600},
        "steps": {"type": "integer", "minimum": 1, "maximum": 100},
        "record": {"type": "boolean"}},
        "additionalProperties": False},
)
TEST_FLAKY = TaskSpec(
    name="test.flaky",
    description="Fail the first fail_runs runs, then succeed (testing only).",
    schema={"type": "object", "properties": {
        "fail_runs": {"type": "integer", "minimum": 0, "maximum": 100},
        "sleep_s": {"type": "number", "minimum": 0, "maximum": 60},
        "error": {"type": "string", "enum": ["transient", "permanent"]}},
        "additionalProperties": False},
)
TEST_CRASH = TaskSpec(
    name="test.crash",
    description="Kill the worker process running it (testing only).",
    schema={"type": "object", "properties": {}, "additionalProperties": False},
)

BUILTIN = (IMAGE_PROCESS, IMAGE_REPROCESS, EMAIL_SEND, WEBHOOK_DELIVER)
TESTING = (TEST_SLEEP, TEST_FLAKY, TEST_CRASH)


def declared(*, include_test_tasks: bool) -> dict[str, TaskSpec]:
    """The deployment's task types (name → declaration)."""
    specs = BUILTIN + (TESTING if include_test_tasks else ())
    for spec in specs:
        if spec.io != (spec.queue in IO_QUEUES):
            raise ValueError(f"task type {spec.name!r}: I/O types, and they alone, use one "
                             f"of the queues {', '.join(IO_QUEUES)}")
    return {spec.name: spec for spec in specs}


def io_queues() -> list[str]:
    """Every queue of the I/O types, each priority's (Dramatiq adds their delay queues)."""
    return [queue for base in IO_QUEUES for queue in queue_family(base)]

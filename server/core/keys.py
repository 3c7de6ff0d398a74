"""Every Redis key and pub/sub channel name, in one place (pure)."""

from __future__ import annotations


def events_channel(prefix: str) -> str:
    """The one pub/sub channel every job event is published on."""
    return f"{prefix}:events"


def dramatiq_namespace(prefix: str) -> str:
    """Namespace of Dramatiq's own keys, so several deployments can share a Redis."""
    return f"{prefix}:dramatiq"


def dramatiq_heartbeats(namespace: str) -> str:
    """Dramatiq's sorted set of worker heartbeats (brokers/redis/dispatch.lua)."""
    return f"{namespace}:__heartbeats__"


def test_task_runs(prefix: str, job_id: str) -> str:
    """How many times a test task ran (ENABLE_TEST_TASKS only), across retries."""
    return f"{prefix}:test-runs:{job_id}"


def sweeper_lock(prefix: str) -> str:
    """Held for one sweep interval by the web process that sweeps; the others skip it."""
    return f"{prefix}:sweeper-lock"


def job_lease(prefix: str, job_id: str) -> str:
    """Held (and refreshed) by the worker process running the job, so no second run starts."""
    return f"{prefix}:lease:{job_id}"


def email_sends(prefix: str, user_id: str | None = None) -> str:
    """The e-mail jobs counted in the last hour (a sorted set scored by time, ms): one
    user's, or with no user the whole deployment's (server.core.mail_limits)."""
    return f"{prefix}:email-sends:user:{user_id}" if user_id else f"{prefix}:email-sends"


def rate_window(prefix: str, name: str, subject: str, window: int) -> str:
    """What one subject (a user, a client address) used of a rate (``uploads``, ``tasks``,
    ``sessions``, ``high-priority``) in one fixed window (numbered; the key expires)."""
    return f"{prefix}:rate:{name}:{subject}:{window}"


def metrics_finished(prefix: str) -> str:
    """The last count of finished jobs and dead letters (JSON with the time it was made),
    which any web process's scrape shows until it is older than METRICS_RECOUNT_S."""
    return f"{prefix}:metrics:finished"


def metrics_recount(prefix: str) -> str:
    """Held for METRICS_RECOUNT_S by the web process that recounts; the others show the
    last count meanwhile."""
    return f"{prefix}:metrics:recount"


def paused_queues(prefix: str) -> str:
    """The set of queue names whose waiting jobs are held back."""
    return f"{prefix}:paused-queues"


def cron_run(prefix: str, name: str, minute: int) -> str:
    """Claimed by the one scheduler process that runs a maintenance job in that minute."""
    return f"{prefix}:cron:{name}:{minute}"


def user_sockets(prefix: str, user_id: str) -> str:
    """Sorted set of one user's live sockets across web processes, scored by expiry."""
    return f"{prefix}:sockets:{user_id}"


def dramatiq_queue(namespace: str, queue: str) -> str:
    """Dramatiq's list of message ids waiting in a queue (brokers/redis/dispatch.lua).

    ``queue`` may be a delay queue (``images.DQ``), whose list holds delayed messages.
    """
    return f"{namespace}:{queue}"


def dramatiq_messages(namespace: str, queue: str) -> str:
    """Dramatiq's hash of a queue's messages not yet acknowledged (waiting, or fetched by a
    worker alive or dead): redis message id -> encoded message."""
    return f"{namespace}:{queue}.msgs"


def dramatiq_acks(namespace: str, worker_id: str, queue: str) -> str:
    """Dramatiq's set of a queue's messages one worker (broker id) fetched and has not
    acknowledged yet (brokers/redis/dispatch.lua)."""
    return f"{namespace}:__acks__.{worker_id}.{queue}"


def dramatiq_delay_queue(queue: str) -> str:
    """The delay queue Dramatiq puts a queue's delayed messages on until they are due."""
    return f"{queue}.DQ"


def metrics_samples(prefix: str) -> str:
    """Deployment-wide counters and histogram buckets (a hash: one field per series)."""
    return f"{prefix}:metrics:samples"


def metrics_sockets(prefix: str) -> str:
    """Each web process's connected sockets and users, with the time it last said so."""
    return f"{prefix}:metrics:sockets"


def line_refresh(prefix: str, queue_family: str) -> str:
    """Held for a moment by the worker that refreshed a queue family's waiting positions."""
    return f"{prefix}:line-refresh:{queue_family}"


def line_refresh_owed(prefix: str, queue_family: str) -> str:
    """Set when a refresh of a queue family's positions was skipped by the throttle."""
    return f"{prefix}:line-refresh-owed:{queue_family}"


def fair_messages(prefix: str, queue: str) -> str:
    """Messages of a queue waiting in their users' lists (a hash; server.infra.fair)."""
    return f"{prefix}:fair:msgs:{queue}"


def fair_threads(prefix: str, base: str) -> str:
    """Each live worker's threads for a queue family, for the fair dispatcher (a hash)."""
    return f"{prefix}:fair:threads:{base}"


def fair_cap(prefix: str, base: str) -> str:
    """A user's in-flight cap in a queue family, set by the workers serving it."""
    return f"{prefix}:fair:cap:{base}"


def fair_bell(prefix: str, queue: str) -> str:
    """A token per message moved into a Dramatiq queue (a short list): an idle worker's
    consumer waits on it (BLPOP) instead of sleeping between polls."""
    return f"{prefix}:fair:bell:{queue}"


def fair_user_list(prefix: str, queue: str, user_id: str) -> str:
    """One user's messages of a queue waiting for their turn (a list; server.infra.fair)."""
    return f"{prefix}:fair:q:{queue}:{user_id}"


def worker_roster(prefix: str) -> str:
    """Every worker process that reported, by the time of its last report (a sorted set)."""
    return f"{prefix}:workers"


def worker_report(prefix: str, worker_id: str) -> str:
    """One worker process's last report (``wire.Worker`` as JSON; expires once it is gone)."""
    return f"{prefix}:worker:{worker_id}"


def chart_points(prefix: str) -> str:
    """The dashboard's points, a minute each, oldest first (a list of ``wire.ChartPoint``)."""
    return f"{prefix}:charts:points"


def chart_snapshot(prefix: str) -> str:
    """The shared metrics as the last point was made: the next point is the difference."""
    return f"{prefix}:charts:snapshot"


def chart_minute(prefix: str, minute: int) -> str:
    """Claimed by the one web process that makes the point of that minute."""
    return f"{prefix}:charts:minute:{minute}"


def batch_shown(prefix: str, batch_id: str) -> str:
    """How many jobs had finished (``BatchEvent.rank``) in the last ``batch:progress``
    published for a batch: an older summary published late is dropped. It expires a day
    after the last one; retrying a failed job of the batch removes it."""
    return f"{prefix}:batch-shown:{batch_id}"


def job_live(prefix: str, job_id: str) -> str:
    """A running job's live stage, progress and seq, pushed by its worker (a hash;
    ``server.core.live``); it expires."""
    return f"{prefix}:live:{job_id}"

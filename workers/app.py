"""The Dramatiq app each worker process loads: the broker, its middleware and its pool's actors.

Dramatiq imports it in every worker process the supervisor starts (the ``workers.app`` of
``python -m workers.dramatiq_cli workers.app ...``).
"""

from __future__ import annotations

import logging

import dramatiq

from server.infra import logs, tracing
from server.infra.broker import build_broker, install
from server.infra.fair import FairDispatch
from server.infra.settings import Settings
from workers.actors import declare_actors
from workers.context import WorkerContext
from workers.middleware.dead_letters import DeadLetters
from workers.middleware.heartbeat import Heartbeat
from workers.middleware.leases import Leases
from workers.middleware.lifecycle import JobLifecycle
from workers.middleware.pause import QueueGate
from workers.middleware.roster import Roster
from workers.middleware.timings import JobTimings
from workers.middleware.tracing import JobTracing
from workers.tasks import registry as tasks

settings = Settings.from_env()
# Dramatiq's CLI has set up logging its way already: this replaces it with ours.
logs.configure(settings.log_level, settings.log_format)
# Before the context: its database spans its transactions only with a tracer.
tracing.configure(settings, "darkroom-worker")
if (warning := settings.multi_host_warning()) is not None:
    logging.getLogger("workers").warning(warning)
# Our actors return their job's result for JobLifecycle to store; Dramatiq warns about
# any returned value when its Results middleware is absent. That warning is noise here.
logging.getLogger("dramatiq.worker.WorkerThread").addFilter(
    lambda record: "returned a value that is not None" not in record.getMessage())
broker = build_broker(settings)
context = WorkerContext.from_settings(settings, broker)
leases = Leases(context.redis, settings.redis_prefix, ttl_ms=settings.worker_heartbeat_timeout_ms)
gate = QueueGate(context.redis, settings.redis_prefix)
install(
    broker,
    JobLifecycle(context.reporter, leases, is_paused=gate,
                 remove_renditions=context.storage.remove_renditions),
    DeadLetters(context.reporter, leases),
    Heartbeat(interval_s=settings.worker_heartbeat_timeout_ms / 4000, leases=leases),
    # After JobLifecycle: its timings are written before the job's end is published.
    JobTimings(context.redis, settings.redis_prefix),
    Roster(context.redis, settings.redis_prefix, pool=settings.worker_pool,
           interval_s=settings.worker_heartbeat_timeout_ms / 4000,
           forget_after_s=settings.worker_forget_s),
    FairDispatch(broker.fair, offer_every_s=settings.worker_heartbeat_timeout_ms / 4000,
                 per_user_cap=settings.deliveries_in_flight_per_user
                 if settings.worker_pool == "io" else settings.max_jobs_in_flight_per_user),
)
if tracing.enabled():
    # Before JobLifecycle: the job's span covers the start of its attempt, and (its after_*
    # hooks running last) the completion and the deliveries it sends.
    broker.add_middleware(JobTracing(), before=JobLifecycle)
dramatiq.set_broker(broker)
# Only the types of this process's pool (WORKER_POOL, set by `darkroom worker [--io]`): an
# image worker declares no I/O actor, so it never consumes their queues, and the other way.
declare_actors(broker, context, tasks.in_pool(
    tasks.load(include_test_tasks=settings.enable_test_tasks), settings.worker_pool))

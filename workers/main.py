"""Entry point for ``dramatiq workers.main``: the broker, its middleware and the actors."""

from __future__ import annotations

import logging

import dramatiq

from server.settings import Settings
from workers import tasks
from workers.actors import declare_actors
from workers.broker import build_broker, install
from workers.context import WorkerContext
from workers.dead_letters import DeadLetters
from workers.heartbeat import Heartbeat
from workers.lifecycle import JobLifecycle

settings = Settings.from_env()
logging.basicConfig(level=settings.log_level.upper(),
                    format="%(asctime)s %(levelname)s %(name)s: %(message)s")
broker = build_broker(settings)
context = WorkerContext.from_settings(settings, broker)
install(
    broker,
    JobLifecycle(context.reporter),
    DeadLetters(context.reporter),
    Heartbeat(interval_s=settings.worker_heartbeat_timeout_ms / 4000),
)
dramatiq.set_broker(broker)
declare_actors(broker, context, tasks.load(include_test_tasks=settings.enable_test_tasks))

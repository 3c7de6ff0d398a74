"""Entry point for ``dramatiq workers.main``: the broker, its middleware and the actors."""

from __future__ import annotations

import logging

import dramatiq

from server.settings import Settings
from workers.actors import declare_actors
from workers.broker import build_broker
from workers.context import WorkerContext
from workers.middleware import JobLifecycle

settings = Settings.from_env()
logging.basicConfig(level=settings.log_level.upper(),
                    format="%(asctime)s %(levelname)s %(name)s: %(message)s")
context = WorkerContext.from_settings(settings)
broker = build_broker(settings, JobLifecycle(context.reporter))
dramatiq.set_broker(broker)
declare_actors(broker, context)

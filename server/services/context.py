"""What the use cases work with, built once per process (the web process's ``AppState``
extends it with what only that process has)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import redis.asyncio as aioredis

from server.core.tasks import TaskSpec
from server.data.db import Database
from server.infra.broker import FairRedisBroker
from server.infra.bus import Bus
from server.infra.settings import Settings
from server.infra.storage import Storage
from server.services.presenter import Presenter
from server.services.sent_marks import SentMarks


@dataclass(kw_only=True, eq=False)
class Services:
    """The deployment's parts, typed: settings, database, Redis, broker, files, the bus."""

    settings: Settings
    db: Database
    redis: aioredis.Redis
    storage: Storage
    broker: FairRedisBroker
    presenter: Presenter
    bus: Bus
    # The task types this deployment runs (name → declaration).
    task_types: Mapping[str, TaskSpec]
    sent: SentMarks

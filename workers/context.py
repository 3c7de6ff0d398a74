"""What a worker process talks to: its database, Redis, broker, storage and event reporter."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import redis
from dramatiq.brokers.redis import RedisBroker

from server.data.db import SyncDatabase
from server.infra import tracing
from server.infra.broker import redis_client, send_job
from server.infra.bus import SyncBus
from server.infra.settings import Settings
from server.infra.storage import Storage, storage_for
from server.services.presenter import Presenter
from workers.progress import RedisLineRefresh, Reporter


@dataclass(frozen=True)
class WorkerContext:
    settings: Settings
    db: SyncDatabase
    redis: redis.Redis
    storage: Storage
    reporter: Reporter

    @classmethod
    def from_settings(cls, settings: Settings, broker: RedisBroker) -> WorkerContext:
        """Build (without connecting yet: engines and Redis pools connect on first use)."""
        db = SyncDatabase(settings.database_url, tracer=tracing.tracer("server.data.db"))
        client = redis_client(settings.require_redis())
        presenter = Presenter(settings.secret_key, settings.signed_url_ttl_s, settings.public_url)
        reporter = Reporter(db, SyncBus(client, settings.redis_prefix), presenter,
                            send=partial(send_job, broker),
                            line=RedisLineRefresh(client, settings.redis_prefix))
        return cls(settings=settings, db=db, redis=client, storage=storage_for(settings),
                   reporter=reporter)

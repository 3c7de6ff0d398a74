"""What a worker process talks to: its database, storage and event reporter."""

from __future__ import annotations

from dataclasses import dataclass

import redis

from server.bus import SyncBus
from server.db import SyncDatabase
from server.schemas import Presenter
from server.settings import Settings
from server.storage import Storage
from workers.progress import Reporter


@dataclass(frozen=True)
class WorkerContext:
    settings: Settings
    db: SyncDatabase
    storage: Storage
    reporter: Reporter

    @classmethod
    def from_settings(cls, settings: Settings) -> WorkerContext:
        """Build (without connecting yet: engines and Redis pools connect on first use)."""
        db = SyncDatabase(settings.database_url)
        bus = SyncBus(redis.Redis.from_url(settings.redis_url), settings.redis_prefix)
        presenter = Presenter(settings.secret_key, settings.signed_url_ttl_s, settings.public_url)
        return cls(settings=settings, db=db, storage=Storage(settings.files_dir),
                   reporter=Reporter(db, bus, presenter))

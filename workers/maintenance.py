"""Housekeeping run by the scheduler: stray files, and data past its retention."""

from __future__ import annotations

import logging
from datetime import timedelta

from server.data import store
from server.data.db import SyncDatabase
from server.data.models import utcnow
from server.infra.storage import Storage

log = logging.getLogger(__name__)

# A file younger than this may belong to an upload still in flight (the original is moved
# into place just before its row is committed), so it is never taken for an orphan.
GRACE_S = 3600


def clean_files(db: SyncDatabase, storage: Storage, grace_s: float = GRACE_S) -> int:
    """Remove abandoned upload temp files and files of images that no longer exist."""
    removed = 0
    for path in storage.stale_temp_files(grace_s):
        path.unlink(missing_ok=True)
        removed += 1
    old = list(storage.stored_image_ids(grace_s))
    existing = db.read(store.existing_image_ids, image_ids=old)
    for image_id in old:
        if image_id not in existing:
            storage.remove_image(image_id)
            removed += 1
    log.info("clean-up removed %d stray files or image folders", removed)
    return removed


def purge_old(db: SyncDatabase, storage: Storage, retention_days: int) -> int:
    """Delete finished jobs, and images with their files, older than the retention."""
    cutoff = utcnow() - timedelta(days=retention_days)
    image_ids = db.write(store.purge_finished, finished_before=cutoff)
    for image_id in image_ids:
        storage.remove_image(image_id)
    log.info("retention purge removed %d images (cutoff %s)", len(image_ids), cutoff)
    return len(image_ids)

"""Housekeeping run by the scheduler: stray files, and data past its retention."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from pathlib import Path

from server import store
from server.db import SyncDatabase
from server.models import utcnow
from server.storage import Storage

log = logging.getLogger(__name__)

# A file younger than this may belong to an upload still in flight (the original is moved
# into place just before its row is committed), so it is never taken for an orphan.
GRACE_S = 3600


def _older_than(path: Path, seconds: float) -> bool:
    try:
        return time.time() - path.stat().st_mtime > seconds
    except FileNotFoundError:
        return False


def clean_files(db: SyncDatabase, storage: Storage, grace_s: float = GRACE_S) -> int:
    """Remove abandoned upload temp files and files of images that no longer exist."""
    removed = 0
    if storage.tmp_dir.exists():
        for path in storage.tmp_dir.iterdir():
            if path.is_file() and _older_than(path, grace_s):
                path.unlink(missing_ok=True)
                removed += 1
    candidates: dict[str, list[Path]] = {}
    if storage.originals_dir.exists():
        for path in storage.originals_dir.glob("*/*"):
            candidates.setdefault(path.name, []).append(path)
    if storage.derived_dir.exists():
        for path in storage.derived_dir.iterdir():
            candidates.setdefault(path.name, []).append(path)
    old = [image_id for image_id, paths in candidates.items()
           if all(_older_than(p, grace_s) for p in paths)]
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

"""Where files live: originals, renditions and upload temp files.

``Storage`` is the interface the web and worker processes use; ``LocalStorage`` keeps
everything under one directory (STORAGE_DIR). When web and worker processes run on
several hosts that directory must be one shared volume (NFS, EFS, CephFS, …): uploads
are written there by the web process that accepted them, read by whichever worker runs
the job, and renditions written by that worker are served by any web process.
Upload temp files live under the same root so that adopting one is an atomic rename.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from server.infra.settings import Settings
from server.infra.spool import SpoolFile, direct_io_suits

log = logging.getLogger(__name__)

RENDITION_FILES = {"thumbnail": "thumbnail.webp", "preview": "preview.webp"}


class Storage(Protocol):
    """Files of images by image id; every name is chosen by the server, never by a client."""

    def ensure_dirs(self) -> None:
        """Create what must exist before the first upload."""

    def new_temp(self) -> Path:
        """An empty private file to stream an upload into (same volume as the originals)."""

    def temp_writer(self, temp: Path) -> SpoolFile:
        """A writer that appends to a temp file from ``new_temp`` (a large file past the
        page cache, as UPLOAD_DIRECT_IO decides, where the volume allows)."""

    def adopt_original(self, temp: Path, image_id: str) -> Path:
        """Move a finished upload into place under its image id (atomically)."""

    def original(self, image_id: str) -> Path:
        """Where the original of an image is (it may not exist)."""

    def uncache_original(self, image_id: str) -> None:
        """Let the original's pages go from this host's page cache: it was read to make
        the renditions and is not read again soon (a missing file is fine)."""

    def rendition(self, image_id: str, kind: str) -> Path:
        """Where a rendition (``thumbnail``, ``preview``) of an image is (it may not exist)."""

    def write_rendition(self, image_id: str, kind: str, data: bytes) -> Path:
        """Write a rendition so that readers never see half a file."""

    def remove_renditions(self, image_id: str) -> None:
        """Delete an image's renditions (missing ones are fine)."""

    def remove_image(self, image_id: str) -> None:
        """Delete an image's original and renditions (missing files are fine)."""

    def stale_temp_files(self, older_than_s: float) -> Iterator[Path]:
        """Upload temp files untouched for longer than that (abandoned uploads)."""

    def stored_image_ids(self, older_than_s: float) -> Iterator[str]:
        """Ids of images with files, all of them untouched for longer than that."""


def _older_than(path: Path, seconds: float) -> bool:
    try:
        return time.time() - path.stat().st_mtime > seconds
    except FileNotFoundError:
        return False


class LocalStorage:
    """A directory tree on a local or shared filesystem."""

    def __init__(self, root: Path, *, direct_io: bool = True) -> None:
        self.root = root
        self.direct_io = direct_io
        self.tmp_dir = root / "tmp"
        self.originals_dir = root / "originals"
        self.derived_dir = root / "derived"

    def ensure_dirs(self) -> None:
        for path in (self.tmp_dir, self.originals_dir, self.derived_dir):
            path.mkdir(parents=True, exist_ok=True)

    def new_temp(self) -> Path:
        """An empty private temp file on the same filesystem as the store (so rename is atomic)."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix="upload-")
        os.close(fd)
        return Path(name)

    def temp_writer(self, temp: Path) -> SpoolFile:
        return SpoolFile(temp, direct=self.direct_io)

    def original(self, image_id: str) -> Path:
        # Two-character fan-out from the random tail keeps directories small.
        return self.originals_dir / image_id[-2:] / image_id

    def uncache_original(self, image_id: str) -> None:
        if not hasattr(os, "posix_fadvise"):
            return  # macOS: the kernel's own cache policy then
        try:
            fd = os.open(self.original(image_id), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return  # gone (deleted meanwhile), or unreadable: nothing to let go of
        try:
            # Clean pages go at once (an O_DIRECT upload's, read by the worker); for dirty
            # ones (a small upload, written through the cache) it starts their writeback
            # and they stay until it is done.
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError as exc:
            # Only advice: a volume that does not take it changes nothing for the job.
            log.debug("posix_fadvise on %s's original: %s", image_id, exc)
        finally:
            os.close(fd)

    def rendition(self, image_id: str, kind: str) -> Path:
        return self.derived_dir / image_id / RENDITION_FILES[kind]

    def adopt_original(self, temp: Path, image_id: str) -> Path:
        """Move a finished upload into place under its image id."""
        target = self.original(image_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp, target)
        return target

    def write_rendition(self, image_id: str, kind: str, data: bytes) -> Path:
        """Write atomically (temp + fsync + rename): readers never see a half file."""
        target = self.rendition(image_id, kind)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{kind}-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(name, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)
            raise
        return target

    def remove_renditions(self, image_id: str) -> None:
        shutil.rmtree(self.derived_dir / image_id, ignore_errors=True)

    def remove_image(self, image_id: str) -> None:
        """Delete the original and every rendition of an image (missing files are fine)."""
        with contextlib.suppress(FileNotFoundError):
            self.original(image_id).unlink()
        self.remove_renditions(image_id)

    def stale_temp_files(self, older_than_s: float) -> Iterator[Path]:
        if self.tmp_dir.exists():
            for path in self.tmp_dir.iterdir():
                if path.is_file() and _older_than(path, older_than_s):
                    yield path

    def stored_image_ids(self, older_than_s: float) -> Iterator[str]:
        found: dict[str, list[Path]] = {}
        if self.originals_dir.exists():
            for path in self.originals_dir.glob("*/*"):
                found.setdefault(path.name, []).append(path)
        if self.derived_dir.exists():
            for path in self.derived_dir.iterdir():
                found.setdefault(path.name, []).append(path)
        for image_id, paths in found.items():
            if all(_older_than(p, older_than_s) for p in paths):
                yield image_id


def storage_for(settings: Settings) -> Storage:
    """The deployment's storage: a directory (STORAGE_DIR), shared by every host."""
    direct_io = settings.upload_direct_io
    if direct_io is None:
        direct_io = direct_io_suits(settings.storage_dir)
    return LocalStorage(settings.storage_dir, direct_io=direct_io)

"""Where files live: originals, renditions and upload temp files, all under one root."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

RENDITION_FILES = {"thumbnail": "thumbnail.webp", "preview": "preview.webp"}


class Storage:
    """A directory tree on a local (or shared) filesystem; names are always server-chosen."""

    def __init__(self, root: Path) -> None:
        self.root = root
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

    def original(self, image_id: str) -> Path:
        # Two-character fan-out from the random tail keeps directories small.
        return self.originals_dir / image_id[-2:] / image_id

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

"""Where the shared image corpus is, and what a test run does when it is not there.

The corpus lives beside the project (``../shared/corpus``) or wherever DARKROOM_CORPUS
points, and is never copied in. A module that tests it calls ``find_corpus()`` at import:

- found: its directory;
- missing, with ``CI`` set (non-empty): the run fails, naming the path looked at, since a
  CI run that silently skipped the corpus would prove nothing about it;
- missing otherwise: None, and the module skips its corpus tests with ``missing_reason()``,
  which ``pytest -ra`` shows.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORPUS_ENV = "DARKROOM_CORPUS"


def corpus_path() -> Path:
    """Where the corpus is looked for: DARKROOM_CORPUS, else ``../shared/corpus``."""
    given = os.environ.get(CORPUS_ENV)
    return Path(given) if given else ROOT.parent / "shared" / "corpus"


def corpus_dir() -> Path | None:
    """The shared image corpus, or None when it is not there (no manifest.json)."""
    path = corpus_path()
    return path if (path / "manifest.json").exists() else None


def missing_reason() -> str:
    """Why the corpus tests cannot run: the path looked at, and how to point at the corpus."""
    return (f"image corpus not found: no manifest.json in {corpus_path()} "
            f"(set {CORPUS_ENV} to the corpus directory, or put it at ../shared/corpus)")


def find_corpus() -> Path | None:
    """The corpus directory; None when missing outside CI; fails the run when missing in CI.

    Called at import, so under CI a missing corpus is a collection error: the run exits
    non-zero with the message, instead of the corpus tests quietly vanishing.
    """
    found = corpus_dir()
    if found is None and os.environ.get("CI"):
        pytest.fail(f"{missing_reason()}; CI is set, so a missing corpus fails the run "
                    "instead of skipping its tests", pytrace=False)
    return found


def corpus_entries(corpus: Path | None) -> list[dict[str, Any]]:
    """The manifest's entries (each a file with its acceptable outcomes); [] without one."""
    if corpus is None:
        return []
    entries: list[dict[str, Any]] = json.loads(
        (corpus / "manifest.json").read_text(encoding="utf-8"))["entries"]
    if not entries:  # as silent as a missing corpus otherwise: no test would be made
        pytest.fail(f"the manifest in {corpus} lists no files", pytrace=False)
    return entries

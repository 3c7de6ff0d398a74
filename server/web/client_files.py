"""Where the browser client's files (the top-level ``web/`` folder) are.

``web`` is shipped in the wheel as package data (pyproject: a namespace package of
files only), so an installed Darkroom serves the same client as a checkout.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parents[2] / "web"


def _find() -> Path:
    if (_CHECKOUT / "index.html").is_file():
        return _CHECKOUT
    spec = importlib.util.find_spec("web")
    for location in (spec.submodule_search_locations or []) if spec else []:
        if (Path(location) / "index.html").is_file():
            return Path(location)
    raise RuntimeError("the web client's files (web/index.html) are not installed")


WEB_DIR = _find()

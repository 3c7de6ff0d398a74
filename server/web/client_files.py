"""Where the browser client's files (the top-level ``web/`` folder) are.

``web`` sits beside ``server`` both in a checkout and in an installed wheel (pyproject
ships it as package data: ``site-packages/web``), so either serves the same client.
"""

from __future__ import annotations

from pathlib import Path

WEB_DIR = Path(__file__).resolve().parents[2] / "web"

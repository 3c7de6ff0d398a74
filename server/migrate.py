"""Schema migrations (Alembic): bring any database to the current schema, safely.

``darkroom migrate`` (the Procfile's ``release:`` step) and the web process at start
(unless AUTO_MIGRATE=false) call :func:`upgrade`. Concurrent callers are serialised by
the database itself: PostgreSQL by an advisory lock, SQLite by ``BEGIN IMMEDIATE``; the
second one finds the schema at head and does nothing.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# The schema as it stood before migrations existed (databases made by create_all).
BASELINE = "0001"
# Any constant: the key of the advisory lock PostgreSQL migrators queue on.
_PG_LOCK_KEY = 0x6461726B  # "dark"


class SchemaOutOfDate(RuntimeError):
    """The database is behind the code and AUTO_MIGRATE is off."""


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head() -> str:
    """The newest revision this code knows."""
    found = ScriptDirectory.from_config(_config()).get_current_head()
    assert found is not None
    return found


def current(connection: Connection) -> str | None:
    """The revision the database is at (None: never migrated)."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(connection: Connection, revision: str = "head") -> tuple[str | None, str | None]:
    """Migrate inside the caller's transaction; returns (revision before, revision after).

    The caller opens the transaction (BEGIN IMMEDIATE on SQLite), so the whole upgrade
    is atomic and exclusive; Alembic sees the open transaction and runs inside it.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
    config = _config(connection)
    before = current(connection)
    inspector = inspect(connection)
    if before is None and inspector.has_table("jobs"):
        # Made by create_all before migrations existed: it is the baseline schema.
        command.stamp(config, BASELINE)
    command.upgrade(config, revision)
    return before, current(connection)


def downgrade(connection: Connection, revision: str) -> tuple[str | None, str | None]:
    """Step the schema back to ``revision`` (``base``: nothing); returns (before, after)."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
    before = current(connection)
    command.downgrade(_config(connection), revision)
    return before, current(connection)


def require_current(connection: Connection) -> None:
    """Raise SchemaOutOfDate unless the database is at this code's head revision."""
    found, wanted = current(connection), head()
    if found != wanted:
        raise SchemaOutOfDate(
            f"the database schema is at {found or 'nothing'}, this code needs {wanted}: "
            "run `darkroom migrate` (or set AUTO_MIGRATE=true)")

"""Schema migrations (Alembic): bring any database to the current schema, safely.

``darkroom migrate`` (the Procfile's ``release:`` step) and the web process at start
(unless AUTO_MIGRATE=false) call :func:`upgrade`. Concurrent callers are serialised by
the database itself: PostgreSQL by an advisory lock, SQLite by ``BEGIN IMMEDIATE``; the
second one finds the schema at head and does nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, inspect, text

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# The schema as it stood before migrations existed (databases made by create_all).
BASELINE = "0001"
# Any constant: the key of the advisory lock PostgreSQL migrators queue on.
_PG_LOCK_KEY = 0x6461726B  # "dark"


class SchemaOutOfDate(RuntimeError):
    """The database is behind the code and AUTO_MIGRATE is off."""


log = logging.getLogger(__name__)


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


def is_ahead(connection: Connection) -> bool:
    """Whether the database was migrated by newer code (a revision this code does not know).

    That happens during a rolling deploy (the release step ran, old processes restart)
    and after a rollback; the newer schema only adds, so older code keeps working.
    """
    found = current(connection)
    if found is None:
        return False
    try:
        return ScriptDirectory.from_config(_config()).get_revision(found) is None
    except CommandError:
        return True


def upgrade(connection: Connection, revision: str = "head") -> tuple[str | None, str | None]:
    """Migrate inside the caller's transaction; returns (revision before, revision after).

    The caller opens the transaction (BEGIN IMMEDIATE on SQLite), so the whole upgrade
    is atomic and exclusive; Alembic sees the open transaction and runs inside it.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
    config = _config(connection)
    before = current(connection)
    if is_ahead(connection):
        log.warning("the database schema (%s) is newer than this code (%s): not migrating",
                    before, head())
        return before, before
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
    """Raise SchemaOutOfDate if the database is behind this code's head revision.

    A database ahead of the code (newer code migrated it) is accepted with a warning.
    """
    found, wanted = current(connection), head()
    if found != wanted and is_ahead(connection):
        log.warning("the database schema (%s) is newer than this code (%s)", found, wanted)
        return
    if found != wanted:
        raise SchemaOutOfDate(
            f"the database schema is at {found or 'nothing'}, this code needs {wanted}: "
            "run `darkroom migrate` (or set AUTO_MIGRATE=true)")

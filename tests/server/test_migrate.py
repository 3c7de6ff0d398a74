"""Alembic migrations: a fresh or old database reaches the models' schema, on every backend."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, select, text

from server.core.search import JobSearch
from server.core.signing import hash_token
from server.data import migrate, store
from server.data.db import SyncDatabase
from server.data.models import Base, Job
from server.data.store import job_conditions
from tests.conftest import Databases

pytestmark = pytest.mark.integration

_OLD_USER = "INSERT INTO users (id, token_hash, created_at) VALUES (:id, :h, :t)"


@pytest.fixture
def database(databases: Databases) -> Iterator[SyncDatabase]:
    db = SyncDatabase(databases.new())
    yield db
    db.dispose()


def _schema_diff(db: SyncDatabase) -> list[object]:
    """What differs between the database and the models. SQLAlchemy cannot reflect an
    expression index (ix_jobs_short_id) and says so; both sides skip it, and
    ``test_the_short_id_index_is_made_and_used`` checks that one."""
    with db.engine.connect() as conn, warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based")
        warnings.filterwarnings("ignore", "autogenerate skipping metadata-specified expression")
        return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))


def test_a_fresh_database_gets_exactly_the_models_schema(database: SyncDatabase) -> None:
    before, after = database.migrate()
    assert before is None and after == migrate.head()
    assert _schema_diff(database) == []
    # Idempotent: a second run (another process starting) changes nothing.
    assert database.migrate() == (migrate.head(), migrate.head())


def test_every_migration_goes_down_and_up_again(database: SyncDatabase) -> None:
    database.migrate()
    assert database.downgrade("base") == (migrate.head(), None)
    with database.engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) <= {"alembic_version"}
    database.migrate()
    assert _schema_diff(database) == []


def _indexes_on_short_id(db: SyncDatabase) -> list[str]:
    if db.engine.dialect.name == "sqlite":
        query = ("SELECT name FROM sqlite_master "
                 "WHERE type = 'index' AND sql LIKE '%substr(id, 25)%'")
    else:
        query = "SELECT indexname FROM pg_indexes WHERE indexdef LIKE '%substr((id)::text, 25)%'"
    with db.engine.connect() as conn:
        return [str(name) for name in conn.execute(text(query)).scalars()]


def test_the_short_id_index_is_made_and_used(database: SyncDatabase) -> None:
    """The one index reflection cannot compare: made by the migrations, kept when a later
    one steps back (SQLite's batch copy of the table), and used by a short-id search."""
    database.migrate()
    assert _indexes_on_short_id(database) == ["ix_jobs_short_id"]
    database.downgrade("0003")
    assert _indexes_on_short_id(database) == ["ix_jobs_short_id"]
    database.migrate()
    if database.engine.dialect.name == "sqlite":
        # The search's own statement (SQLite takes an expression index only for the very
        # same expression, so the query must spell it as the index does).
        query = select(Job.id).where(*job_conditions(JobSearch(id="abcdef12")))
        compiled = query.compile(database.engine)
        with database.engine.connect() as conn:
            plan = " ".join(str(row[-1]) for row in conn.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {compiled}", tuple(compiled.params.values())))
        assert "ix_jobs_short_id" in plan, plan


def test_users_of_the_first_schema_keep_their_tokens(database: SyncDatabase) -> None:
    database.migrate(migrate.BASELINE)
    database.execute(_OLD_USER, {"id": "u" * 32, "h": hash_token("old-token"),
                                 "t": datetime.now(UTC)})
    database.migrate()
    found = database.read(store.user_by_token_hash, token_hash=hash_token("old-token"))
    assert found is not None
    user, token = found
    assert user.id == "u" * 32 and not user.is_admin and token.user_id == user.id


def test_a_database_made_before_migrations_existed_is_adopted(database: SyncDatabase) -> None:
    # The first release made its tables with create_all and kept no alembic_version.
    database.migrate(migrate.BASELINE)
    database.execute(_OLD_USER, {"id": "v" * 32, "h": hash_token("legacy"),
                                 "t": datetime.now(UTC)})
    database.execute("DROP TABLE alembic_version")
    before, after = database.migrate()
    assert before is None and after == migrate.head()
    assert database.read(store.user_by_token_hash, token_hash=hash_token("legacy")) is not None
    assert _schema_diff(database) == []


def test_concurrent_migrations_are_serialised(databases: Databases) -> None:
    url = databases.new()
    results: list[object] = []

    def run() -> None:
        db = SyncDatabase(url)
        try:
            results.append(db.migrate()[1])
        except Exception as exc:  # recorded: the assertion below shows it
            results.append(exc)
        finally:
            db.dispose()

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == [migrate.head()] * 3


def test_a_stale_schema_is_refused_when_auto_migrate_is_off(database: SyncDatabase) -> None:
    database.migrate(migrate.BASELINE)
    with database.engine.connect() as conn, pytest.raises(migrate.SchemaOutOfDate,
                                                          match="darkroom migrate"):
        migrate.require_current(conn)
    database.migrate()
    with database.engine.connect() as conn:
        migrate.require_current(conn)


def test_a_schema_newer_than_the_code_is_left_alone(database: SyncDatabase) -> None:
    """A rolling deploy or a rollback: newer code migrated; this code starts, changes nothing."""
    database.migrate()
    database.execute("UPDATE alembic_version SET version_num = '9999'")
    assert database.migrate() == ("9999", "9999")
    with database.engine.connect() as conn:
        migrate.require_current(conn)  # accepted (with a warning)
        assert migrate.is_ahead(conn)

"""The databases the direct tests of ``server.data.store`` run on.

Backends (the ``db`` fixture):

- SQLite IN MEMORY (``sqlite:///:memory:``). ``SyncDatabase`` gets SQLAlchemy's
  ``SingletonThreadPool`` for it, so every session of a single-threaded test module shares
  one connection and so one database. A session gives its connection back only after its
  transaction is committed or rolled back, so reading a write back in a new session still
  proves it was committed. No file, no process: these tests run with ``-m "not integration"``.
- PostgreSQL when TEST_DATABASE_URL is set (marked ``integration``): a database of our own,
  ``darkroom_test_<hex>``, made with ``tests.conftest.Databases`` and dropped afterwards.

One migrated schema per backend for each test module. Tests keep out of each other's way
with fresh users, queue families and task types; the few functions that look across all
users (dead-letter counts, purges, sweeps, due schedules, metrics counts) are tested on
emptied tables (``empty``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import delete
from sqlalchemy.orm import Session

from server.data.db import SyncDatabase
from server.data.models import Base
from tests.conftest import Databases


def _backends() -> list[Any]:
    params: list[Any] = ["sqlite"]
    if os.environ.get("TEST_DATABASE_URL"):
        params.append(pytest.param("postgresql", marks=pytest.mark.integration))
    return params


@pytest.fixture(scope="module", params=_backends())
def db(request: pytest.FixtureRequest,
       tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyncDatabase]:
    """A migrated database of one backend, shared by the module."""
    made = Databases(request.param, tmp_path_factory) if request.param != "sqlite" else None
    database = SyncDatabase(made.new() if made else "sqlite:///:memory:")
    try:
        database.migrate()
        yield database
    finally:
        database.dispose()
        if made is not None:
            made.drop_all()


@pytest.fixture
def empty(db: SyncDatabase) -> SyncDatabase:
    """``db`` with every table emptied, for functions that look across all users."""

    def wipe(s: Session) -> None:
        for table in Base.metadata.sorted_tables:
            s.execute(delete(table))

    db.write(wipe)
    return db

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from server.core.principal import Principal
from server.infra.audit import audit, audit_foreign


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def lines() -> Iterator[list[logging.LogRecord]]:
    handler = Collect()
    logger = logging.getLogger("darkroom.audit")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)


def test_an_audit_line_carries_its_fields_and_reads_well(lines: list[logging.LogRecord]) -> None:
    audit("u-admin", "dlq.retry", "job:j1")
    audit("u-admin", "queue.clean", "queue:images", "3 removed")
    first, second = lines
    assert first.name == "darkroom.audit" and first.levelno == logging.INFO
    assert (first.action, first.target, first.user_id) == ("dlq.retry", "job:j1", "u-admin")  # type: ignore[attr-defined]
    assert first.getMessage() == "admin u-admin: dlq.retry job:j1"
    assert second.getMessage() == "admin u-admin: queue.clean queue:images (3 removed)"


def test_only_admins_touching_others_data_are_audited(lines: list[logging.LogRecord]) -> None:
    audit_foreign(Principal("u1", False, "t"), "u2", "job.read", "job:j")  # a 404 anyway
    audit_foreign(Principal("adm", True, "t"), "adm", "job.read", "job:own")
    audit_foreign(Principal("adm", True, "t"), "u2", "job.read", "job:theirs")
    audit_foreign(Principal("adm", True, "t"), "u2", "image.file", "image:i", "preview")
    assert [(r.target, r.getMessage()) for r in lines] == [  # type: ignore[attr-defined]
        ("job:theirs", "admin adm: job.read job:theirs (owner u2)"),
        ("image:i", "admin adm: image.file image:i (owner u2, preview)")]

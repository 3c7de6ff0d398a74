"""The log formatters and context fields, with real loggers writing to a buffer."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from server.infra import logs
from server.web.http.request_ids import request_id


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO, logging.StreamHandler[io.StringIO]]]:
    """A logger of its own writing to a buffer (the root logger is pytest's business)."""
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    logger = logging.getLogger("darkroom.test")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logs.clear()
    yield logger, buf, handler
    logger.removeHandler(handler)
    logs.clear()


def _json_lines(buf: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_json_line_has_the_basics(captured: tuple[logging.Logger, io.StringIO,
                                                  logging.StreamHandler[io.StringIO]]) -> None:
    logger, buf, handler = captured
    handler.setFormatter(logs.JsonFormatter())
    logger.warning("disk %s is %d%% full", "a", 93)
    (line,) = _json_lines(buf)
    assert line["level"] == "warning" and line["logger"] == "darkroom.test"
    assert line["message"] == "disk a is 93% full"
    assert str(line["ts"]).endswith("Z") and "T" in str(line["ts"])
    assert "exc" not in line


def test_json_line_carries_context_extras_and_the_exception(
        captured: tuple[logging.Logger, io.StringIO, logging.StreamHandler[io.StringIO]]) -> None:
    logger, buf, handler = captured
    handler.setFormatter(logs.JsonFormatter())
    with logs.bound(request_id="r1", user_id="u1"):
        logger.info("first", extra={"action": "delete", "target": "img-1"})
        # An explicit extra wins over the context (an audit line naming another user).
        logger.info("second", extra={"user_id": "u2", "message_count": 3})
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logger.exception("failed")
    logger.info("outside")
    first, second, failed, outside = _json_lines(buf)
    assert first["request_id"] == "r1" and first["user_id"] == "u1"
    assert first["action"] == "delete" and first["target"] == "img-1"
    assert second["user_id"] == "u2" and second["message_count"] == 3
    assert "RuntimeError: boom" in str(failed["exc"]) and "Traceback" in str(failed["exc"])
    assert "request_id" not in outside and "user_id" not in outside


def test_extras_cannot_replace_the_basic_fields(
        captured: tuple[logging.Logger, io.StringIO, logging.StreamHandler[io.StringIO]]) -> None:
    logger, buf, handler = captured
    handler.setFormatter(logs.JsonFormatter())
    logger.info("real", extra={"level": "fake", "ts": "never", "thing": object()})
    (line,) = _json_lines(buf)
    assert line["level"] == "info" and line["ts"] != "never"
    assert str(line["thing"]).startswith("<object")


def test_text_line_shows_the_ids_after_the_message(
        captured: tuple[logging.Logger, io.StringIO, logging.StreamHandler[io.StringIO]]) -> None:
    logger, buf, handler = captured
    handler.setFormatter(logs.TextFormatter())
    logger.info("plain")
    with logs.bound(job_id="j9", user_id="u1"):
        logger.info("about a job", extra={"note": "two words"})
    plain, about = buf.getvalue().splitlines()
    assert plain.endswith(" INFO darkroom.test: plain")
    assert about.endswith(' INFO darkroom.test: about a job job_id=j9 user_id=u1 '
                          'note="two words"')


def test_bind_none_removes_and_reset_restores() -> None:
    logs.clear()
    token = logs.bind(job_id="a", user_id="b")
    inner = logs.bind(user_id=None)
    assert logs.context() == {"job_id": "a"}
    logs.reset(inner)
    assert logs.context() == {"job_id": "a", "user_id": "b"}
    logs.reset(token)
    assert logs.context() == {}


async def test_each_task_has_its_own_context() -> None:
    async def handle(rid: str) -> dict[str, str]:
        logs.bind(request_id=rid)
        await asyncio.sleep(0)
        return logs.context()

    logs.clear()
    results = await asyncio.gather(*(asyncio.create_task(handle(f"r{n}")) for n in range(3)))
    assert results == [{"request_id": "r0"}, {"request_id": "r1"}, {"request_id": "r2"}]
    assert logs.context() == {}


def test_configure_replaces_root_handlers_and_reaches_uvicorn() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    buf = io.StringIO()
    try:
        logs.configure("warning", "json", stream=buf)
        assert len(root.handlers) == 1 and root.level == logging.WARNING
        logging.getLogger("uvicorn.error").warning("from uvicorn")
        logging.getLogger("server.x").info("below the level")
        (line,) = _json_lines(buf)
        assert line["logger"] == "uvicorn.error" and line["message"] == "from uvicorn"
    finally:
        logging.captureWarnings(False)
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])


def test_uvicorn_access_lines_get_http_fields(
        captured: tuple[logging.Logger, io.StringIO, logging.StreamHandler[io.StringIO]]) -> None:
    _, buf, handler = captured
    handler.setFormatter(logs.JsonFormatter())
    access = logging.getLogger("uvicorn.access")
    access.addHandler(handler)
    old = access.propagate, access.level
    access.propagate = False
    access.setLevel(logging.INFO)
    try:
        access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/healthz", "1.1", 200)
    finally:
        access.removeHandler(handler)
        access.propagate = old[0]
        access.setLevel(old[1])
    (line,) = _json_lines(buf)
    assert line["message"] == '127.0.0.1:5000 - "GET /healthz HTTP/1.1" 200'
    assert (line["method"], line["path"], line["status"]) == ("GET", "/healthz", 200)


def test_level_names() -> None:
    assert logs.level_number("debug") == logging.DEBUG
    assert logs.level_number("WARNING") == logging.WARNING
    assert logs.level_number("trace") == 5


@pytest.mark.parametrize("given", ["abc-123", "0f8fad5b-d9cb-469f-a165-70867728950e",
                                   "Root=1-67891233-abcdef012345678912345678"])
def test_a_sane_request_id_is_kept(given: str) -> None:
    assert request_id(given.encode()) == given


@pytest.mark.parametrize("given", [None, b"", b"has space", b'quote"d', b"line\nbreak",
                                   b"x" * 129, b"-leading-dash", "caf\u00e9".encode()])
def test_anything_else_gets_a_fresh_id(given: bytes | None) -> None:
    made = request_id(given)
    assert made != (given or b"").decode("latin-1")
    assert len(made) == 32 and all(c in "0123456789abcdef" for c in made)

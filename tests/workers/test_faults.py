from __future__ import annotations

import pytest
import redis
import sqlalchemy.exc
from dramatiq.middleware.time_limit import TimeLimitExceeded

from server.core.imaging import InvalidImage
from workers.faults import PermanentFailure, TransientError, describe, is_transient
from workers.tasks.webhook import DeliveryRejected, resolve_destination


@pytest.mark.parametrize("exc", [
    OSError("disk full"), TransientError("later"), redis.ConnectionError("down"),
    sqlalchemy.exc.OperationalError("UPDATE", {}, Exception("database is locked")),
    TimeLimitExceeded(),
])
def test_transient_failures_are_retried(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize("exc", [ValueError("bad"), KeyError("x"), TypeError("t"),
                                 RuntimeError("bug")])
def test_everything_else_is_permanent(exc: BaseException) -> None:
    assert not is_transient(exc)


def test_a_type_can_declare_its_own_permanent_errors() -> None:
    # ImageError is not an OSError today; the declaration holds even if it ever becomes one.
    assert not is_transient(InvalidImage("damaged"), (InvalidImage,))
    assert not is_transient(OSError("x"), (OSError,))


def test_describe_reports_the_original_error() -> None:
    try:
        try:
            raise ValueError("the real reason")
        except ValueError as inner:
            raise PermanentFailure("wrapped") from inner
    except PermanentFailure as outer:
        assert describe(outer) == {"type": "ValueError", "message": "the real reason",
                                   "retryable": False}
    assert describe(RuntimeError()) == {"type": "RuntimeError", "message": "RuntimeError",
                                        "retryable": False}


def test_describe_hides_server_paths_and_says_what_is_retryable() -> None:
    lost = FileNotFoundError(2, "No such file or directory", "/srv/darkroom/files/abc")
    assert describe(lost) == {"type": "FileNotFoundError", "retryable": True,
                              "message": "storage error: No such file or directory"}
    assert describe(TransientError("later"))["retryable"] is True


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/hook", "http://10.1.2.3/hook",
                                 "http://[::1]/hook", "http://169.254.169.254/latest"])
def test_webhooks_to_internal_addresses_are_refused(url: str) -> None:
    with pytest.raises(DeliveryRejected, match="not a public address"):
        resolve_destination(url, allow_private=False)
    assert resolve_destination(url, allow_private=True).addresses

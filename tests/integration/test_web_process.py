"""The web process as a process: what it does when it cannot serve."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import stack_env, start_web, stop

pytestmark = pytest.mark.integration


def test_a_web_process_whose_port_is_taken_exits_at_once(redis_url: str,
                                                          tmp_path: Path) -> None:
    """It logs why and exits non-zero within seconds, so a supervisor (or the tests) can
    try again; it used to hang in shutdown on a background task that ate its cancel."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        env = stack_env(redis_url, f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path, port)
        log = tmp_path / "web.log"
        web = start_web(env, log)
        try:
            web.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running 20 s after failing to bind:\n{log.read_text()[-2000:]}")
        finally:
            stop(web)
    assert web.returncode != 0
    assert "address already in use" in log.read_text().lower()

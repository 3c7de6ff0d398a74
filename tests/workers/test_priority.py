"""WORKER_NICE under Linux's autogroup scheduling: a worker process, leading a session of
its own, gives its session's scheduling group its nice value (workers.supervisor)."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import Stack
from workers import supervisor

AUTOGROUP = Path("/proc/self/autogroup")
needs_autogroup = pytest.mark.skipif(not AUTOGROUP.exists(),
                                     reason="this kernel has no autogroup scheduling")


def _in_child(setup: str) -> list[str]:
    """Run ``setup`` then ``nice_own_session()`` in a new Python process; its answer and
    its autogroup before and after."""
    code = textwrap.dedent(f"""
        import os
        from pathlib import Path
        {setup}
        before = Path("/proc/self/autogroup").read_text().strip()
        from workers.supervisor import nice_own_session
        done = nice_own_session()
        print(done, before, Path("/proc/self/autogroup").read_text().strip(), sep="|")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    return out.strip().split("|")


@pytest.mark.integration
@needs_autogroup
def test_a_session_leader_gives_its_autogroup_its_nice_value() -> None:
    done, before, after = _in_child("os.setsid(); os.nice(7)")
    assert before.endswith("nice 0")
    assert (done, after.rsplit(" ", 2)[1:]) == ("True", ["nice", "7"])


@pytest.mark.integration
@needs_autogroup
def test_a_process_in_someone_elses_session_leaves_its_autogroup_alone() -> None:
    # Started from a shell (or pytest) session: lowering that group would slow the shell.
    done, before, after = _in_child("os.nice(7)")
    assert (done, after) == ("False", before)


@pytest.mark.integration
@needs_autogroup
def test_nothing_to_give_at_nice_zero() -> None:
    done, before, after = _in_child("os.setsid()")
    assert (done, after) == ("False", before)


class _Refusing:
    """An autogroup file that answers EAGAIN (the kernel's 100 ms rate limit) ``times``
    times, then takes the value."""

    def __init__(self, times: int) -> None:
        self.times, self.calls, self.written = times, 0, ""

    def write_text(self, text: str) -> int:
        self.calls += 1
        if self.calls <= self.times:
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
        self.written = text
        return len(text)


@pytest.fixture
def session_leader_at_nice_10(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor.os, "getpriority", lambda *_: 10)
    monkeypatch.setattr(supervisor.os, "getsid", lambda _pid: os.getpid())
    monkeypatch.setattr(supervisor, "_AUTOGROUP_PAUSE_S", 0)


@pytest.mark.usefixtures("session_leader_at_nice_10")
def test_slots_starting_together_wait_for_the_kernels_rate_limit() -> None:
    autogroup = _Refusing(times=3)
    assert supervisor.nice_own_session(autogroup)  # type: ignore[arg-type]
    assert (autogroup.calls, autogroup.written) == (4, "10")


@pytest.mark.usefixtures("session_leader_at_nice_10")
def test_a_kernel_that_keeps_refusing_is_given_up_on(caplog: pytest.LogCaptureFixture) -> None:
    autogroup = _Refusing(times=1000)
    assert not supervisor.nice_own_session(autogroup)  # type: ignore[arg-type]
    assert autogroup.calls == supervisor._AUTOGROUP_TRIES
    assert "EAGAIN" in caplog.text


@pytest.mark.usefixtures("session_leader_at_nice_10")
def test_no_autogroup_no_change(tmp_path: Path) -> None:
    assert not supervisor.nice_own_session(tmp_path / "missing" / "autogroup")


@needs_autogroup
@pytest.mark.integration
def test_the_stacks_dramatiq_processes_run_in_autogroups_at_worker_nice(stack: Stack) -> None:
    """As `make run` starts them: each Dramatiq process (the main one and the worker it
    forks) at WORKER_NICE (10 by default), and so is its session's group."""
    deadline = time.monotonic() + 30
    while not (workers := stack.worker_processes()):
        assert time.monotonic() < deadline, f"no Dramatiq worker process\n{stack.log_tail()}"
        time.sleep(0.2)
    nice = int(stack.env.get("WORKER_NICE", "10"))
    for pid in workers:
        assert os.getpriority(os.PRIO_PROCESS, pid) == nice
        assert Path(f"/proc/{pid}/autogroup").read_text().split()[-2:] == ["nice", str(nice)]

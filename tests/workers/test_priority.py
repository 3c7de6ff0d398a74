"""WORKER_NICE under Linux's autogroup scheduling: the supervisor gives each Dramatiq
process's session (a scheduling group of its own) that process's nice value
(workers.supervisor.nice_session_of)."""

from __future__ import annotations

import errno
import itertools
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import running_stack
from workers import supervisor

needs_autogroup = pytest.mark.skipif(not Path("/proc/self/autogroup").exists(),
                                     reason="this kernel has no autogroup scheduling")
SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def _autogroup_nice(pid: int) -> int:
    """The nice value of ``pid``'s autogroup (``/autogroup-N nice V``)."""
    return int(Path(f"/proc/{pid}/autogroup").read_text().split()[-1])


def _expected(increment: int) -> int:
    """A child's nice after ``os.nice(increment)``: this process's own, plus that."""
    return min(19, os.getpriority(os.PRIO_PROCESS, 0) + increment)


@pytest.fixture
def session_leader() -> Iterator[subprocess.Popen[bytes]]:
    """A child leading a new session (a new autogroup), at 7 more than our nice."""
    child = subprocess.Popen(SLEEPER, start_new_session=True,
                             preexec_fn=lambda: os.nice(7))
    try:
        yield child
    finally:
        child.kill()
        child.wait()


@pytest.mark.integration
@needs_autogroup
def test_a_session_leaders_autogroup_gets_its_nice_value(
        session_leader: subprocess.Popen[bytes]) -> None:
    assert _autogroup_nice(session_leader.pid) == 0
    assert supervisor.nice_session_of(session_leader.pid)
    assert _autogroup_nice(session_leader.pid) == _expected(7) > 0


@pytest.mark.integration
@needs_autogroup
def test_a_process_in_another_session_leaves_that_group_alone() -> None:
    """As for one started from a shell: that shell's group keeps its priority. (The
    session here is a throwaway one, should the check ever fail.)"""
    leader = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys; "
         f"p = subprocess.Popen({SLEEPER!r}, preexec_fn=lambda: __import__('os').nice(7)); "
         "print(p.pid, flush=True); p.wait()"],
        start_new_session=True, stdout=subprocess.PIPE)
    try:
        assert leader.stdout is not None
        member = int(leader.stdout.readline())
        assert os.getsid(member) == leader.pid != member
        assert not supervisor.nice_session_of(member)
        assert _autogroup_nice(member) == 0
    finally:
        os.killpg(leader.pid, 9)
        leader.communicate()


class _Autogroup:
    """An autogroup file that refuses ``times`` times with ``errno_`` (EAGAIN: the
    kernel's 100 ms limit), then takes the value."""

    def __init__(self, times: int, errno_: int = errno.EAGAIN) -> None:
        self.times, self.errno, self.calls, self.written = times, errno_, 0, ""

    def write_text(self, text: str) -> int:
        self.calls += 1
        if self.calls <= self.times:
            raise OSError(self.errno, os.strerror(self.errno))
        self.written, self.at = text, time.monotonic()
        return len(text)


@pytest.fixture
def at_nice_10(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any pid: a session leader at nice 10; no pause between tries."""
    monkeypatch.setattr(supervisor.os, "getpriority", lambda *_: 10)
    monkeypatch.setattr(supervisor.os, "getsid", lambda pid: pid)
    monkeypatch.setattr(supervisor, "_AUTOGROUP_PAUSE_S", 0)


def _nice(autogroup: _Autogroup | Path) -> bool:
    return supervisor.nice_session_of(12345, autogroup)  # type: ignore[arg-type]


@pytest.mark.usefixtures("at_nice_10")
def test_slots_starting_together_wait_for_the_kernels_rate_limit() -> None:
    autogroup = _Autogroup(times=3)
    assert _nice(autogroup)
    assert (autogroup.calls, autogroup.written) == (4, "10")


@pytest.mark.usefixtures("at_nice_10")
def test_a_kernel_that_keeps_refusing_is_given_up_on(caplog: pytest.LogCaptureFixture) -> None:
    autogroup = _Autogroup(times=1000)
    assert not _nice(autogroup)
    assert autogroup.calls == supervisor._AUTOGROUP_TRIES
    assert "EAGAIN" in caplog.text


@pytest.mark.usefixtures("at_nice_10")
def test_any_other_refusal_is_not_tried_again(caplog: pytest.LogCaptureFixture) -> None:
    autogroup = _Autogroup(times=1000, errno_=errno.EPERM)
    assert not _nice(autogroup)
    assert autogroup.calls == 1
    assert "could not lower the autogroup of worker process 12345" in caplog.text


@pytest.mark.usefixtures("at_nice_10")
def test_no_autogroup_no_change(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert not _nice(tmp_path / "missing" / "autogroup")
    assert "could not lower" not in caplog.text  # nothing to warn about


@pytest.mark.usefixtures("at_nice_10")
def test_a_stop_ends_the_wait_for_the_kernel() -> None:
    stopping = threading.Event()
    stopping.set()
    autogroup = _Autogroup(times=1000)
    began = time.monotonic()
    assert not supervisor.nice_session_of(12345, autogroup, stopping)  # type: ignore[arg-type]
    assert autogroup.calls == 1 and time.monotonic() - began < 1


@pytest.mark.usefixtures("at_nice_10")
def test_writes_are_spaced_for_the_kernels_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor, "_AUTOGROUP_PAUSE_S", 0.2)
    first, second = _Autogroup(times=0), _Autogroup(times=0)
    began = time.monotonic()
    assert _nice(first) and _nice(second)
    assert time.monotonic() - began >= 0.2
    assert (first.calls, second.calls) == (1, 1)


@pytest.mark.usefixtures("at_nice_10")
def test_slots_starting_at_once_take_turns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each slot runs in a thread of its own: their writes still come 0.05 s apart."""
    monkeypatch.setattr(supervisor, "_AUTOGROUP_PAUSE_S", 0.05)
    files = [_Autogroup(times=0) for _ in range(4)]
    threads = [threading.Thread(target=_nice, args=(f,)) for f in files]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    times = sorted(f.at for f in files)
    assert all(later - earlier >= 0.05 for earlier, later in itertools.pairwise(times))


class _Child:
    """A Dramatiq process that starts and exits at once, cleanly."""

    pid = 4242

    def __init__(self, *_args: object, **_kwargs: object) -> None:
        pass

    def wait(self) -> int:
        return 0


@pytest.mark.parametrize("nice", [10, 0])
def test_each_slot_gives_its_process_session_the_nice_value(
        monkeypatch: pytest.MonkeyPatch, nice: int) -> None:
    given: list[int] = []
    monkeypatch.setattr(supervisor.subprocess, "Popen", _Child)
    monkeypatch.setattr(supervisor, "nice_session_of",
                        lambda pid, stopping=None: given.append(pid) or True)
    supervisor._Slot(["dramatiq"], threading.Event(), nice).run()
    assert given == ([4242] if nice else [])


@pytest.mark.parametrize(("nice", "sid"), [(0, 12345), (10, 1)], ids=["nice 0", "no leader"])
def test_nothing_written_at_nice_0_or_for_a_process_that_leads_no_session(
        monkeypatch: pytest.MonkeyPatch, nice: int, sid: int) -> None:
    monkeypatch.setattr(supervisor.os, "getpriority", lambda *_: nice)
    monkeypatch.setattr(supervisor.os, "getsid", lambda _pid: sid)
    autogroup = _Autogroup(times=0)
    assert not _nice(autogroup)
    assert autogroup.calls == 0


def test_a_process_gone_already_is_let_be(monkeypatch: pytest.MonkeyPatch) -> None:
    def gone(*_: object) -> int:
        raise ProcessLookupError(errno.ESRCH, "No such process")

    monkeypatch.setattr(supervisor.os, "getpriority", gone)
    autogroup = _Autogroup(times=0)
    assert not _nice(autogroup)
    assert autogroup.calls == 0


@pytest.mark.integration
@pytest.mark.one_database
@needs_autogroup
def test_a_stacks_dramatiq_worker_processes_run_in_groups_at_their_nice(
        redis_url: str, database_url: str, tmp_path: Path) -> None:
    """As `make run` starts them: each Dramatiq worker process at WORKER_NICE (10 by
    default) more than the supervisor, and its session's group at that value. (The other
    tests' stacks run at WORKER_NICE=0: tests/conftest.py.)"""
    with running_stack(redis_url, database_url, tmp_path, io_worker=False,
                       WORKER_NICE="10") as stack:
        deadline = time.monotonic() + 30
        while not (workers := stack.worker_processes()):
            assert time.monotonic() < deadline, f"no Dramatiq worker process\n{stack.log_tail()}"
            time.sleep(0.2)
        for pid in workers:
            assert os.getpriority(os.PRIO_PROCESS, pid) == _expected(10)
            # The supervisor writes it once the process is up, taking turns with other
            # writers on this host (other test sessions' stacks).
            while _autogroup_nice(pid) != _expected(10):
                assert time.monotonic() < deadline, f"autogroup of {pid}: " + \
                    Path(f"/proc/{pid}/autogroup").read_text() + stack.log_tail()
                time.sleep(0.1)

"""The process supervisor behind ``darkroom worker``: runs Dramatiq processes, restarts them.

``darkroom worker`` (``python -m workers``) runs WORKER_PROCESSES Dramatiq processes
(``workers.dramatiq_cli``), each started again when it dies.

``python -m workers --io`` runs the I/O worker instead: one process for the webhook and
e-mail queues, whose threads wait on slow peers without taking an image job's thread.

A worker process can die (a segfault in a decoder, the OOM killer, ``kill -9``). Without
a supervisor that would end the whole service under ``make run``; here that one process
is started again after a short, growing pause, and the message it was running is
redelivered (see the README's "Failure handling").
"""

from __future__ import annotations

import ctypes
import errno
import functools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from server.infra import logs
from server.infra.settings import Settings
from workers.tasks import registry as tasks

log = logging.getLogger("workers.supervisor")

# Exit codes of the dramatiq CLI that a restart cannot fix (bad import or arguments, pidfile).
_FATAL_CODES = {2, 4}
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_MAX_PAUSE_S = 30.0
# A run this long counts as healthy: the next crash restarts after the shortest pause.
_HEALTHY_RUN_S = 60.0


# Linux takes one autogroup change per 100 ms from an unprivileged caller, counted across
# the whole host (EAGAIN inside that): this supervisor's slots take turns, spaced so
# (_AUTOGROUP_TURN), and a refusal caused by some other process is tried again a while.
_AUTOGROUP_TRIES = 30
_AUTOGROUP_PAUSE_S = 0.11
_AUTOGROUP_TURN = threading.Lock()
_autogroup_written_at = -_AUTOGROUP_PAUSE_S  # time.monotonic() of this process's last change


def _child_setup(nice: int) -> None:
    """In the child: its own process group dying with us, at a lower CPU priority.

    ``nice``: web processes answer uploads and push events first when the CPUs are busy;
    workers take what is left (WORKER_NICE, 0 for equal shares). Its session's scheduling
    group gets the same value from the supervisor once it runs (``nice_session_of``).
    """
    _own_group_dying_with_us()
    if nice:
        os.nice(nice)


def nice_session_of(pid: int, autogroup: Path | None = None,
                    stopping: threading.Event | None = None) -> bool:
    """Give the Linux autogroup of process ``pid``, which must lead its session, that
    process's nice value, if above 0; whether it did. ``autogroup``: its
    ``/proc/<pid>/autogroup`` file (by default). Given up as soon as ``stopping`` is set.

    With autogroup scheduling (on in most distributions' kernels), each session is a
    scheduling group, and groups share busy CPUs equally whatever the nice values inside
    them: nice orders the processes of one group only. Every Dramatiq process leads a
    session of its own (``_own_group_dying_with_us``), and so does each process honcho
    starts under ``make run``: without this, WORKER_NICE changed nothing between the web
    process and the workers, and the web process got no more of two busy CPUs than each
    busy worker process (about half a core). Dramatiq's worker process, forked later,
    shares its main process's session and group.

    Only for a session leader: a process in somebody's shell session must not lower the
    priority of that shell's group. Where there is no autogroup (no such file: another
    kernel or system), nothing to do. Where the processes are in a cgroup of their own
    with the CPU controller (containers, systemd units with CPU accounting), the kernel
    does not use the autogroup: nice orders the processes of one such cgroup, and cgroup
    weights order the cgroups.
    """
    global _autogroup_written_at
    try:
        nice = os.getpriority(os.PRIO_PROCESS, pid)
        if nice <= 0 or os.getsid(pid) != pid:
            return False
    except OSError:  # gone already
        return False
    path = Path(f"/proc/{pid}/autogroup") if autogroup is None else autogroup
    stopping = stopping or threading.Event()
    with _AUTOGROUP_TURN:
        for attempt in range(_AUTOGROUP_TRIES):
            wait = _autogroup_written_at + _AUTOGROUP_PAUSE_S - time.monotonic()
            if (attempt or wait > 0) and stopping.wait(_AUTOGROUP_PAUSE_S if attempt else wait):
                return False
            try:
                path.write_text(str(nice))
            except FileNotFoundError:
                return False
            except OSError as exc:
                if exc.errno == errno.EAGAIN:
                    continue
                log.warning("could not lower the autogroup of worker process %s to nice "
                            "%s: %s", pid, nice, exc)
                return False
            _autogroup_written_at = time.monotonic()
            return True
    log.warning("could not lower the autogroup of worker process %s to nice %s: the "
                "kernel kept refusing (EAGAIN)", pid, nice)
    return False


def _own_group_dying_with_us() -> None:
    """In the child: a process group of its own, and SIGTERM if the supervisor dies.

    A group of its own, because process managers (honcho, systemd) signal the whole
    group: Dramatiq's workers would get SIGTERM twice — once directly, once forwarded by
    Dramatiq — and the second one kills them without a graceful shutdown. PDEATHSIG so
    that the group never outlives a supervisor that was killed with SIGKILL.
    """
    os.setsid()
    die_with_parent()


def die_with_parent() -> None:
    """In a child, before exec: SIGTERM when its parent dies, however it dies (Linux;
    elsewhere nothing)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class _Slot:
    """One Dramatiq process (``--processes 1``), restarted on its own when it dies.

    One Dramatiq group per slot, not one group of N: when a process of a group dies,
    Dramatiq stops the others and waits for their jobs before it exits, so a crash
    would stall every worker for up to the time limit.
    """

    def __init__(self, command: list[str], stopping: threading.Event, nice: int = 0,
                 env: dict[str, str] | None = None) -> None:
        self.command = command
        self.stopping = stopping
        self.nice = nice
        self.env = env
        self.child: subprocess.Popen[bytes] | None = None
        self._terminated: subprocess.Popen[bytes] | None = None
        self.code = 0

    def run(self) -> None:
        pause = 1.0
        while not self.stopping.is_set():
            started = time.monotonic()
            self.child = subprocess.Popen(self.command, env=self.env,
                                          preexec_fn=functools.partial(_child_setup, self.nice))
            if self.stopping.is_set():  # a stop that came while it was starting
                self.terminate()
            elif self.nice:
                nice_session_of(self.child.pid, stopping=self.stopping)
            code = self.child.wait()
            if self.stopping.is_set() or code == 0:
                return
            if code in _FATAL_CODES:
                log.error("dramatiq exited with code %s; not restarting", code)
                self.code = code
                self.stopping.set()
                return
            if time.monotonic() - started > _HEALTHY_RUN_S:
                pause = 1.0
            log.warning("a worker process exited with code %s; restarting in %.0f s",
                        code, pause)
            self.stopping.wait(pause)
            pause = min(pause * 2, _MAX_PAUSE_S)

    def terminate(self) -> None:
        # Once: Dramatiq forwards each SIGTERM to its worker, and a second one there
        # means "kill now" instead of a graceful stop.
        child = self.child
        if child is not None and child.poll() is None and child is not self._terminated:
            self._terminated = child
            child.send_signal(signal.SIGTERM)


@dataclass(frozen=True)
class Plan:
    """What the supervisor runs: ``processes`` copies of ``command`` with ``env`` added."""

    command: list[str]
    env: dict[str, str]
    processes: int


def plan(settings: Settings, argv: list[str]) -> Plan:
    """The Dramatiq processes for ``argv``: the image workers, or with ``--io`` (or
    WORKER_POOL=io) the I/O worker (webhook and e-mail queues only, one process of
    IO_WORKER_THREADS threads). Other arguments go on to dramatiq."""
    io = "--io" in argv or settings.worker_pool == "io"
    extra = [arg for arg in argv if arg != "--io"]
    pool, threads = ("io", settings.io_worker_threads) if io else \
        ("images", settings.worker_threads)
    # The I/O worker names its queues; an image worker takes every queue its actors use,
    # and workers.app declares none of the I/O types' for it (WORKER_POOL below).
    queues = ["--queues", *tasks.io_queues()] if io else []
    command = [sys.executable, "-m", "workers.dramatiq_cli", "workers.app", "--skip-logging",
               "--processes", "1", "--threads", str(threads), *queues, *extra]
    # Each process fetches no more messages than it has threads (Dramatiq's default is
    # twice as many): a process with its threads busy leaves the next message to an idle
    # one instead of holding it, so work spreads over all the worker processes.
    env = {"dramatiq_queue_prefetch": str(threads), "WORKER_POOL": pool}
    # One I/O process: its threads wait on peers, so more of them cost little and a
    # second process would buy no CPU (run more `io` processes to spread across hosts).
    return Plan(command, env, 1 if io else settings.worker_processes)


def main(argv: list[str] | None = None) -> int:
    """Supervise the workers; ``argv`` (default: the command line): see ``plan``."""
    settings = Settings.from_env()
    logs.configure(settings.log_level, settings.log_format)
    planned = plan(settings, sys.argv[1:] if argv is None else list(argv))
    stopping = threading.Event()
    env = {**os.environ, **planned.env}
    slots = [_Slot(planned.command, stopping, settings.worker_nice, env)
             for _ in range(planned.processes)]

    def stop(signum: int, _frame: object) -> None:
        stopping.set()
        for slot in slots:
            slot.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    threads = [threading.Thread(target=slot.run, name=f"slot-{n}", daemon=True)
               for n, slot in enumerate(slots)]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        if stopping.wait(0.5):
            for slot in slots:
                slot.terminate()
            for thread in threads:
                thread.join()
    return max((slot.code for slot in slots), default=0)


if __name__ == "__main__":
    sys.exit(main())

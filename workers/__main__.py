"""``python -m workers``: run the Dramatiq worker processes and restart them if they die.

Dramatiq stops all its worker processes when one dies (a segfault in a decoder, the OOM
killer, ``kill -9``). Without a supervisor that would end the whole service under
``make run``; here the group is started again after a short, growing pause, and the
message that was running is redelivered (see the README's "Failure handling").
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from server.settings import Settings

log = logging.getLogger("workers.supervisor")

# Exit codes of the dramatiq CLI that a restart cannot fix (bad import or arguments, pidfile).
_FATAL_CODES = {2, 4}
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_MAX_PAUSE_S = 30.0
# A run this long counts as healthy: the next crash restarts after the shortest pause.
_HEALTHY_RUN_S = 60.0


def _own_group_dying_with_us() -> None:
    """In the child: a process group of its own, and SIGTERM if the supervisor dies.

    A group of its own, because process managers (honcho, systemd) signal the whole
    group: Dramatiq's workers would get SIGTERM twice — once directly, once forwarded by
    Dramatiq — and the second one kills them without a graceful shutdown. PDEATHSIG so
    that the group never outlives a supervisor that was killed with SIGKILL.
    """
    os.setsid()
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def main() -> int:
    settings = Settings.from_env()
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    command = [str(Path(sys.executable).parent / "dramatiq"), "workers.main",
               "--processes", str(settings.worker_processes),
               "--threads", str(settings.worker_threads), *sys.argv[1:]]
    stopping = threading.Event()
    child: subprocess.Popen[bytes] | None = None

    def stop(signum: int, _frame: object) -> None:
        stopping.set()
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    pause = 1.0
    while True:
        started = time.monotonic()
        child = subprocess.Popen(command, preexec_fn=_own_group_dying_with_us)
        code = child.wait()
        if stopping.is_set() or code == 0:
            return 0
        if code in _FATAL_CODES:
            log.error("dramatiq exited with code %s; not restarting", code)
            return code
        if time.monotonic() - started > _HEALTHY_RUN_S:
            pause = 1.0
        log.warning("worker processes exited with code %s; restarting in %.0f s", code, pause)
        if stopping.wait(pause):
            return 0
        pause = min(pause * 2, _MAX_PAUSE_S)


if __name__ == "__main__":
    sys.exit(main())

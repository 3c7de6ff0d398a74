"""Dramatiq's own command line with our logging; the supervisor runs it once per worker process.

``python -m workers.dramatiq_cli workers.app --skip-logging ...``, one per slot of
``workers.supervisor``.

The supervisor runs this instead of the ``dramatiq`` script, with ``--skip-logging``,
so that the lines Dramatiq's main process logs (booting, signals, a worker process
that died) have the same shape (LOG_FORMAT) as every other line of the deployment.
The name keeps "dramatiq" in the processes' command lines, which is how the tests (and
``ps``) tell Dramatiq's processes from the supervisor.
"""

from __future__ import annotations

import sys

from dramatiq.cli import main as dramatiq_main

from server.infra import logs
from server.infra.settings import Settings


def main() -> int:
    settings = Settings.from_env()
    logs.configure(settings.log_level, settings.log_format)
    return int(dramatiq_main() or 0)  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    sys.exit(main())

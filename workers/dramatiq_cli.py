"""``python -m workers.dramatiq_cli``: Dramatiq's own command line, with our logging.

The supervisor runs this instead of the ``dramatiq`` script, with ``--skip-logging``,
so that the lines Dramatiq's main process logs (booting, signals, a worker process
that died) have the same shape (LOG_FORMAT) as every other line of the deployment.
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

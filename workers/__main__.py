"""``python -m workers``, what ``darkroom worker`` runs: starts the supervisor, nothing else."""

from __future__ import annotations

import sys

from workers.supervisor import main

if __name__ == "__main__":
    sys.exit(main())

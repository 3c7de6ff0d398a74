"""The registry of task types: each declared once with its schema, work, retries and limits.

Adding a type is one small module that calls ``register(TaskType(...))`` and is listed in
``BUILTIN_MODULES`` (or ``TEST_MODULES`` for types that exist only with ENABLE_TEST_TASKS).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from server.jobs import queue_family

if TYPE_CHECKING:
    from server.store import JobView
    from workers.context import WorkerContext

# run(ctx, view) does the work and returns the job's result (a JSON-able dict) or None.
Runner = Callable[["WorkerContext", "JobView"], "dict[str, Any] | None"]


@dataclass(frozen=True)
class TaskType:
    """One kind of background work."""

    name: str
    description: str
    schema: dict[str, Any]
    run: Runner
    queue: str = "default"
    # None: take the deployment's RETRY_MAX_ATTEMPTS / JOB_TIME_LIMIT_S.
    max_attempts: int | None = None
    time_limit_s: int | None = None
    # Exceptions that are never worth a retry for this type, beyond the general rule.
    permanent: tuple[type[BaseException], ...] = field(default_factory=tuple)
    # Whether clients may submit it through POST /api/tasks (image jobs come from uploads).
    public: bool = True
    # A payload field naming one of the caller's images: checked at submit, and the job
    # is tied to that image (its status, its result, its deletion).
    image_field: str | None = None
    # Whether it waits on peers outside (SMTP servers, webhook receivers): such work runs
    # on the I/O worker (`darkroom worker --io`), on threads image jobs never wait for,
    # and its queue must be one of IO_QUEUES.
    io: bool = False

    def describe(self) -> dict[str, Any]:
        return {"type": self.name, "description": self.description, "queue": self.queue,
                "payload_schema": self.schema, "max_attempts": self.max_attempts,
                "time_limit_s": self.time_limit_s}


_REGISTRY: dict[str, TaskType] = {}

BUILTIN_MODULES = (
    "workers.task_types.image",
    "workers.task_types.reprocess",
    "workers.task_types.email",
    "workers.task_types.webhook",
)
TEST_MODULES = ("workers.task_types.testing",)

# The queues of the I/O types, known without importing them: the I/O worker's supervisor
# names them to Dramatiq (-Q), and no image worker declares their actors.
IO_QUEUES = ("webhooks", "email")
POOLS = ("images", "io")


def register(task_type: TaskType) -> TaskType:
    """Add a type to the registry (idempotent for the same object)."""
    if task_type.io != (task_type.queue in IO_QUEUES):
        raise ValueError(f"task type {task_type.name!r}: I/O types, and they alone, use one "
                         f"of the queues {', '.join(IO_QUEUES)}")
    existing = _REGISTRY.get(task_type.name)
    if existing is not None and existing is not task_type:
        raise ValueError(f"task type {task_type.name!r} is already registered")
    _REGISTRY[task_type.name] = task_type
    return task_type


def load(*, include_test_tasks: bool) -> dict[str, TaskType]:
    """Import the type modules and return the registry (name → type)."""
    for module in BUILTIN_MODULES + (TEST_MODULES if include_test_tasks else ()):
        importlib.import_module(module)
    if not include_test_tasks:
        return {name: t for name, t in _REGISTRY.items() if not name.startswith("test.")}
    return dict(_REGISTRY)


def in_pool(registry: dict[str, TaskType], pool: str) -> dict[str, TaskType]:
    """The types a worker of ``pool`` runs: ``io`` the I/O types, ``images`` all others."""
    if pool not in POOLS:
        raise ValueError(f"no worker pool {pool!r}; one of {', '.join(POOLS)}")
    return {name: t for name, t in registry.items() if t.io == (pool == "io")}


def io_queues() -> list[str]:
    """Every queue of the I/O types, each priority's (Dramatiq adds their delay queues)."""
    return [queue for base in IO_QUEUES for queue in queue_family(base)]

"""The registry of task types: each declared once with its schema, work, retries and limits.

Adding a type is one small module that calls ``register(TaskType(...))`` and is listed in
``BUILTIN_MODULES`` (or ``TEST_MODULES`` for types that exist only with ENABLE_TEST_TASKS).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

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


def register(task_type: TaskType) -> TaskType:
    """Add a type to the registry (idempotent for the same object)."""
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

"""The work behind each task type: ``server.core.tasks`` declares the types, and each
module here registers the ``run`` function (and the errors never worth a retry) of one.

Adding a type is its declaration in ``server/core/tasks.py`` plus one small module here
that calls ``register(TaskType.of(SPEC, run=...))``, listed in ``BUILTIN_MODULES`` (or
``TEST_MODULES`` for types that exist only with ENABLE_TEST_TASKS).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from server.core import tasks as declarations
from server.core.tasks import IO_QUEUES, POOLS, TaskSpec

if TYPE_CHECKING:
    from server.data.store import JobView
    from workers.context import WorkerContext



@dataclass(frozen=True)
class Completed:
    """What ``run`` may return instead of a bare result: the job's result and what its last
    stage produced for its image, stored with the completion in one write (not in a
    progress report of its own just before it)."""

    result: dict[str, Any] | None = None
    image_id: str | None = None
    image_outputs: dict[str, Any] = field(default_factory=dict)


# run(ctx, view) does the work and returns the job's result (a JSON-able dict), None, or
# a Completed.
Runner = Callable[["WorkerContext", "JobView"], "dict[str, Any] | Completed | None"]


@dataclass(frozen=True, kw_only=True)
class TaskType(TaskSpec):
    """A declared type with the work that runs it."""

    run: Runner
    # Exceptions that are never worth a retry for this type, beyond the general rule.
    permanent: tuple[type[BaseException], ...] = field(default_factory=tuple)

    @classmethod
    def of(cls, spec: TaskSpec, *, run: Runner,
           permanent: tuple[type[BaseException], ...] = ()) -> TaskType:
        declared = {f.name: getattr(spec, f.name) for f in dataclasses.fields(TaskSpec)}
        return cls(**declared, run=run, permanent=permanent)


_REGISTRY: dict[str, TaskType] = {}

BUILTIN_MODULES = (
    "workers.tasks.image",
    "workers.tasks.reprocess",
    "workers.tasks.email",
    "workers.tasks.webhook",
)
TEST_MODULES = ("workers.tasks.testing",)


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
    """Import the type modules and return the registry (name → type).

    Every declared type must have its work registered, or the worker would take jobs
    the web process accepts and have nothing to run them with.
    """
    for module in BUILTIN_MODULES + (TEST_MODULES if include_test_tasks else ()):
        importlib.import_module(module)
    wanted = declarations.declared(include_test_tasks=include_test_tasks)
    if missing := sorted(set(wanted) - set(_REGISTRY)):
        raise RuntimeError(f"declared task types with no work registered: {missing}")
    return {name: t for name, t in _REGISTRY.items() if name in wanted}


def in_pool(registry: dict[str, TaskType], pool: str) -> dict[str, TaskType]:
    """The types a worker of ``pool`` runs: ``io`` the I/O types, ``images`` all others."""
    if pool not in POOLS:
        raise ValueError(f"no worker pool {pool!r}; one of {', '.join(POOLS)}")
    return {name: t for name, t in registry.items() if t.io == (pool == "io")}


io_queues = declarations.io_queues

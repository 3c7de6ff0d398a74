"""Two pools of workers: image workers never take webhook or e-mail work, the I/O worker
takes nothing else (workers.supervisor.plan and workers.tasks.registry.in_pool)."""

from __future__ import annotations

from pathlib import Path

from server.infra.settings import Settings
from workers.supervisor import plan
from workers.tasks import registry as tasks


def _settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"DATA_DIR": str(tmp_path), "SECRET_KEY": "k", **env})


def _queues(command: list[str]) -> list[str]:
    if "--queues" not in command:
        return []
    rest = command[command.index("--queues") + 1:]
    return [q for q in rest if not q.startswith("-")]


def test_the_io_worker_serves_the_io_queues_alone_on_threads_of_its_own(
        tmp_path: Path) -> None:
    settings = _settings(tmp_path, WORKER_PROCESSES="3", WORKER_THREADS="2",
                         IO_WORKER_THREADS="12")
    io = plan(settings, ["--io"])
    assert io.processes == 1
    assert io.command[io.command.index("--threads") + 1] == "12"
    assert set(_queues(io.command)) == {"webhooks", "webhooks.high", "webhooks.low",
                                        "email", "email.high", "email.low"}
    assert io.env == {"dramatiq_queue_prefetch": "12", "WORKER_POOL": "io"}
    assert plan(_settings(tmp_path, WORKER_POOL="io"), []).env["WORKER_POOL"] == "io"


def test_image_workers_declare_no_io_actor(tmp_path: Path) -> None:
    settings = _settings(tmp_path, WORKER_PROCESSES="3", WORKER_THREADS="2")
    images = plan(settings, ["-Q", "images"])
    assert images.processes == 3
    assert images.command[images.command.index("--threads") + 1] == "2"
    assert images.command[-2:] == ["-Q", "images"] and "--queues" not in images.command
    assert images.env["WORKER_POOL"] == "images"
    # workers.app declares the actors of its pool only: an image worker has no consumer
    # for a queue it declares no actor on.
    registry = tasks.load(include_test_tasks=True)
    image_queues = {t.queue for t in tasks.in_pool(registry, "images").values()}
    assert image_queues == {"images", "default"}
    assert not image_queues & set(tasks.IO_QUEUES)

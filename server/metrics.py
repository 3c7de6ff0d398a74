"""Prometheus text exposition of the queue report (pure)."""

from __future__ import annotations

from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(report: dict[str, Any], dead_letters: int) -> str:
    """``GET /api/queues``' report (plus the dead-letter count) as Prometheus metrics."""
    lines = [
        "# HELP darkroom_jobs Jobs by queue and state (delayed: queued with a future run_at).",
        "# TYPE darkroom_jobs gauge",
    ]
    for queue in report["queues"]:
        name = _label(str(queue["name"]))
        for state, count in sorted(queue["counts"].items()):
            lines.append(f'darkroom_jobs{{queue="{name}",state="{_label(state)}"}} {count}')
    gauges = [
        ("darkroom_queue_oldest_waiting_seconds", "Age of the oldest job waiting to start.",
         "oldest_waiting_s"),
        ("darkroom_queue_completed_per_minute", "Completions per minute, last 5 minutes.",
         "throughput_per_min"),
        ("darkroom_queue_paused", "1 while an admin has paused the queue.", "paused"),
    ]
    for metric, help_text, key in gauges:
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge"]
        for queue in report["queues"]:
            value = queue[key]
            if value is None:
                continue
            lines.append(f'{metric}{{queue="{_label(str(queue["name"]))}"}} {float(value):g}')
    lines += [
        "# HELP darkroom_workers Worker processes with a fresh heartbeat.",
        "# TYPE darkroom_workers gauge",
        f"darkroom_workers {int(report['workers'])}",
        "# HELP darkroom_dead_letters Jobs in the dead-letter queue.",
        "# TYPE darkroom_dead_letters gauge",
        f"darkroom_dead_letters {dead_letters}",
    ]
    return "\n".join(lines) + "\n"

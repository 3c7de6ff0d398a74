"""The summary table: each figure beside its target and the Node stack's figure (pure).

Targets and the Node stack's figures are those of issue 7, measured on this machine
(2 cores) for Express + Multer + BullMQ + sharp + Socket.IO, 200 uploads at
concurrency 8, worker concurrency 2.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Results = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Target:
    label: str
    suite: str
    figure: Callable[[dict[str, Any]], float]
    goal: float
    higher_is_better: bool
    unit: str
    node: str | Callable[[dict[str, Any]], str] = ""

    def node_text(self, figures: dict[str, Any] | None) -> str:
        if isinstance(self.node, str):
            return self.node
        try:
            return self.node(figures) if figures else ""
        except (KeyError, TypeError):
            return ""

    def met(self, value: float) -> bool:
        if math.isnan(value):
            return False
        return value >= self.goal if self.higher_is_better else value <= self.goal


def _row(rows: list[dict[str, Any]], **match: Any) -> dict[str, Any]:
    for row in rows:
        if all(row.get(k) == v for k, v in match.items()):
            return row
    raise KeyError(match)


def _pipeline(source: str, key: str) -> Callable[[dict[str, Any]], float]:
    return lambda figures: float(_row(figures["rows"], source=source)[key])


def _target_rows(figures: dict[str, Any]) -> list[dict[str, Any]]:
    from bench.pipeline import TARGET_SOURCES

    return [r for r in figures["rows"] if r["source"] in TARGET_SOURCES]


def _worst(keys: tuple[str, ...]) -> Callable[[dict[str, Any]], float]:
    return lambda figures: min(float(r[k]) for r in _target_rows(figures) for k in keys)


def _worst_gap_to_ceiling(figures: dict[str, Any]) -> float:
    """How far below what the encoder allows the delivered renditions are (dB, worst)."""
    return max(float(r[f"psnr_{kind}_ceiling_db"]) - float(r[f"psnr_{kind}_db"])
               for r in _target_rows(figures) for kind in ("thumbnail", "preview"))


def _sharp_here(source: str, issue_ms: int) -> Callable[[dict[str, Any]], str]:
    return lambda f: (f"sharp {_row(f['rows'], source=source)['sharp_ms']:.0f} ms here "
                      f"({issue_ms} ms in the issue)")


TARGETS = [
    Target("pipeline vs sharp, 12 MP JPEG (one core)", "pipeline",
           _pipeline("12 MP JPEG", "ratio"), 2.5, True, "x", _sharp_here("12 MP JPEG", 111)),
    Target("pipeline vs sharp, 24 MP JPEG (one core)", "pipeline",
           _pipeline("24 MP JPEG", "ratio"), 2.5, True, "x", _sharp_here("24 MP JPEG", 136)),
    Target("PSNR as delivered, worst 12/24 MP rendition", "pipeline",
           _worst(("psnr_thumbnail_db", "psnr_preview_db")), 35.0, True, "dB",
           lambda f: f"sharp {_sharp_worst_psnr(f):.1f} dB"),
    Target("PSNR before encoding, worst 12/24 MP rendition", "pipeline",
           _worst(("psnr_thumbnail_resampled_db", "psnr_preview_resampled_db")), 35.0, True,
           "dB"),
    Target("PSNR below the encoder's own ceiling, worst", "pipeline",
           _worst_gap_to_ceiling, 1.0, False, "dB"),
    Target("end to end, 12 MP JPEG (open flow)", "e2e",
           lambda f: float(_row(f["rows"], source="12 MP JPEG", flow="open")["images_per_s"]),
           22.0, True, "images/s", "11.2"),
    Target("end to end, 0.3 MP JPEG (open flow)", "e2e",
           lambda f: float(_row(f["rows"], source="0.3 MP JPEG", flow="open")["images_per_s"]),
           40.0, True, "images/s", "19.2"),
    Target("completion p50, 12 MP JPEG (closed flow)", "e2e",
           lambda f: float(_row(f["rows"], source="12 MP JPEG", flow="closed")["p50_ms"]),
           400.0, False, "ms", "693"),
    Target("push delay p99, 500 other sockets", "push",
           lambda f: float(_row(f["rows"], other_sockets=500)["p99_ms"]),
           10.0, False, "ms", "12-30"),
    Target("accepted uploads, 1.3 MB JPEG", "accept",
           lambda f: float(_row(f["rows"], source="1.3 MB JPEG")["uploads_per_s"]),
           100.0, True, "uploads/s", "77"),
    Target("202 latency p99, 1.3 MB JPEG", "accept",
           lambda f: float(_row(f["rows"], source="1.3 MB JPEG")["p99_ms"]),
           150.0, False, "ms", "227"),
    Target("web RSS with 1,000 idle sockets", "footprint",
           lambda f: float(f["sockets"]["rss_with_sockets_mb"]), 150.0, False, "MB"),
    Target("web RSS growth during a 50 MB upload", "footprint",
           lambda f: float(f["upload"]["growth_mb"]), 10.0, False, "MB"),
]


def _sharp_worst_psnr(figures: dict[str, Any]) -> float:
    return min(min(float(r["sharp_psnr_thumbnail_db"]), float(r["sharp_psnr_preview_db"]))
               for r in _target_rows(figures))


def _fmt(value: float, unit: str) -> str:
    if math.isnan(value):
        return "n/a"
    text = f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}" if abs(value) < 100 \
        else f"{value:.0f}"
    return f"{text} {unit}" if unit != "x" else f"{text}x"


def summary(results: Results) -> list[str]:
    """Markdown lines: every target, our figure, whether it is met, the Node stack's."""
    lines = ["| figure | Darkroom | target | met | Node stack |", "|---|---|---|---|---|"]
    for target in TARGETS:
        figures = results.get(target.suite, {}).get("figures")
        try:
            value = target.figure(figures) if figures else float("nan")
        except (KeyError, TypeError):
            value = float("nan")
        sign = "≥" if target.higher_is_better else "≤"
        met = "n/a" if math.isnan(value) else "yes" if target.met(value) else "**no**"
        lines.append(f"| {target.label} | {_fmt(value, target.unit)} | "
                     f"{sign} {_fmt(target.goal, target.unit)} | {met} | "
                     f"{target.node_text(figures)} |")
    return lines


def e2e_table(result: Any) -> list[str]:
    lines = ["| end to end | flow | images/s | p50 ms | p95 ms | p99 ms |",
             "|---|---|---|---|---|---|"]
    for r in result.figures["rows"]:
        lines.append(f"| {r['source']} | {r['flow']} | {r['images_per_s']:.1f} | "
                     f"{r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['p99_ms']:.0f} |")
    return lines


def accept_table(result: Any) -> list[str]:
    lines = ["| accept (workers busy) | uploads/s | 202 p50 ms | p95 ms | p99 ms |",
             "|---|---|---|---|---|"]
    for r in result.figures["rows"]:
        lines.append(f"| {r['source']} | {r['uploads_per_s']:.1f} | {r['p50_ms']:.0f} | "
                     f"{r['p95_ms']:.0f} | {r['p99_ms']:.0f} |")
    return lines


def push_table(result: Any) -> list[str]:
    lines = ["| push delay | p50 ms | p99 ms | max ms | events |", "|---|---|---|---|---|"]
    for r in result.figures["rows"]:
        lines.append(f"| {r['other_sockets']:.0f} other sockets | {r['p50_ms']:.2f} | "
                     f"{r['p99_ms']:.2f} | {r['max_ms']:.1f} | {r['events']:.0f} |")
    return lines

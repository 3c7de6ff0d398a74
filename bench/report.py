"""The summary table: each figure beside its target and the Node stack's figure (pure).

Targets: the pipeline's, PSNR and footprint are issue 7's; end to end, uploads and push
under load are issue 14's, as ratios to the Node stack measured in the same run, beside
Darkroom (``bench/node_stack``: Express + Multer + BullMQ + sharp + Socket.IO).
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


def _stack(row: dict[str, Any], stack: str) -> dict[str, Any]:
    """One stack's figures in a side-by-side row (a row from before the Node column is
    Darkroom's alone)."""
    return dict(row[stack]) if stack in row else row if stack == "darkroom" else {}


def _ours(key: str, **match: Any) -> Callable[[dict[str, Any]], float]:
    return lambda figures: float(_stack(_row(figures["rows"], **match), "darkroom")[key])


def _node_here(key: str, unit: str, issue: str,
               **match: Any) -> Callable[[dict[str, Any]], str]:
    """The Node stack's figure measured beside ours, and the issue's (in brackets)."""

    def text(figures: dict[str, Any]) -> str:
        node = _stack(_row(figures["rows"], **match), "node")
        if key not in node:
            return f"{issue} in the issue"
        return f"{_fmt(float(node[key]), unit)} ({issue} in the issue)"

    return text


def _versus(key: str, **match: Any) -> Callable[[dict[str, Any]], float]:
    """Darkroom / Node for one figure: the median of the runs' ratios."""
    return lambda figures: float(_row(figures["rows"], **match)["ratio"][key])


def _both(key: str, unit: str, **match: Any) -> Callable[[dict[str, Any]], str]:
    """Both stacks' figures, measured side by side."""

    def text(figures: dict[str, Any]) -> str:
        row = _row(figures["rows"], **match)
        ours, node = _stack(row, "darkroom"), _stack(row, "node")
        return (f"{_fmt(float(ours[key]), unit)} here, "
                f"{_fmt(float(node[key]), unit)} Node")

    return text


def _node_only(key: str, unit: str, **match: Any) -> Callable[[dict[str, Any]], str]:
    return lambda figures: _fmt(float(_stack(_row(figures["rows"], **match), "node")[key]),
                                unit)


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
    *(Target(f"end to end vs Node, {source} ({flow} flow)", "e2e",
             _versus("images_per_s", source=source, flow=flow), 2.0, True, "x",
             _both("images_per_s", "images/s", source=source, flow=flow))
      for source, flow in (("12 MP JPEG", "open"), ("12 MP JPEG", "closed"),
                           ("0.3 MP JPEG", "open"))),
    *(Target(f"uploads accepted/s vs Node, {source} (open flow)", "e2e",
             _versus("uploads_per_s", source=source, flow="open"), 1.0, True, "x",
             _both("uploads_per_s", "uploads/s", source=source, flow="open"))
      for source in ("12 MP JPEG", "0.3 MP JPEG")),
    *(Target(f"202 p99 vs Node, {source} (open flow)", "e2e",
             _versus("accept_p99_ms", source=source, flow="open"), 1.0, False, "x",
             _both("accept_p99_ms", "ms", source=source, flow="open"))
      for source in ("12 MP JPEG", "0.3 MP JPEG")),
    *(Target(f"push p99 under load, 12 MP JPEG ({flow} flow)", "e2e",
             _ours("push_p99_ms", source="12 MP JPEG", flow=flow), 10.0, False, "ms",
             _node_only("push_p99_ms", "ms", source="12 MP JPEG", flow=flow))
      for flow in ("open", "closed")),
    Target("push delay p99, 500 other sockets", "push",
           lambda f: float(_row(f["rows"], other_sockets=500)["p99_ms"]),
           10.0, False, "ms", "12-30 in the issue"),
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


def _pair(row: dict[str, Any], key: str, digits: int = 0) -> str:
    """``Darkroom / Node`` for one figure of a side-by-side row."""
    ours, node = _stack(row, "darkroom"), _stack(row, "node")
    text = "n/a" if key not in ours else f"{float(ours[key]):.{digits}f}"
    return f"{text} / {float(node[key]):.{digits}f}" if key in node else f"{text} / n/a"


def _ratio(row: dict[str, Any], key: str) -> str:
    """Darkroom / Node: the median of the runs' ratios, and their range."""
    ratio, ranges = row.get("ratio", {}), row.get("ratio_ranges", {})
    if key not in ratio:
        return "n/a"
    low, high = ranges.get(key, (ratio[key], ratio[key]))
    return f"{ratio[key]:.2f}x ({low:.2f}-{high:.2f})"


def e2e_table(result: Any) -> list[str]:
    lines = ["| end to end, Darkroom / Node | flow | images/s | ratio (range) | p50 ms | "
             "p95 ms | p99 ms | p50 ratio |", "|---|---|---|---|---|---|---|---|"]
    for r in result.figures["rows"]:
        paced = r["flow"] == "idle"  # one at a time, with pauses: only latencies count
        lines.append(f"| {r['source']} | {r['flow']} | "
                     f"{'(one at a time)' if paced else _pair(r, 'images_per_s', 1)} | "
                     f"{'' if paced else _ratio(r, 'images_per_s')} | {_pair(r, 'p50_ms')} | "
                     f"{_pair(r, 'p95_ms')} | {_pair(r, 'p99_ms')} | {_ratio(r, 'p50_ms')} |")
    opens = [r for r in result.figures["rows"] if r["flow"] == "open"
             and "uploads_per_s" in _stack(r, "darkroom")]
    if opens:
        lines += ["", "| uploading meanwhile (open flow), Darkroom / Node | accepted/s | "
                  "ratio | 202 p50 ms | 202 p99 ms | push p99 ms (published → received) |",
                  "|---|---|---|---|---|---|"]
        for r in opens:
            lines.append(f"| {r['source']} | {_pair(r, 'uploads_per_s', 1)} | "
                         f"{_ratio(r, 'uploads_per_s')} | {_pair(r, 'accept_p50_ms')} | "
                         f"{_pair(r, 'accept_p99_ms')} | {_pair(r, 'push_p99_ms', 1)} |")
    return lines


def accept_table(result: Any) -> list[str]:
    lines = ["| accept (workers busy), Darkroom / Node | uploads/s | ratio (range) | "
             "202 p50 ms | p95 ms | p99 ms | p99 ratio |", "|---|---|---|---|---|---|---|"]
    for r in result.figures["rows"]:
        lines.append(f"| {r['source']} | {_pair(r, 'uploads_per_s', 1)} | "
                     f"{_ratio(r, 'uploads_per_s')} | {_pair(r, 'p50_ms')} | "
                     f"{_pair(r, 'p95_ms')} | {_pair(r, 'p99_ms')} | {_ratio(r, 'p99_ms')} |")
    return lines


def push_table(result: Any) -> list[str]:
    lines = ["| push delay | p50 ms | p99 ms | max ms | events |", "|---|---|---|---|---|"]
    for r in result.figures["rows"]:
        lines.append(f"| {r['other_sockets']:.0f} other sockets | {r['p50_ms']:.2f} | "
                     f"{r['p99_ms']:.2f} | {r['max_ms']:.1f} | {r['events']:.0f} |")
    return lines

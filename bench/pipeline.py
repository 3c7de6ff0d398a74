"""Pipeline: images per second on one core for the whole pipeline, beside sharp, with quality.

The pipeline is ``server.core.imaging.process`` (metadata, decode, orientation, thumbnail,
preview). The sharp column runs the same operations with Node and sharp
(``bench/sharp/pipeline.mjs``), on the same files and pinned to the same CPU, in
alternating rounds: each round times both, and the figure is the median of the rounds'
ratios, so the machine's drift between rounds cancels out. Skipped, with a note, where
Node is absent.

Quality is PSNR against a full-quality reference made with Pillow LANCZOS from the fully
decoded image: of what is delivered (the WebP files), of the pixels before encoding (what
our shortcuts cost), and of the reference itself through the same encoder (the most any
resizer can deliver at the contract's quality).
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageChops, ImageOps, ImageStat

from bench.common import ROOT, Result, median, photo_image
from server.core import imaging

SHARP_DIR = ROOT / "bench" / "sharp"
MAX_PIXELS = 100_000_000


@dataclass(frozen=True)
class Source:
    label: str
    name: str
    width: int
    height: int
    fmt: str
    orientation: int = 1


SOURCES = [
    Source("0.3 MP JPEG", "small.jpg", 640, 480, "JPEG"),
    Source("12 MP JPEG", "12mp.jpg", 4000, 3000, "JPEG"),
    # The same pixels turned by EXIF, and a portrait stored upright: the turned one should
    # cost about what the upright portrait costs (DCT scaling kept, turn done last).
    Source("12 MP JPEG, EXIF orientation 6", "12mp-rot6.jpg", 4000, 3000, "JPEG", 6),
    Source("12 MP JPEG, portrait", "12mp-portrait.jpg", 3000, 4000, "JPEG"),
    Source("24 MP JPEG", "24mp.jpg", 6000, 4000, "JPEG"),
    Source("12 MP PNG", "12mp.png", 4000, 3000, "PNG"),
    Source("6 MP WebP", "6mp.webp", 3000, 2000, "WEBP"),
]
# The rows the targets are about.
TARGET_SOURCES = ("12 MP JPEG", "24 MP JPEG")


def write_sources(folder: Path) -> dict[str, Path]:
    paths = {}
    for n, source in enumerate(SOURCES):
        img = photo_image(source.width, source.height, seed=n)
        path = folder / source.name
        if source.fmt == "JPEG":
            exif = Image.Exif()
            if source.orientation != 1:
                exif[0x0112] = source.orientation
            img.save(path, "JPEG", quality=90, exif=exif.tobytes())
        elif source.fmt == "PNG":
            img.save(path, "PNG", compress_level=6)
        else:
            img.save(path, "WEBP", quality=90)
        paths[source.name] = path
    return paths


def psnr(a: Image.Image, b: Image.Image) -> float:
    """Peak signal-to-noise ratio in dB over the RGB channels (inf for identical images)."""
    a, b = a.convert("RGB"), b.convert("RGB")
    if a.size != b.size:
        raise ValueError(f"sizes differ: {a.size} vs {b.size}")
    stat = ImageStat.Stat(ImageChops.difference(a, b))
    mse = sum(s / (a.width * a.height) for s in stat.sum2) / 3
    return float("inf") if mse == 0 else 10 * math.log10(255 ** 2 / mse)


def references(path: Path) -> tuple[Image.Image, Image.Image]:
    """Thumbnail and preview made the slow, careful way: full decode, LANCZOS, no draft."""
    with Image.open(path) as im:
        full = ImageOps.exif_transpose(im.convert("RGB"))
    thumb = ImageOps.fit(full, imaging.THUMBNAIL_SIZE, Image.Resampling.LANCZOS)
    width = min(imaging.PREVIEW_WIDTH, full.width)
    preview = full.resize((width, round(full.height * width / full.width)),
                          Image.Resampling.LANCZOS)
    return thumb, preview


def decoded(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im.copy()


def quality(path: Path, out: imaging.Renditions) -> dict[str, float]:
    """The three PSNRs of each rendition (see the module docstring)."""
    ref_thumb, ref_preview = references(path)
    # The pixels before encoding, made the way the worker makes them.
    picture = imaging.decode_picture(path, max_pixels=MAX_PIXELS)
    preview = imaging.preview_image(picture)
    thumb = imaging.thumbnail_image(picture, preview)
    return {
        "psnr_thumbnail_db": psnr(decoded(out.thumbnail), ref_thumb),
        "psnr_preview_db": psnr(decoded(out.preview), ref_preview),
        "psnr_thumbnail_resampled_db": psnr(thumb, ref_thumb),
        "psnr_preview_resampled_db": psnr(preview, ref_preview),
        "psnr_thumbnail_ceiling_db": psnr(decoded(imaging.encode_webp(
            ref_thumb, quality=imaging.THUMBNAIL_QUALITY)), ref_thumb),
        "psnr_preview_ceiling_db": psnr(decoded(imaging.encode_webp(
            ref_preview, quality=imaging.PREVIEW_QUALITY)), ref_preview),
    }


def time_darkroom(path: Path, runs: int) -> tuple[list[float], imaging.Renditions]:
    out = imaging.process(path, max_pixels=MAX_PIXELS)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        out = imaging.process(path, max_pixels=MAX_PIXELS)
        times.append((time.perf_counter() - start) * 1000)
    return times, out


def sharp_available() -> str | None:
    """Why the sharp column cannot run, or None when it can (installing sharp if needed)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        return "Node.js is not installed here: the sharp column is skipped"
    if not (SHARP_DIR / "node_modules" / "sharp").exists():
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--silent"],
                              cwd=SHARP_DIR, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            return f"npm could not install sharp: {done.stderr.strip()[-300:]}"
    return None


def time_sharp(paths: list[Path], runs: int, out_dir: Path, core: int) -> dict[str, Any]:
    """sharp's timings per file (ms, after one warm-up run), pinned to ``core``."""
    env = {**os.environ, "UV_THREADPOOL_SIZE": "1"}
    pin: Callable[[], None] = lambda: os.sched_setaffinity(0, {core})  # noqa: E731
    done = subprocess.run(
        ["node", str(SHARP_DIR / "pipeline.mjs"), str(runs + 1), str(out_dir), *map(str, paths)],
        cwd=SHARP_DIR, env=env, capture_output=True, text=True, check=True, timeout=900,
        preexec_fn=pin)
    found: dict[str, Any] = {}
    for line in done.stdout.splitlines():
        row = json.loads(line)
        if "versions" in row:
            found["versions"] = row["versions"]
        else:
            found[Path(row["file"]).name] = row["ms"][1:]
    return found


def main(quick: bool = False) -> Result:
    rounds, runs = (1, 3) if quick else (5, 3)
    result = Result("pipeline")
    allowed = os.sched_getaffinity(0)
    core = min(allowed)
    with tempfile.TemporaryDirectory(prefix="darkroom-pipeline-") as name:
        folder = Path(name)
        paths = write_sources(folder)
        why_not = sharp_available()
        if why_not is not None:
            result.notes.append(why_not)
        ours: dict[str, list[float]] = {src.name: [] for src in SOURCES}
        theirs: dict[str, list[float]] = {src.name: [] for src in SOURCES}
        ratios: dict[str, list[float]] = {src.name: [] for src in SOURCES}
        outputs: dict[str, imaging.Renditions] = {}
        for _ in range(rounds):
            os.sched_setaffinity(0, {core})
            try:
                round_ours = {}
                for src in SOURCES:
                    times, outputs[src.name] = time_darkroom(paths[src.name], runs)
                    round_ours[src.name] = median(times)
                    ours[src.name] += times
            finally:
                os.sched_setaffinity(0, allowed)
            if why_not is None:
                found = time_sharp([paths[src.name] for src in SOURCES], runs, folder, core)
                result.figures["sharp_versions"] = found.pop("versions", None)
                for src in SOURCES:
                    theirs[src.name] += found[src.name]
                    ratios[src.name].append(median(found[src.name]) / round_ours[src.name])
        rows = []
        for src in SOURCES:
            out = outputs[src.name]
            row: dict[str, Any] = {
                "source": src.label, "width": src.width, "height": src.height,
                "bytes": paths[src.name].stat().st_size,
                "ms": median(ours[src.name]), "images_per_s": 1000 / median(ours[src.name]),
                "thumbnail_bytes": len(out.thumbnail), "preview_bytes": len(out.preview),
                **quality(paths[src.name], out),
            }
            if ratios[src.name]:
                row.update({
                    "sharp_ms": median(theirs[src.name]),
                    "sharp_images_per_s": 1000 / median(theirs[src.name]),
                    "ratio": median(ratios[src.name]),
                    "ratio_range": [min(ratios[src.name]), max(ratios[src.name])],
                    "sharp_thumbnail_bytes":
                        (folder / f"{src.name}.sharp-thumbnail.webp").stat().st_size,
                    "sharp_preview_bytes":
                        (folder / f"{src.name}.sharp-preview.webp").stat().st_size,
                })
                ref_thumb, ref_preview = references(paths[src.name])
                row["sharp_psnr_thumbnail_db"] = psnr(
                    Image.open(folder / f"{src.name}.sharp-thumbnail.webp"), ref_thumb)
                row["sharp_psnr_preview_db"] = psnr(
                    Image.open(folder / f"{src.name}.sharp-preview.webp"), ref_preview)
            rows.append(row)
            print(f"  {src.label:<32} {row['ms']:6.1f} ms"
                  + (f"  sharp {row['sharp_ms']:6.1f} ms  x{row['ratio']:.2f}"
                     if "ratio" in row else "")
                  + f"  PSNR delivered {row['psnr_thumbnail_db']:.1f}/"
                    f"{row['psnr_preview_db']:.1f} dB (ceiling "
                    f"{row['psnr_thumbnail_ceiling_db']:.1f}/{row['psnr_preview_ceiling_db']:.1f}"
                    f", before encoding {row['psnr_thumbnail_resampled_db']:.1f}/"
                    f"{row['psnr_preview_resampled_db']:.1f})", flush=True)
    result.figures.update({"rounds": rounds, "runs_per_round": runs, "core": core,
                           "webp_method": imaging.WEBP_METHOD, "rows": rows})
    return result


def table(result: Result) -> list[str]:
    """The per-source detail under the summary."""
    lines = ["| source | Darkroom ms | sharp ms | ratio (range) | thumbnail / preview bytes "
             "(sharp) | PSNR delivered, dB (ceiling) |", "|---|---|---|---|---|---|"]
    for r in result.figures["rows"]:
        sharp = (f"{r['sharp_ms']:.1f} | {r['ratio']:.2f}x ({r['ratio_range'][0]:.2f}-"
                 f"{r['ratio_range'][1]:.2f}) | {r['thumbnail_bytes']} / {r['preview_bytes']} "
                 f"({r['sharp_thumbnail_bytes']} / {r['sharp_preview_bytes']})"
                 if "ratio" in r else
                 f"n/a | n/a | {r['thumbnail_bytes']} / {r['preview_bytes']}")
        lines.append(f"| {r['source']} | {r['ms']:.1f} | {sharp} | "
                     f"{r['psnr_thumbnail_db']:.1f} / {r['psnr_preview_db']:.1f} "
                     f"({r['psnr_thumbnail_ceiling_db']:.1f} / "
                     f"{r['psnr_preview_ceiling_db']:.1f}) |")
    return lines

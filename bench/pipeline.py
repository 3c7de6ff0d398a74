"""Pipeline: images per second on one core for the whole pipeline, beside sharp, with quality.

The pipeline is ``workers.imaging.process`` (metadata, decode with orientation, thumbnail,
preview). The sharp column runs the same operations with Node and sharp in the same run,
on the same files and the same CPU (``bench/sharp/pipeline.mjs``); it is skipped, with a
note, where Node is absent. Quality is the PSNR of each rendition against a full-quality
reference made with Pillow LANCZOS from the fully decoded image.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageChops, ImageOps, ImageStat

from bench.common import ROOT, Result, median, photo_image
from workers import imaging

SHARP_DIR = ROOT / "bench" / "sharp"
# The core both pipelines are pinned to: the other one stays free for the OS and noise.
CORE = 0


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
    Source("12 MP JPEG, EXIF orientation 6", "12mp-rot6.jpg", 4000, 3000, "JPEG", 6),
    Source("24 MP JPEG", "24mp.jpg", 6000, 4000, "JPEG"),
    Source("12 MP PNG", "12mp.png", 4000, 3000, "PNG"),
    Source("6 MP WebP", "6mp.webp", 3000, 2000, "WEBP"),
]


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


def time_darkroom(path: Path, runs: int) -> tuple[list[float], imaging.Renditions]:
    out = imaging.process(path, max_pixels=100_000_000)  # warm-up (codecs, caches)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        out = imaging.process(path, max_pixels=100_000_000)
        times.append((time.perf_counter() - start) * 1000)
    return times, out


def sharp_available() -> str | None:
    """Why the sharp column cannot run, or None when it can (installing sharp if needed)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        return "Node.js is not installed here: the sharp column is skipped"
    if not (SHARP_DIR / "node_modules" / "sharp").exists():
        done = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--silent"],
                              cwd=SHARP_DIR, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            return f"npm could not install sharp: {done.stderr.strip()[-300:]}"
    return None


def time_sharp(paths: list[Path], runs: int, out_dir: Path) -> dict[str, list[float]]:
    env = {**os.environ, "UV_THREADPOOL_SIZE": "1"}
    # One warm-up pass, then the timed runs (the warm-up's numbers are dropped).
    command = ["taskset", "-c", str(CORE), "node", str(SHARP_DIR / "pipeline.mjs"),
               str(runs + 1), str(out_dir), *map(str, paths)]
    if not shutil.which("taskset"):
        command = command[3:]
    done = subprocess.run(command, cwd=SHARP_DIR, env=env, capture_output=True, text=True,
                          check=True, timeout=900)
    found = {}
    for line in done.stdout.splitlines():
        row = json.loads(line)
        found[Path(row["file"]).name] = row["ms"][1:]
    return found


def main(quick: bool = False) -> Result:
    runs = 3 if quick else 9
    result = Result("pipeline")
    with tempfile.TemporaryDirectory(prefix="darkroom-pipeline-") as name:
        folder = Path(name)
        paths = write_sources(folder)
        os.sched_setaffinity(0, {CORE})
        try:
            ours = {src.name: time_darkroom(paths[src.name], runs) for src in SOURCES}
        finally:
            os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
        why_not = sharp_available()
        theirs: dict[str, list[float]] = {}
        if why_not is None:
            theirs = time_sharp([paths[src.name] for src in SOURCES], runs, folder)
        else:
            result.notes.append(why_not)
        rows = []
        for src in SOURCES:
            times, out = ours[src.name]
            ref_thumb, ref_preview = references(paths[src.name])
            base = imaging.decode(paths[src.name], max_pixels=100_000_000)
            row: dict[str, Any] = {
                "source": src.label, "width": src.width, "height": src.height,
                "bytes": paths[src.name].stat().st_size,
                "ms": statistics.median(times), "images_per_s": 1000 / median(times),
                # What the shortcuts (DCT scaling, reduce, one base) cost in fidelity...
                "psnr_thumbnail_resampled_db": psnr(imaging.thumbnail_image(base), ref_thumb),
                "psnr_preview_resampled_db": psnr(imaging.preview_image(base), ref_preview),
                # ...what is delivered, after WebP at the contract's quality...
                "psnr_thumbnail_db": psnr(decoded(out.thumbnail), ref_thumb),
                "psnr_preview_db": psnr(decoded(out.preview), ref_preview),
                # ...and the most that encoder setting allows: the reference itself encoded.
                "psnr_thumbnail_ceiling_db": psnr(decoded(imaging.encode_webp(
                    ref_thumb, quality=imaging.THUMBNAIL_QUALITY)), ref_thumb),
                "psnr_preview_ceiling_db": psnr(decoded(imaging.encode_webp(
                    ref_preview, quality=imaging.PREVIEW_QUALITY)), ref_preview),
            }
            if src.name in theirs:
                sharp_ms = median(theirs[src.name])
                row["sharp_ms"] = sharp_ms
                row["sharp_images_per_s"] = 1000 / sharp_ms
                row["ratio"] = row["images_per_s"] / row["sharp_images_per_s"]
                thumb = Image.open(folder / f"{src.name}.sharp-thumbnail.webp")
                preview = Image.open(folder / f"{src.name}.sharp-preview.webp")
                row["sharp_psnr_thumbnail_db"] = psnr(thumb, ref_thumb)
                row["sharp_psnr_preview_db"] = psnr(preview, ref_preview)
            rows.append(row)
            print(f"  {src.label:<32} {row['ms']:7.1f} ms  {row['images_per_s']:6.1f}/s"
                  + (f"  sharp {row['sharp_ms']:7.1f} ms  x{row['ratio']:.2f}"
                     if "ratio" in row else "")
                  + f"  PSNR resampled {row['psnr_thumbnail_resampled_db']:.1f}/"
                    f"{row['psnr_preview_resampled_db']:.1f} dB, delivered "
                    f"{row['psnr_thumbnail_db']:.1f}/{row['psnr_preview_db']:.1f} dB "
                    f"(ceiling {row['psnr_thumbnail_ceiling_db']:.1f}/"
                    f"{row['psnr_preview_ceiling_db']:.1f})")
    result.figures["runs"] = runs
    result.figures["rows"] = rows
    return result

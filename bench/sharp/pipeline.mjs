// The Darkroom pipeline done with sharp, as the usual Node stack would do it:
// auto-orient, 200x200 cover thumbnail as WebP q80, 800 px wide preview as WebP q85
// (never upscaled), and the metadata. One core: sharp.concurrency(1), and the caller
// sets UV_THREADPOOL_SIZE=1 and pins the process to one CPU.
//
// usage: node pipeline.mjs RUNS OUT_DIR FILE...   -> one JSON line per file: {file, ms: [...]}
import { writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import sharp from "sharp";

sharp.concurrency(1);
sharp.cache(false); // every run decodes from the file, as a worker would

async function pipeline(file) {
  const meta = await sharp(file).metadata();
  const base = sharp(file).rotate();
  const [thumbnail, preview] = await Promise.all([
    base.clone().resize(200, 200, { fit: "cover" }).webp({ quality: 80 }).toBuffer(),
    base.clone().resize({ width: 800, withoutEnlargement: true }).webp({ quality: 85 }).toBuffer(),
  ]);
  return { meta, thumbnail, preview };
}

const [runs, outDir, ...files] = process.argv.slice(2);
console.log(JSON.stringify({ versions: { node: process.version, sharp: sharp.versions.sharp,
                                         vips: sharp.versions.vips } }));
for (const file of files) {
  const ms = [];
  let last;
  for (let i = 0; i < Number(runs); i++) {
    const start = process.hrtime.bigint();
    last = await pipeline(file);
    ms.push(Number(process.hrtime.bigint() - start) / 1e6);
  }
  const stem = basename(file);
  writeFileSync(join(outDir, `${stem}.sharp-thumbnail.webp`), last.thumbnail);
  writeFileSync(join(outDir, `${stem}.sharp-preview.webp`), last.preview);
  console.log(JSON.stringify({ file, ms, width: last.meta.width, height: last.meta.height }));
}

'use strict';
// worker.js — separate process! (reference, step 03). Run it from the data directory: the
// reference's relative paths (thumbnails/, previews/, and the uploads/ paths Multer gave
// the web process) resolve there.
const fs = require('node:fs');
const os = require('node:os');
const { Worker } = require('bullmq');
const sharp = require('sharp');
const { connection, redis } = require('./redis');
const Image = require('./image');

// BullMQ's default is 1 job at a time; one per CPU is meant to make this stack stronger
// (not measured: sharp has a thread pool of its own).
const concurrency = Number(process.env.WORKER_CONCURRENCY) || os.cpus().length;

fs.mkdirSync('thumbnails', { recursive: true });
fs.mkdirSync('previews', { recursive: true });

const worker = new Worker(
  'image-processing',
  async (job) => {
    const { imageId, filePath } = job.data;
    // Step 1: Generate thumbnail
    await job.updateProgress(25);
    await sharp(filePath)
      .resize(200, 200, { fit: 'cover' })
      .webp({ quality: 80 })
      .toFile(`thumbnails/${imageId}.webp`);
    // Step 2: Generate preview
    await job.updateProgress(50);
    await sharp(filePath)
      .resize(800)
      .webp({ quality: 85 })
      .toFile(`previews/${imageId}.webp`);
    // Step 3: Extract metadata
    await job.updateProgress(75);
    const metadata = await sharp(filePath).metadata();
    // Step 4: Update database
    await Image.findByIdAndUpdate(imageId, {
      status: 'ready',
      thumbnailPath: `thumbnails/${imageId}.webp`,
      previewPath: `previews/${imageId}.webp`,
      width: metadata.width,
      height: metadata.height,
      format: metadata.format,
    });
    await job.updateProgress(100);
    return { imageId, status: 'ready' };
  },
  { connection, concurrency },
);

worker.on('completed', (job, result) => {
  console.log(`Job ${job.id} completed:`, result);
});

worker.on('failed', (job, err) => {
  console.error(`Job ${job.id} failed:`, err.message);
});

worker.on('ready', () => console.log(`worker ready, concurrency ${concurrency}`));

function stop() {
  Promise.allSettled([worker.close(), redis.quit()]).then(() => process.exit(0));
  setTimeout(() => process.exit(0), 10000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

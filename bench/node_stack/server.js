'use strict';
// The web process: the reference's upload route (step 02) and job status route (step 04),
// a session route for the benchmark's users, and its Lab [B]: Socket.IO notifications to
// the job's owner instead of polling. Run it from the data directory (as the worker): the
// reference's paths (uploads/, thumbnails/, previews/) are relative to it.
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const express = require('express');
const multer = require('multer');
const { QueueEvents } = require('bullmq');
const { Server } = require('socket.io');
const { imageQueue } = require('./queue');
const { connection, redis } = require('./redis');
const Image = require('./image');

const PORT = Number(process.env.PORT || 3000);
const SESSION_TTL_S = 24 * 3600;

fs.mkdirSync('uploads', { recursive: true });
const upload = multer({ dest: 'uploads/' }); // Multer's disk storage, random file names

const sessionKey = (token) => `session:${token}`;

async function userFor(token) {
  return token ? redis.get(sessionKey(token)) : null;
}

async function authenticate(req, res, next) {
  const header = req.get('authorization') || '';
  const userId = await userFor(header.startsWith('Bearer ') ? header.slice(7) : '');
  if (!userId) {
    return res.status(401).json({ error: 'Unauthorized' });
  }
  req.userId = userId;
  next();
}

const app = express();

app.get('/healthz', async (req, res) => {
  res.json({ status: 'ok', workers: await imageQueue.getWorkersCount() });
});

// A new user and its bearer token (what the benchmark's users log in with).
app.post('/api/session', async (req, res) => {
  const userId = crypto.randomUUID();
  const token = crypto.randomBytes(32).toString('base64url');
  await redis.set(sessionKey(token), userId, 'EX', SESSION_TTL_S);
  res.status(201).json({ token, user_id: userId });
});

// Who owns a job, for the relay below: job id -> Promise of the user id. Filled here at
// upload; an event for a job another web process took (or one that arrives before add()
// returns) reads the owner from the job's own data (one HGET), so it stays correct with
// several web processes. One promise per job keeps a job's events in order.
const owners = new Map();

function ownerOf(jobId) {
  let owner = owners.get(jobId);
  if (!owner) {
    owner = redis.hget(imageQueue.toKey(jobId), 'data')
      .then((data) => (data ? JSON.parse(data).userId : null));
    owners.set(jobId, owner);
  }
  return owner;
}

app.post('/api/images/upload', authenticate, upload.single('image'), async (req, res) => {
  if (!req.file) {
    return res.status(400).json({ error: "No file in the 'image' field" });
  }
  // Save image record immediately
  const image = await Image.create({
    owner: req.userId,
    originalPath: req.file.path,
    status: 'processing',
  });
  // Enqueue background job
  const job = await imageQueue.add(
    'process-image',
    { imageId: image.id, filePath: req.file.path, userId: req.userId },
    { attempts: 3, backoff: { type: 'exponential', delay: 1000 } },
  );
  owners.set(job.id, Promise.resolve(req.userId));
  // Respond immediately — don't wait
  res.status(202).json({
    image,
    jobId: job.id,
    message: 'Upload received, processing in background',
  });
});

app.get('/api/jobs/:jobId', authenticate, async (req, res) => {
  const job = await imageQueue.getJob(req.params.jobId);
  if (!job) {
    return res.status(404).json({ error: 'Job not found' });
  }
  const state = await job.getState();
  res.json({ state, progress: job.progress });
});

const server = http.createServer(app);
const io = new Server(server);

io.use(async (socket, next) => {
  const userId = await userFor(socket.handshake.auth && socket.handshake.auth.token);
  if (!userId) {
    return next(new Error('Unauthorized'));
  }
  socket.data.userId = userId;
  next();
});

io.on('connection', (socket) => {
  socket.join(`user:${socket.data.userId}`);
  // Darkroom's first event; this stack keeps no list of a user's jobs to send.
  socket.emit('jobs:snapshot', { jobs: [] });
});

// The relay: BullMQ's queue events (a Redis stream every web process reads) to the owner's
// room, named and shaped as Darkroom's events. `published_at` is when the event entered
// the stream (its entry id is Redis's clock, in ms), the moment Darkroom stamps on its
// own events: both measure publish -> relay -> socket. `relayed_at` is when it left here.
const queueEvents = new QueueEvents('image-processing', { connection });

const nowS = () => (performance.timeOrigin + performance.now()) / 1000;

async function relay(event, jobId, job, streamId, final) {
  const userId = await ownerOf(jobId);
  if (final) {
    owners.delete(jobId);
  }
  if (userId) {
    const publishedAt = Number(streamId.split('-')[0]) / 1000;
    io.to(`user:${userId}`).emit(event, {
      job: { id: jobId, ...job }, published_at: publishedAt, relayed_at: nowS(),
    });
  }
}

function relayed(promise) {
  promise.catch((err) => console.error('relay:', err.message));
}

queueEvents.on('progress', ({ jobId, data }, id) => {
  relayed(relay('job:progress', jobId, { state: 'active', progress: data }, id, false));
});
queueEvents.on('completed', ({ jobId }, id) => {
  relayed(relay('job:completed', jobId, { state: 'completed' }, id, true));
});
queueEvents.on('failed', ({ jobId, failedReason }, id) => {
  relayed(relay('job:failed', jobId, { state: 'failed', error: failedReason }, id, true));
});
queueEvents.on('error', (err) => console.error('queue events:', err.message));

queueEvents.waitUntilReady().then(() => {
  server.listen(PORT, '127.0.0.1', () => console.log(`web listening on ${PORT}`));
});

function stop() {
  io.close();
  server.close();
  Promise.allSettled([queueEvents.close(), imageQueue.close(), redis.quit()])
    .then(() => process.exit(0));
  setTimeout(() => process.exit(0), 5000).unref();
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

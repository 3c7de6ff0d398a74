// The web client's model of its jobs (pure: no DOM, no network). An entry is one card
// of the Processing list: an upload (file and bytes sent) and/or the job it became:
//   { uid, jobId, job, lastSeq, image, filename, file, upload, duplicate, cancelling,
//     retryingJob, actionError, drop, dismissed, detached, announcedState, ... }
// Here: which news about a job an entry takes, what a card shows, and the progress of a drop.
import { clampPercent, formatBytes, formatCountdown, formatDateTime, formatDuration, parseDate } from './format.js';
import { imageName } from './images.js';
import { isTerminal, isTransientFailure, nextSeq, shouldApply, shouldReplace, TERMINAL_STATES } from './wire.js';

/** A new entry's own fields (the page adds its elements); `file` makes it an upload. */
export function createEntry(uid, { file = null, filename = null } = {}) {
  return {
    uid,
    jobId: null,
    job: null,
    lastSeq: null,
    image: null,
    filename,
    file,
    upload: file ? newUpload(file) : null,
    duplicate: false,
    cancelling: false,
    retryingJob: false,
    actionError: null,
    drop: null,
    dismissed: false,
    detached: false,
    announcedState: null,
  };
}

/** The upload state of a file not sent yet. */
export function newUpload(file) {
  return { status: 'waiting', loaded: 0, total: file.size, error: null, xhr: null };
}

/**
 * Does `entry` take `job` (carrying `seq`)? A live event, or anything for a card the
 * person cleared, must be newer than what the entry has; a full snapshot (jobs:snapshot,
 * an answer to a request) may also be as new.
 */
export function accepts(entry, job, seq, mode) {
  const strict = mode === 'event' || entry.dismissed;
  return strict ? shouldApply(entry.lastSeq, { job, seq }) : shouldReplace(entry.lastSeq, job);
}

/** Merge `job` (carrying `seq`) into what `entry` knows of its job. */
export function mergeJob(entry, job, seq) {
  entry.job = entry.job ? { ...entry.job, ...job } : { ...job };
  entry.lastSeq = nextSeq(entry.lastSeq, seq);
}

/** Has a card's state (`data-state`) reached an end, so that "Clear finished" takes it? */
export function isFinishedCard(state) {
  return isTerminal(state) || state === 'upload-failed';
}

/** Is a queued job delayed (its run_at more than a second away)? */
export function isDelayed(job, now = Date.now()) {
  const d = job ? parseDate(job.run_at) : null;
  return Boolean(d && job.state === 'queued' && d.getTime() > now + 1000);
}

/**
 * What a waiting job is waiting for: { badge, detail, note }.
 * Paused queue (stage "paused") > delayed (future run_at) > position in the queue.
 */
export function queuedView(job, now = Date.now()) {
  if (job && job.stage === 'paused') {
    return { badge: 'paused', detail: 'Paused', note: 'Paused by an administrator. It will start when the queue is resumed.' };
  }
  if (isDelayed(job, now)) {
    const when = formatDateTime(job.run_at);
    const countdown = formatCountdown(job.run_at, now);
    return { badge: 'delayed', detail: 'Delayed', note: `Scheduled to start ${when}${countdown ? ` (${countdown})` : ''}.` };
  }
  const pos = job ? job.queue_position : null;
  let note = null;
  if (Number.isFinite(pos)) {
    note = pos === 0 ? 'Next in line.' : `${pos} ${pos === 1 ? 'job' : 'jobs'} ahead in the queue.`;
  }
  const stage = job && job.stage ? `Stage: ${job.stage}` : null;
  return { badge: 'queued', detail: [stage, 'waiting to start'].filter(Boolean).join(' · '), note };
}

/** The name on a card: the file's, the image's (as known to `imagesById`), or what the job is. */
export function entryName(entry, imagesById = new Map()) {
  const job = entry.job;
  const fromImage = (img) => imageName(img, null);
  return entry.filename
    || fromImage(entry.image)
    || fromImage(job && job.result && job.result.image)
    || (job && job.image_id != null ? fromImage(imagesById.get(String(job.image_id))) : null)
    || (job && job.type && job.type !== 'image' && !job.image_id ? `${job.type} task` : 'Untitled image');
}

/** The image a card is about (from the upload response, the finished job or the job's image_id), or null. */
export function entryImageId(entry) {
  if (entry.image && entry.image.id != null) return String(entry.image.id);
  if (entry.job && entry.job.image_id != null) return String(entry.job.image_id);
  return null;
}

function jobView(entry, now) {
  const job = entry.job;
  const state = job.state || 'queued';
  const percent = state === 'completed' ? 100 : clampPercent(job.progress);
  const stage = job.stage ? `Stage: ${job.stage}` : null;
  const attempts = Number.isFinite(job.max_attempts) && job.max_attempts > 1 && Number.isFinite(job.attempt) && job.attempt > 0
    ? `attempt ${job.attempt} of ${job.max_attempts}` : null;
  const parts = [];
  let note = null;
  let error = null;
  let badge = state;
  switch (state) {
    case 'queued': {
      const waiting = queuedView(job, now);
      badge = waiting.badge;
      parts.push(waiting.detail);
      note = waiting.note;
      break;
    }
    case 'active':
      parts.push(stage, `${percent}%`, attempts && job.attempt > 1 ? attempts : null);
      break;
    case 'retrying': {
      parts.push(stage, attempts);
      const why = job.error && job.error.message ? `: ${job.error.message}` : '';
      const when = formatDateTime(job.run_at);
      note = `Attempt failed${why}. Retrying${when ? ` at ${when}` : ' soon'}.`;
      break;
    }
    case 'completed': {
      parts.push(stage || 'Stage: done');
      const took = formatDuration(job.started_at || job.created_at, job.finished_at);
      if (took) parts.push(`took ${took}`);
      if (entry.duplicate) note = 'Already uploaded — showing the existing image.';
      break;
    }
    case 'failed':
      parts.push(stage, Number.isFinite(job.attempt) && job.attempt > 0 ? `gave up after ${job.attempt} ${job.attempt === 1 ? 'attempt' : 'attempts'}` : null);
      error = (job.error && job.error.message) || 'Processing failed.';
      if (isTransientFailure(job)) note = 'This looks temporary: retrying may work.';
      break;
    case 'cancelled':
      parts.push(stage, 'cancelled');
      break;
    default:
      parts.push(stage);
  }
  if (entry.duplicate && state !== 'completed') note = note || 'Already uploaded — this is the existing job.';
  if (entry.actionError && !isTerminal(state)) error = entry.actionError;
  else if (entry.actionError && state === 'failed') error = `${error} — ${entry.actionError}`;
  return { state, badge, percent, detail: parts.filter(Boolean).join(' · '), note, error };
}

function uploadView(up) {
  const total = up.total || 0;
  const percent = total > 0 ? clampPercent((up.loaded / total) * 100) : 0;
  switch (up.status) {
    case 'waiting':
      return { state: 'waiting', badge: 'waiting', percent: 0, detail: `Waiting to upload · ${formatBytes(total)}` };
    case 'uploading':
      return {
        state: 'uploading', badge: 'uploading', percent,
        detail: total > 0 && up.loaded >= total
          ? `Uploaded ${formatBytes(total)} · waiting for the server…`
          : `Uploading ${formatBytes(up.loaded)} of ${formatBytes(total)} (${percent}%)`,
      };
    case 'cancelled':
      return { state: 'cancelled', badge: 'cancelled', percent, detail: 'Upload cancelled' };
    case 'error':
      return { state: 'upload-failed', badge: 'upload failed', percent, detail: `Upload failed · ${formatBytes(total)}`, error: up.error || 'Upload failed.' };
    default:
      return { state: 'uploading', badge: 'uploading', percent: 100, detail: 'Waiting for the server…' };
  }
}

/** What a card shows: { state, badge, percent, detail, note, error }. */
export function entryView(entry, now = Date.now()) {
  if (entry.job) return jobView(entry, now);
  if (entry.upload) return uploadView(entry.upload);
  return { state: 'queued', badge: 'queued', percent: 0, detail: '' };
}

/** What to say (to screen readers) when a card reaches `view.state`, or null for nothing. */
export function announcement(view, name) {
  const messages = {
    queued: `${name}: uploaded, queued for processing.`,
    active: `${name}: processing.`,
    retrying: `${name}: retrying.`,
    completed: `${name}: done.`,
    failed: `${name}: failed. ${view.error || ''}`.trim(),
    cancelled: `${name}: cancelled.`,
    'upload-failed': `${name}: upload failed. ${view.error || ''}`.trim(),
  };
  return messages[view.state] || null;
}

/**
 * Progress 0..100 of one file of a drop: uploading its bytes is the first half,
 * processing (job.progress) the second. A file that has reached an end (done,
 * failed, cancelled, upload failed) counts as 100 so that the total can finish.
 */
export function fileProgress(upload, job) {
  if (job && typeof job === 'object') {
    if (TERMINAL_STATES.includes(job.state)) return 100;
    return 50 + clampPercent(job.progress) / 2;
  }
  if (!upload || typeof upload !== 'object') return 0;
  if (upload.status === 'error' || upload.status === 'cancelled') return 100;
  if (upload.status === 'done') return 50;
  const total = Number(upload.total);
  const loaded = Number(upload.loaded);
  if (!(total > 0) || !Number.isFinite(loaded)) return 0;
  return Math.min(50, Math.max(0, (loaded / total) * 50));
}

/** How one file of a drop ended: 'completed' | 'failed' | 'cancelled', or null while it is still going. */
export function fileOutcome(upload, job) {
  if (job && typeof job === 'object') return TERMINAL_STATES.includes(job.state) ? job.state : null;
  if (upload && upload.status === 'error') return 'failed';
  if (upload && upload.status === 'cancelled') return 'cancelled';
  return null;
}

/**
 * The whole drop from its files ([{upload, job}]):
 * { total, done, completed, failed, cancelled, percent (0..100, average), finished }.
 */
export function summarizeDrop(files) {
  const list = Array.isArray(files) ? files.filter(Boolean) : [];
  const summary = { total: list.length, done: 0, completed: 0, failed: 0, cancelled: 0, percent: 0, finished: false };
  if (!list.length) return summary;
  let sum = 0;
  for (const { upload, job } of list) {
    sum += fileProgress(upload, job);
    const outcome = fileOutcome(upload, job);
    if (outcome) {
      summary.done += 1;
      summary[outcome] += 1;
    }
  }
  summary.finished = summary.done === summary.total;
  summary.percent = summary.finished ? 100 : Math.min(99, Math.floor(sum / list.length));
  return summary;
}

/** "2 of 3 done", "3 of 3 done · 1 failed · 1 cancelled". */
export function dropLabel(summary) {
  if (!summary || !summary.total) return '';
  const parts = [`${summary.done} of ${summary.total} done`];
  if (summary.failed) parts.push(`${summary.failed} failed`);
  if (summary.cancelled) parts.push(`${summary.cancelled} cancelled`);
  return parts.join(' · ');
}

// The admin dashboard's model (pure: no DOM, no network): the newest copy of every job
// seen, which jobs and dead letters a filter shows, and how a job is described.
import { MESSAGES } from './api.js';
import { clampPercent, formatTimestamp } from './format.js';

export const NOT_ADMIN = 'That is not an admin token.';

/** What a failed request means on the dashboard: a refused token is not an admin's. */
export const ADMIN_MESSAGES = Object.freeze({
  0: MESSAGES[0], 401: NOT_ADMIN, 403: NOT_ADMIN, 404: MESSAGES[404], 503: MESSAGES[503],
});

/**
 * id -> the newest copy of each job seen (from REST or events), at most `max` of them:
 * past that the oldest `max / 20` go at once (a Map keeps insertion order).
 */
export function createJobCache(max = 20000) {
  const jobs = new Map();
  return {
    get: (id) => jobs.get(id),
    has: (id) => jobs.has(id),
    clear: () => jobs.clear(),
    get size() { return jobs.size; },
    /** Keep `job` if it is at least as new as what we hold; returns the newest copy. */
    remember(job) {
      const have = jobs.get(job.id);
      if (have && Number.isFinite(have.seq) && Number.isFinite(job.seq) && job.seq < have.seq) return have;
      jobs.set(job.id, job);
      if (jobs.size > max) {
        let drop = jobs.size - max + Math.floor(max / 20);
        for (const id of jobs.keys()) { if (drop-- <= 0) break; jobs.delete(id); }
      }
      return job;
    },
  };
}

/** Does a job belong in the recent-jobs list filtered by {state, type}? (type: exact match) */
export function jobMatches(job, filter, now = Date.now()) {
  if (!job || job.id == null) return false;
  if (filter && filter.state === 'delayed') {
    // "delayed" is a queued job whose run_at is still ahead, as the server counts it.
    const runAt = job.run_at ? Date.parse(job.run_at) : NaN;
    if (job.state !== 'queued' || !(runAt > now)) return false;
  } else if (filter && filter.state && job.state !== filter.state) return false;
  if (filter && filter.type && job.type !== filter.type) return false;
  return true;
}

/** Does a DLQ item match {type (exact), error (case-insensitive, in its error type or message)}? */
export function dlqMatches(item, filter) {
  if (!item || !item.job) return false;
  if (filter && filter.type && item.job.type !== filter.type) return false;
  const needle = filter && filter.error ? String(filter.error).toLowerCase() : '';
  if (!needle) return true;
  const err = item.error || {};
  return `${err.type || ''}\n${err.message || ''}`.toLowerCase().includes(needle);
}

/** A DLQ entry built from a `job:failed` event (traceback and payload are loaded on demand). */
export function dlqItemFromJob(job) {
  const err = job && job.error && typeof job.error === 'object' ? job.error : {};
  return {
    job,
    error: { type: err.type || 'Error', message: err.message || '', traceback: null },
    attempts: job ? job.attempt : null,
    failed_at: job ? job.finished_at : null,
    payload: null,
  };
}

/** Rows [term, value] describing a job in the detail panel; unknown values are left out. */
export function describeJob(job) {
  if (!job || typeof job !== 'object') return [];
  const rows = [
    ['ID', job.id], ['Type', job.type], ['State', job.state], ['Stage', job.stage],
    ['Progress', job.progress == null ? null : `${clampPercent(job.progress)}%`],
    ['Attempts', job.attempt == null ? null : `${job.attempt} of ${job.max_attempts ?? '?'}`],
    ['Priority', job.priority], ['Queue position', job.queue_position],
    ['Created', job.created_at && formatTimestamp(job.created_at)],
    ['Run at', job.run_at && formatTimestamp(job.run_at)],
    ['Started', job.started_at && formatTimestamp(job.started_at)],
    ['Finished', job.finished_at && formatTimestamp(job.finished_at)],
    ['Image', job.image_id], ['Batch', job.batch_id],
  ];
  return rows.filter(([, v]) => v != null && v !== '').map(([k, v]) => [k, String(v)]);
}

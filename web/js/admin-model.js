// The admin dashboard's model (pure: no DOM, no network): the newest copy of every job
// seen, the search filters (in the URL, in words, checked on pushed jobs), which jobs and
// dead letters a filter shows, and how a job is described.
import { MESSAGES } from './api.js';
import { clampPercent, formatTimestamp } from './format.js';

export const NOT_ADMIN = 'That is not an admin token.';
/** Where the dashboard and the job page keep the admin token (localStorage). */
export const TOKEN_KEY = 'darkroom.adminToken';

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

// ---------- search filters ----------
// A filter object maps each filter's API name to its value ('' when unset); from and to
// hold ISO-8601 times. The server checks them (server/core/search.py); here they are
// carried between the URL, the forms and the API, and checked on pushed jobs.

/** The jobs list's filters, by their names in GET /api/jobs (and in the page's URL). */
export const JOB_FILTERS = Object.freeze(['id', 'state', 'type', 'queue', 'user', 'filename', 'sha256', 'error', 'from', 'to']);
/** The dead-letter list's filters (GET /api/dlq); in the page's URL with DLQ_PREFIX. */
export const DLQ_FILTERS = Object.freeze(['id', 'type', 'queue', 'user', 'filename', 'error', 'from', 'to']);
export const DLQ_PREFIX = 'dlq.';
/** What a pushed <Job> carries enough of to check; queue, user, filename and sha256 it does not. */
export const LIVE_FILTERS = Object.freeze(['id', 'state', 'type', 'error', 'from', 'to']);
// An id filter of MIN_SHORT_ID to SHORT_ID_CHARS characters also matches short ids (an
// id's last 8 characters, or their start), as server/core/search.py does.
const MIN_SHORT_ID = 6;
const SHORT_ID_CHARS = 8;
const ID_CHARS = 32;

/** `keys` -> '' each: no filter. */
export function emptyFilters(keys) {
  return Object.fromEntries(keys.map((key) => [key, '']));
}

/** The filters `keys` read from a query string (`?a=1&b=2` or URLSearchParams), each name after `prefix`. */
export function filtersFromQuery(query, keys, prefix = '') {
  const params = query instanceof URLSearchParams ? query : new URLSearchParams(query || '');
  return Object.fromEntries(keys.map((key) => [key, (params.get(prefix + key) || '').trim()]));
}

/**
 * `query` with the filters `keys` (named after `prefix`) replaced by those set in
 * `filters`; other parameters stay as they are. '' when nothing is left, else '?…'.
 */
export function queryWithFilters(query, filters, keys, prefix = '') {
  const params = new URLSearchParams(query instanceof URLSearchParams ? query.toString() : query || '');
  for (const key of keys) {
    const value = filters && filters[key] != null ? String(filters[key]).trim() : '';
    if (value) params.set(prefix + key, value); else params.delete(prefix + key);
  }
  const s = params.toString();
  return s ? `?${s}` : '';
}

/** The names of the filters that are set. */
export function activeFilters(filters) {
  return Object.entries(filters || {}).filter(([, v]) => v != null && String(v).trim() !== '').map(([k]) => k);
}

/** Do `a` and `b` set the same filters to the same values? */
export function sameFilters(a, b) {
  const keys = new Set([...activeFilters(a), ...activeFilters(b)]);
  return [...keys].every((key) => String(a[key] ?? '').trim() === String(b[key] ?? '').trim());
}

/** Can a pushed <Job> that is not listed be checked against every filter set (so be inserted)? */
export function checkableLive(filters) {
  return activeFilters(filters).every((key) => LIVE_FILTERS.includes(key));
}

/** Does `id` match an id filter: the whole id, its start, or (6 to 8 characters) the start of its short id? */
export function idMatches(id, fragment) {
  const want = String(fragment ?? '').trim().toLowerCase();
  if (!want) return true;
  const have = String(id ?? '').toLowerCase();
  if (want.length === ID_CHARS) return have === want;
  const short = want.length >= MIN_SHORT_ID && want.length <= SHORT_ID_CHARS;
  return have.startsWith(want) || (short && have.slice(-SHORT_ID_CHARS).startsWith(want));
}

function errorContains(error, needle) {
  const want = String(needle ?? '').trim().toLowerCase();
  if (!want) return true;
  const err = error && typeof error === 'object' ? error : {};
  return `${err.type || ''}\n${err.message || ''}`.toLowerCase().includes(want);
}

function createdWithin(createdAt, from, to) {
  if (!from && !to) return true;
  const at = Date.parse(createdAt || '');
  if (!Number.isFinite(at)) return false;
  if (from && !(at >= Date.parse(from))) return false; // from: inclusive
  if (to && !(at < Date.parse(to))) return false; // to: exclusive
  return true;
}

/**
 * Does a job belong in the jobs list filtered by `filter`, as far as the job itself can
 * tell (LIVE_FILTERS)? Type matches exactly, error text anywhere in its type or message.
 * Queue, user, filename and sha256 are taken as met: a listed job matched them, and
 * they never change (checkableLive says whether an unlisted job may be added).
 */
export function jobMatches(job, filter, now = Date.now()) {
  if (!job || job.id == null) return false;
  const f = filter || {};
  if (f.state === 'delayed') {
    // "delayed" is a queued job whose run_at is still ahead, as the server counts it.
    const runAt = job.run_at ? Date.parse(job.run_at) : NaN;
    if (job.state !== 'queued' || !(runAt > now)) return false;
  } else if (f.state && job.state !== f.state) return false;
  if (f.type && job.type !== f.type) return false;
  if (!idMatches(job.id, f.id)) return false;
  if (!errorContains(job.error, f.error)) return false;
  return createdWithin(job.created_at, f.from, f.to);
}

/** Does a DLQ item match `filter` as far as it can tell (type, id, error, from/to; see jobMatches)? */
export function dlqMatches(item, filter) {
  if (!item || !item.job) return false;
  const f = filter || {};
  if (f.type && item.job.type !== f.type) return false;
  if (!idMatches(item.job.id, f.id)) return false;
  if (!errorContains(item.error, f.error)) return false;
  return createdWithin(item.job.created_at, f.from, f.to);
}

/** A datetime-local input's value (local time) as an ISO-8601 time; '' for none or junk. */
export function localInputToIso(value) {
  if (!value) return '';
  const d = new Date(value); // "YYYY-MM-DDTHH:MM[:SS]" without an offset is local time
  return Number.isNaN(d.getTime()) ? '' : d.toISOString();
}

/** An ISO-8601 time as a datetime-local input's value (local time, seconds only when set); '' for junk. */
export function isoToLocalInput(iso) {
  const d = iso ? new Date(iso) : null;
  if (!d || Number.isNaN(d.getTime())) return '';
  const pad = (n) => String(n).padStart(2, '0');
  const day = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  return d.getSeconds() || d.getMilliseconds() ? `${day}T${time}:${pad(d.getSeconds())}` : `${day}T${time}`;
}

/** The filters set, in words for a confirmation: 'type = image.process and error containing "timeout"'. */
export function describeFilters(filters) {
  const f = filters || {};
  const words = {
    id: (v) => (v.length === ID_CHARS ? `id ${v}` : `an id starting or ending with ${v}`),
    state: (v) => `state = ${v}`,
    type: (v) => `type = ${v}`,
    queue: (v) => `queue = ${v}`,
    user: (v) => `owner = ${v}`,
    filename: (v) => `filename containing "${v}"`,
    sha256: (v) => `content hash starting with ${v}`,
    error: (v) => `error containing "${v}"`,
    from: (v) => `created at or after ${formatTimestamp(v)}`,
    to: (v) => `created before ${formatTimestamp(v)}`,
  };
  const set = activeFilters(f);
  const parts = Object.keys(words).filter((key) => set.includes(key)).map((key) => words[key](String(f[key]).trim()));
  if (parts.length < 2) return parts.join('');
  return `${parts.slice(0, -1).join(', ')} and ${parts[parts.length - 1]}`;
}

/** The filter a 400 message is about ("sha256 must be …" -> 'sha256'), if it names one of `keys`. */
export function filterNamed(message, keys) {
  const m = /^(?:unknown )?(\w+)\b/.exec(String(message || ''));
  if (!m) return null;
  return keys.includes(m[1]) ? m[1] : null;
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

// What the server sends (CONTRACT.md): job states, live events and their order, list
// pages, queue figures and errors, decoded defensively (pure: no DOM, no network).
import { parseDate } from './format.js';

export const JOB_EVENTS = Object.freeze([
  'job:queued', 'job:active', 'job:progress', 'job:retrying',
  'job:completed', 'job:failed', 'job:cancelled',
]);
export const TERMINAL_STATES = Object.freeze(['completed', 'failed', 'cancelled']);
export const CANCELLABLE_STATES = Object.freeze(['queued', 'active', 'retrying']);
/**
 * error.type values of a failure that another run may fix: the errors the workers
 * treat as transient (storage I/O — OSError and its common subclasses, which is how
 * they are named —, database / Redis trouble, a time limit, a lost worker). Anything
 * else (InvalidImage, UnsupportedImage, ImageTooLarge, ...) is a problem with the input.
 */
export const TRANSIENT_ERROR_TYPES = Object.freeze([
  'TransientError', 'TimeLimitExceeded', 'WorkerLost', 'ConnectionError', 'TimeoutError',
  'OperationalError', 'InterfaceError',
  // OSError and Python's built-in subclasses of it:
  'OSError', 'IOError', 'EnvironmentError', 'BlockingIOError', 'ChildProcessError',
  'BrokenPipeError', 'ConnectionAbortedError', 'ConnectionRefusedError', 'ConnectionResetError',
  'FileExistsError', 'FileNotFoundError', 'InterruptedError', 'IsADirectoryError',
  'NotADirectoryError', 'PermissionError', 'ProcessLookupError',
]);

export function isTerminal(state) {
  return TERMINAL_STATES.includes(state);
}

/** "job:completed" -> "completed"; null for job:progress (a state of its own it is not) and junk. */
export function stateFromEvent(name) {
  return typeof name === 'string' && name.startsWith('job:') && name !== 'job:progress' ? name.slice(4) : null;
}

/** The seq carried by a live event (`event.seq`, falling back to `event.job.seq`), or null. */
export function eventSeq(event) {
  if (event && Number.isFinite(event.seq)) return event.seq;
  if (event && event.job && Number.isFinite(event.job.seq)) return event.job.seq;
  return null;
}

/**
 * A `job:*` event's payload as `{job, seq}` (a copy of the job, its state filled in
 * from the event's name or else from `known`, the copy already held), or null when it
 * carries no job.
 */
export function jobFromEvent(name, payload, known = null) {
  if (!payload || typeof payload !== 'object') return null;
  if (!payload.job || typeof payload.job !== 'object' || payload.job.id == null) return null;
  const job = { ...payload.job };
  if (!job.state) job.state = stateFromEvent(name) || (known && known.state) || '';
  return { job, seq: eventSeq(payload) };
}

/** The jobs of a `jobs:snapshot` payload, oldest first (by created_at; undated ones first). */
export function snapshotJobs(payload) {
  const jobs = payload && Array.isArray(payload.jobs) ? payload.jobs.filter((j) => j && j.id != null) : [];
  const time = (j) => { const d = parseDate(j.created_at); return d ? d.getTime() : 0; };
  return jobs.sort((a, b) => time(a) - time(b));
}

/**
 * Should a live event `{job, seq}` be applied given the last seq seen for its job?
 * Anything with seq <= lastSeq is stale and dropped. An event without any seq
 * cannot be ordered and is applied.
 */
export function shouldApply(lastSeq, event) {
  if (!event || typeof event !== 'object' || !event.job || event.job.id == null) return false;
  const seq = eventSeq(event);
  if (seq === null || lastSeq == null) return true;
  return seq > lastSeq;
}

/** Should a full job snapshot (jobs:snapshot item, upload response) replace what we know? (seq >= known) */
export function shouldReplace(lastSeq, job) {
  if (!job || typeof job !== 'object' || job.id == null) return false;
  if (lastSeq == null || !Number.isFinite(job.seq)) return true;
  return job.seq >= lastSeq;
}

/** The new "last seen" seq after applying something carrying `seq`. */
export function nextSeq(lastSeq, seq) {
  if (!Number.isFinite(seq)) return lastSeq ?? null;
  return lastSeq == null ? seq : Math.max(lastSeq, seq);
}

/** Is something carrying `seq` newer than the job we hold (`known`)? Unordered things are. */
export function isNewer(known, seq) {
  if (!known || !Number.isFinite(known.seq) || !Number.isFinite(seq)) return true;
  return seq > known.seq;
}

/** Did this job fail for a reason worth another run (not a problem with the image itself)? */
export function isTransientFailure(job) {
  if (!job || job.state !== 'failed' || !job.error || typeof job.error !== 'object') return false;
  if (typeof job.error.retryable === 'boolean') return job.error.retryable; // if the server says so
  return TRANSIENT_ERROR_TYPES.includes(job.error.type);
}

/** "Type: message" for an {type, message} error, or "". */
export function errorText(error) {
  if (!error || typeof error !== 'object') return '';
  const type = typeof error.type === 'string' ? error.type : '';
  const message = typeof error.message === 'string' ? error.message : '';
  return type && message ? `${type}: ${message}` : type || message;
}

/** A page of a list (`{items, next_before}`): its items (always an array) and the next cursor or null. */
export function pageOf(data) {
  return {
    items: data && Array.isArray(data.items) ? data.items : [],
    nextBefore: data && data.next_before != null ? data.next_before : null,
  };
}

/** The named queues of `GET /api/queues` or `queues:stats`. */
export function queuesOf(data) {
  return data && Array.isArray(data.queues) ? data.queues.filter((q) => q && q.name != null) : [];
}

/**
 * The job states the queues are counted by, in the server's order: the keys of their
 * `counts` (the server sends every counted state, zeros included), so that no list of
 * them is kept here too.
 */
export function countedStates(queues) {
  const states = [];
  for (const q of Array.isArray(queues) ? queues : []) {
    const counts = q && q.counts && typeof q.counts === 'object' ? q.counts : {};
    for (const state of Object.keys(counts)) if (!states.includes(state)) states.push(state);
  }
  return states;
}

/** Does a Socket.IO connect_error message mean "your token is bad"? */
export function isUnauthorizedMessage(message) {
  return typeof message === 'string' && message.trim().toLowerCase().startsWith('unauthorized');
}

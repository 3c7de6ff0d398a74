// A job's page (admin-job.html), its pure parts: the id in the page's path, durations,
// a worker's name split up, the events as stored merged with those pushed since, and
// which actions apply to a job (pure: no DOM, no network).

/** A job id as the page accepts it from its path: 1 to 64 lowercase hex digits. */
export const JOB_ID_PATTERN = /^[0-9a-f]{1,64}$/;
/** The states a job can be cancelled in (POST /api/jobs/{id}/cancel answers 409 after). */
export const CANCELLABLE = Object.freeze(['queued', 'delayed', 'active', 'retrying']);

/**
 * The id of `/admin/jobs/<id>` (a trailing slash allowed), or null when the path holds
 * none that JOB_ID_PATTERN accepts. `raw` is what the path held, for the message.
 */
export function jobIdFromPath(pathname) {
  const m = /^\/admin\/jobs\/([^/]*)\/?$/.exec(String(pathname || ''));
  let raw = m ? m[1] : '';
  try { raw = decodeURIComponent(raw); } catch { /* keep it as it came */ }
  return { id: JOB_ID_PATTERN.test(raw) ? raw : null, raw };
}

/**
 * Seconds taken (a stage, an attempt, a back-off), to the millisecond below a second:
 * "—", "0 ms", "850 ms", "1.2 s", "42 s", "2 min 5 s", "1 h 2 min".
 */
export function formatElapsed(seconds) {
  if (seconds == null || seconds === '') return '—';
  const s = Number(seconds);
  if (!Number.isFinite(s) || s < 0) return '—';
  // Each unit is chosen by the value rounded as shown (no "1000 ms", "60 s" or "60 min").
  const ms = Math.round(s * 1000);
  if (ms < 1000) return `${ms} ms`;
  const tenths = Math.round(s * 10) / 10;
  if (tenths < 10) return `${tenths} s`;
  const total = Math.round(s);
  if (total < 60) return `${total} s`;
  if (total < 3600) {
    const sec = total % 60;
    return sec ? `${Math.floor(total / 60)} min ${sec} s` : `${total / 60} min`;
  }
  const min = Math.floor((total % 3600) / 60);
  return min ? `${Math.floor(total / 3600)} h ${min} min` : `${Math.floor(total / 3600)} h`;
}

/**
 * A worker's name, "host:pid:thread", as `{host, pid, thread}` (the thread keeps any
 * further colons); null for none. A name of another form is all host.
 */
export function splitWorker(worker) {
  if (typeof worker !== 'string' || !worker) return null;
  const parts = worker.split(':');
  if (parts.length < 3) return { host: worker, pid: '', thread: '' };
  return { host: parts[0], pid: parts[1], thread: parts.slice(2).join(':') };
}

/** The event list's row for a pushed `job:*` event (what the server stores for it, as far as the job tells). */
export function eventFromPush(name, job, seq, publishedAt) {
  return {
    seq: Number.isFinite(seq) ? seq : null,
    name: String(name || ''),
    state: job && job.state ? job.state : '',
    stage: job && job.stage ? job.stage : '',
    progress: job && job.progress != null ? job.progress : null,
    error: job && job.error ? job.error : null,
    at: typeof publishedAt === 'string' && publishedAt ? publishedAt : new Date().toISOString(),
    worker: null,
    live: true,
  };
}

/**
 * The stored events (GET …/timeline) and the pushed ones since, one per seq in seq order:
 * a stored copy wins over a pushed one (it knows the worker). Events without a seq
 * cannot be ordered and are left out.
 */
export function mergeEvents(stored, pushed) {
  const bySeq = new Map();
  for (const list of [pushed, stored]) {
    for (const ev of Array.isArray(list) ? list : []) {
      if (ev && typeof ev === 'object' && Number.isFinite(ev.seq)) bySeq.set(ev.seq, ev);
    }
  }
  return [...bySeq.values()].sort((a, b) => a.seq - b.seq);
}

/** The highest seq in `events`, or -Infinity for none. */
export function lastSeq(events) {
  let max = -Infinity;
  for (const ev of Array.isArray(events) ? events : []) if (ev && Number.isFinite(ev.seq) && ev.seq > max) max = ev.seq;
  return max;
}

/** Of two copies of a job, the newer by seq (`b` when either cannot be ordered). */
export function newerJob(a, b) {
  if (!a) return b || null;
  if (!b) return a;
  if (Number.isFinite(a.seq) && Number.isFinite(b.seq) && a.seq > b.seq) return a;
  return b;
}

/** The <Image> of a completed image job's result, or null. */
export function resultImage(job) {
  const image = job && job.result && typeof job.result === 'object' ? job.result.image : null;
  return image && typeof image === 'object' && image.id != null ? image : null;
}

/**
 * What may be done to `job` now: retry (failed), cancel (not yet ended) and deleting its
 * image (`hasImage`: an image job whose image still exists).
 */
export function jobActions(job, hasImage = false) {
  const state = job && job.state;
  return {
    retry: state === 'failed',
    cancel: CANCELLABLE.includes(state),
    deleteImage: !!(job && job.image_id && hasImage),
  };
}

/** "waited 4.2 s before attempt 2", or null when the attempt has no back-off after it. */
export function backoffText(attempt) {
  if (!attempt || attempt.backoff_s == null || !Number.isFinite(Number(attempt.backoff_s))) return null;
  const next = Number.isFinite(attempt.number) ? ` before attempt ${attempt.number + 1}` : ' before the next attempt';
  return `Waited ${formatElapsed(attempt.backoff_s)}${next}`;
}

/** A stage's share of its attempt, as a whole percentage 0..100 (0 when unknown). */
export function stageShare(seconds, total) {
  const s = Number(seconds);
  const t = Number(total);
  if (seconds == null || total == null || !Number.isFinite(s) || !Number.isFinite(t) || t <= 0 || s < 0) return 0;
  return Math.min(100, Math.round((s / t) * 100));
}

/** How an attempt ended, in words ("running" while it runs). */
export function outcomeLabel(outcome) {
  return outcome == null || outcome === '' ? 'running' : String(outcome);
}

// Darkroom web client: uploads images, shows live job progress over Socket.IO
// and a gallery of finished images. Plain ES module, no framework, no build.
//
// Security note: every piece of server- or user-provided text (filenames,
// error messages, metadata) is written with textContent / DOM properties,
// never as HTML. URLs are checked to be http(s) before use in src/href.
import { h } from './dom.js';

// ---------------------------------------------------------------------------
// Small pure helpers (exported so they can be unit-tested under node).
// ---------------------------------------------------------------------------

export const TOKEN_KEY = 'darkroom.token';
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
export const GALLERY_PAGE_SIZE = 24;

/** The seq carried by a live event (`event.seq`, falling back to `event.job.seq`), or null. */
export function eventSeq(event) {
  if (event && Number.isFinite(event.seq)) return event.seq;
  if (event && event.job && Number.isFinite(event.job.seq)) return event.job.seq;
  return null;
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

export function isTerminal(state) {
  return TERMINAL_STATES.includes(state);
}

/** "job:completed" -> "completed" */
export function stateFromEvent(name) {
  return typeof name === 'string' && name.startsWith('job:') ? name.slice(4) : null;
}

/** Human-readable byte size: 0 B, 512 B, 1.5 KB, 12 MB, 1.02 GB. */
export function formatBytes(bytes) {
  const n = Number(bytes);
  if (!Number.isFinite(n) || n < 0) return '—';
  if (n < 1024) return `${Math.round(n)} B`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let value = n / 1024;
  let i = 0;
  const digitsFor = (v) => (v >= 100 ? 0 : v >= 10 ? 1 : 2);
  // Move up a unit when the *rounded* value would reach 1024 (no "1024 KB").
  while (Number(value.toFixed(digitsFor(value))) >= 1024 && i < units.length - 1) {
    value /= 1024;
    i += 1;
  }
  return `${Number(value.toFixed(digitsFor(value)))} ${units[i]}`;
}

/** Clamp to an integer percentage 0..100 (bad input -> 0). */
export function clampPercent(value) {
  const n = Number(value);
  if (!Number.isFinite(n)) return 0;
  return Math.min(100, Math.max(0, Math.round(n)));
}

/** Parse ISO-8601 strings, EXIF "YYYY:MM:DD HH:MM:SS" and epoch numbers (s or ms) into a Date, or null. */
export function parseDate(value) {
  if (value == null || value === '') return null;
  if (typeof value === 'number') {
    const d = new Date(value < 1e12 ? value * 1000 : value);
    return Number.isNaN(d.getTime()) ? null : d;
  }
  if (typeof value !== 'string') return null;
  const exif = /^(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})/.exec(value);
  const d = exif
    ? new Date(+exif[1], +exif[2] - 1, +exif[3], +exif[4], +exif[5], +exif[6])
    : new Date(value);
  return Number.isNaN(d.getTime()) ? null : d;
}

/** Localised date + time, or the raw string if it cannot be parsed, or null. */
export function formatDateTime(value) {
  const d = parseDate(value);
  if (!d) return value == null || value === '' ? null : String(value);
  try {
    return new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' }).format(d);
  } catch {
    return d.toISOString();
  }
}

/** "1.2 s", "850 ms", "2 min 5 s" from two timestamps, or null. */
export function formatDuration(start, end) {
  const a = parseDate(start);
  const b = parseDate(end);
  if (!a || !b) return null;
  const ms = b.getTime() - a.getTime();
  if (!Number.isFinite(ms) || ms < 0) return null;
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60_000) return `${Number((ms / 1000).toFixed(1))} s`;
  const min = Math.floor(ms / 60_000);
  const sec = Math.round((ms % 60_000) / 1000);
  return sec ? `${min} min ${sec} s` : `${min} min`;
}

/** Camera make + model without repeating the make ("Canon Canon EOS R" -> "Canon EOS R"). */
export function formatCamera(make, model) {
  const mk = typeof make === 'string' ? make.trim() : '';
  const md = typeof model === 'string' ? model.trim() : '';
  if (mk && md) return md.toLowerCase().startsWith(mk.toLowerCase()) ? md : `${mk} ${md}`;
  return mk || md || null;
}

/** Rows [term, value] for the metadata definition list of an Image. Unknown values are left out. */
export function describeMetadata(image) {
  if (!image || typeof image !== 'object') return [];
  const meta = image.metadata && typeof image.metadata === 'object' ? image.metadata : {};
  const rows = [];
  const width = meta.width ?? image.width;
  const height = meta.height ?? image.height;
  if (Number.isFinite(Number(width)) && Number.isFinite(Number(height)) && width != null && height != null) {
    rows.push(['Dimensions', `${width} × ${height}`]);
  }
  const format = meta.format ?? image.format;
  if (format) rows.push(['Format', String(format)]);
  if (meta.mode) rows.push(['Mode', String(meta.mode)]);
  if (meta.frames != null) rows.push(['Frames', String(meta.frames)]);
  const camera = formatCamera(meta.camera_make, meta.camera_model);
  if (camera) rows.push(['Camera', camera]);
  const taken = formatDateTime(meta.taken_at);
  if (taken) rows.push(['Taken at', taken]);
  if (typeof meta.has_gps === 'boolean') rows.push(['GPS', meta.has_gps ? 'Yes' : 'No']);
  if (Number.isFinite(Number(image.size_bytes)) && image.size_bytes != null) {
    rows.push(['Size', formatBytes(image.size_bytes)]);
  }
  return rows;
}

/** Return an absolute http(s) URL for use in src/href, or null for anything else (javascript:, data:, junk). */
export function safeUrl(url, base = (typeof location !== 'undefined' ? location.href : 'http://localhost/')) {
  if (typeof url !== 'string' || url.trim() === '') return null;
  try {
    const u = new URL(url, base);
    return u.protocol === 'http:' || u.protocol === 'https:' ? u.href : null;
  } catch {
    return null;
  }
}

/** Best human message for a failed HTTP response body (`{"error": {"code", "message"}}`). */
export function errorMessage(status, bodyText) {
  let body = null;
  if (typeof bodyText === 'string' && bodyText) {
    try { body = JSON.parse(bodyText); } catch { body = null; }
  } else if (bodyText && typeof bodyText === 'object') {
    body = bodyText;
  }
  const err = body && body.error;
  if (err && typeof err === 'object' && typeof err.message === 'string' && err.message) return err.message;
  if (typeof err === 'string' && err) return err;
  const fallback = {
    0: 'Network error: could not reach the server.',
    400: 'The server rejected this request.',
    401: 'Your session has expired.',
    403: 'Not allowed.',
    404: 'Not found.',
    413: 'This file is too large.',
    415: 'This file type is not supported.',
    422: 'This file could not be processed.',
    429: 'Too many requests. Please wait a moment and try again.',
    503: 'The service is temporarily unavailable.',
  };
  return fallback[status] || `Request failed (HTTP ${status}).`;
}

/** Does a Socket.IO connect_error message mean "your token is bad"? */
export function isUnauthorizedMessage(message) {
  return typeof message === 'string' && message.trim().toLowerCase().startsWith('unauthorized');
}

/** Did this job fail for a reason worth another run (not a problem with the image itself)? */
export function isTransientFailure(job) {
  if (!job || job.state !== 'failed' || !job.error || typeof job.error !== 'object') return false;
  if (typeof job.error.retryable === 'boolean') return job.error.retryable; // if the server says so
  return TRANSIENT_ERROR_TYPES.includes(job.error.type);
}


/** "in 45 s", "in 5 min", "in 2 h 5 min", "in 3 days" until `target`, or null once it has passed. */
export function formatCountdown(target, now = Date.now()) {
  const d = parseDate(target);
  if (!d) return null;
  const ms = d.getTime() - (now instanceof Date ? now.getTime() : Number(now));
  if (!Number.isFinite(ms) || ms <= 0) return null;
  const s = Math.ceil(ms / 1000);
  if (s < 60) return `in ${s} s`;
  const min = Math.round(s / 60);
  if (min < 60) return `in ${min} min`;
  const hours = Math.floor(min / 60);
  if (hours < 48) return min % 60 ? `in ${hours} h ${min % 60} min` : `in ${hours} h`;
  return `in ${Math.round(hours / 24)} days`;
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

/** Newest first, like `GET /api/images`: ids sort by creation time, so compare them (descending). */
export function compareNewestFirst(a, b) {
  const x = a && a.id != null ? String(a.id) : '';
  const y = b && b.id != null ? String(b.id) : '';
  if (x === y) return 0;
  return x < y ? 1 : -1;
}

/**
 * Every detail of an Image for the detail view, as [term, value] rows; a value the
 * image does not have reads "—" (so that the list always shows the same fields).
 */
export function describeImageDetails(image) {
  if (!image || typeof image !== 'object') return [];
  const meta = image.metadata && typeof image.metadata === 'object' ? image.metadata : {};
  const text = (v) => (v == null || v === '' ? '—' : String(v));
  const px = (v) => (Number.isFinite(Number(v)) && v != null && v !== '' ? `${v} px` : '—');
  const size = Number.isFinite(Number(image.size_bytes)) && image.size_bytes != null
    ? `${formatBytes(image.size_bytes)} (${Number(image.size_bytes).toLocaleString('en-US')} bytes)` : '—';
  return [
    ['Width', px(meta.width ?? image.width)],
    ['Height', px(meta.height ?? image.height)],
    ['Format', text(meta.format ?? image.format)],
    ['Mode', text(meta.mode)],
    ['Frames', text(meta.frames)],
    ['Camera make', text(typeof meta.camera_make === 'string' ? meta.camera_make.trim() : meta.camera_make)],
    ['Camera model', text(typeof meta.camera_model === 'string' ? meta.camera_model.trim() : meta.camera_model)],
    ['Taken at', text(formatDateTime(meta.taken_at))],
    ['GPS', typeof meta.has_gps === 'boolean' ? (meta.has_gps ? 'Yes' : 'No') : '—'],
    ['Size', size],
    ['Content type', text(image.content_type)],
    ['Created', text(formatDateTime(image.created_at))],
    ['Status', text(image.status)],
  ];
}

/** A file name for a download link: the original's own name, or "<stem>-preview.webp" for renditions. */
export function downloadName(filename, kind) {
  const name = typeof filename === 'string' && filename.trim() ? filename.trim() : 'image';
  if (kind === 'original') return name;
  const stem = name.replace(/\.[^./\\]{1,8}$/, '') || 'image';
  return `${stem}-${kind}.webp`;
}

// ---------------------------------------------------------------------------
// Browser app. Nothing below runs outside a browser, and nothing is put on window.
// ---------------------------------------------------------------------------

if (typeof window !== 'undefined' && typeof document !== 'undefined') {
  startApp();
}

function startApp() {
  const MAX_PARALLEL_UPLOADS = 3;
  const FILENAME_LOOKUP_DELAY_MS = 1500;

  const $ = (id) => document.getElementById(id);
  const ui = {
    conn: $('conn'),
    connLabel: document.querySelector('#conn .conn-label'),
    dropzone: $('dropzone'),
    fileInput: $('file-input'),
    priority: $('priority'),
    jobs: $('jobs'),
    jobsEmpty: $('jobs-empty'),
    clearFinished: $('clear-finished'),
    gallery: $('gallery'),
    galleryStatus: $('gallery-status'),
    galleryCount: $('gallery-count'),
    galleryHeading: $('gallery-heading'),
    galleryMore: $('gallery-more'),
    galleryMoreError: $('gallery-more-error'),
    total: $('total'),
    totalText: $('total-text'),
    totalPercent: $('total-percent'),
    totalProgress: $('total-progress'),
    live: $('live'),
    detail: {
      dialog: $('image-detail'),
      title: $('detail-title'),
      close: $('detail-close'),
      preview: $('detail-preview'),
      noPreview: $('detail-no-preview'),
      status: $('detail-status'),
      meta: $('detail-meta'),
      downloads: { original: $('detail-dl-original'), preview: $('detail-dl-preview'), thumbnail: $('detail-dl-thumbnail') },
      deleteBtn: $('detail-delete'),
      confirm: $('detail-confirm'),
      confirmText: $('detail-confirm-text'),
      confirmYes: $('detail-confirm-yes'),
      confirmNo: $('detail-confirm-no'),
      error: $('detail-error'),
    },
  };


  // ----- announcements (single polite live region) -----
  let announceTimer = 0;
  function announce(text) {
    clearTimeout(announceTimer);
    ui.live.textContent = '';
    announceTimer = setTimeout(() => { ui.live.textContent = text; }, 50);
  }

  // ----- token storage -----
  let memoryToken = null;
  const tokenStore = {
    get() {
      try { return localStorage.getItem(TOKEN_KEY) || memoryToken; } catch { return memoryToken; }
    },
    set(value) {
      memoryToken = value;
      try { localStorage.setItem(TOKEN_KEY, value); } catch { /* storage unavailable: keep in memory */ }
    },
    clear() {
      memoryToken = null;
      try { localStorage.removeItem(TOKEN_KEY); } catch { /* ignore */ }
    },
  };

  // ----- session -----
  let token = tokenStore.get();
  let sessionPromise = null;

  async function createSession() {
    const res = await fetch('/api/session', { method: 'POST', headers: { Accept: 'application/json' } });
    const text = await res.text();
    if (!res.ok) throw new Error(errorMessage(res.status, text));
    let body = null;
    try { body = JSON.parse(text); } catch { /* handled below */ }
    if (!body || typeof body.token !== 'string' || !body.token) throw new Error('The server returned no session token.');
    tokenStore.set(body.token);
    token = body.token;
    return token;
  }

  /**
   * Drop `staleToken` and create a new session (deduplicated: concurrent
   * callers share one request; if the token was already replaced, reuse it).
   */
  function renewSession(staleToken) {
    if (token && token !== staleToken) return Promise.resolve(token);
    if (!sessionPromise) {
      const hadIdentity = staleToken != null;
      token = null;
      tokenStore.clear();
      sessionPromise = createSession()
        .then((fresh) => {
          if (hadIdentity) onIdentityChanged();
          return fresh;
        })
        .finally(() => { sessionPromise = null; });
    }
    return sessionPromise;
  }

  function getToken() {
    return token ? Promise.resolve(token) : renewSession(null);
  }

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  /**
   * JSON API call with bearer token; `json` is sent as a JSON body. On 401 the
   * token is replaced once and the call retried.
   */
  async function api(path, { method = 'GET', body = undefined, json = undefined, retried = false } = {}) {
    const used = await getToken();
    const headers = { Authorization: `Bearer ${used}`, Accept: 'application/json' };
    if (json !== undefined) headers['Content-Type'] = 'application/json';
    let res;
    try {
      res = await fetch(path, { method, body: json !== undefined ? JSON.stringify(json) : body, headers });
    } catch {
      throw new ApiError(0, errorMessage(0));
    }
    if (res.status === 401 && !retried) {
      await renewSession(used);
      return api(path, { method, body, json, retried: true });
    }
    const text = await res.text();
    if (!res.ok) throw new ApiError(res.status, errorMessage(res.status, text));
    if (!text) return null;
    try { return JSON.parse(text); } catch { return null; }
  }

  function onIdentityChanged() {
    // A new session is a new (empty) user: reload the gallery once and
    // reconnect the socket so it authenticates with the new token.
    closeDetail();
    resetGallery();
    loadGallery();
    scheduleSocketConnect(0, true);
  }

  // -------------------------------------------------------------------------
  // Job cards
  // -------------------------------------------------------------------------

  /** job id -> entry. Upload entries join this map once their job id is known. */
  const entries = new Map();
  /** image id -> Image (from the gallery list and finished jobs), used for filenames. */
  const imagesById = new Map();
  /** Job ids whose card now follows a newer job (a retry): their late events are ignored. */
  const supersededJobs = new Set();
  /** Images deleted in this page: their jobs' events and snapshots no longer make cards. */
  const deletedImages = new Set();
  /** The files of the current drop, for the total bar: { entries: [entry…] } or null. */
  let currentDrop = null;
  let cardCounter = 0;
  let snapshotsSeen = 0;

  function newEntry({ file = null, filename = null } = {}) {
    cardCounter += 1;
    const entry = {
      uid: cardCounter,
      jobId: null,
      job: null,
      lastSeq: null,
      image: null,
      filename,
      file,
      upload: file ? { status: 'waiting', loaded: 0, total: file.size, error: null, xhr: null } : null,
      duplicate: false,
      cancelling: false,
      retryingJob: false,
      actionError: null,
      drop: null,
      dismissed: false,
      detached: false,
      shownThumb: undefined,
      shownMetaFor: undefined,
      announcedState: null,
      el: null,
    };
    entry.el = buildCard(entry);
    return entry;
  }

  function buildCard(entry) {
    const titleId = `card-${entry.uid}-title`;
    const title = h('h3', { className: 'card-title', id: titleId });
    const badge = h('span', { className: 'badge' });
    const thumb = h('div', { className: 'card-thumb' });
    const progress = h('progress', { className: 'bar', max: 100, value: 0, 'aria-labelledby': titleId });
    const detail = h('p', { className: 'card-detail' });
    const note = h('p', { className: 'card-note', hidden: true });
    const error = h('p', { className: 'card-error', hidden: true });
    const meta = h('dl', { className: 'meta', hidden: true });
    const previewLink = h('a', { className: 'link', target: '_blank', rel: 'noopener', text: 'Preview' });
    const originalLink = h('a', { className: 'link', target: '_blank', rel: 'noopener', text: 'Original' });
    const links = h('p', { className: 'card-links', hidden: true }, previewLink, originalLink);
    const cancelBtn = h('button', {
      type: 'button', className: 'btn btn-small', text: 'Cancel', hidden: true, 'data-testid': 'job-cancel',
      onclick: () => cancelEntry(entry),
    });
    const retryBtn = h('button', {
      type: 'button', className: 'btn btn-small btn-primary', text: 'Retry upload', hidden: true, 'data-testid': 'upload-retry',
      onclick: () => retryUpload(entry),
    });
    const retryJobBtn = h('button', {
      type: 'button', className: 'btn btn-small btn-primary', text: 'Retry', hidden: true, 'data-testid': 'job-retry',
      onclick: () => retryJob(entry),
    });
    const actions = h('div', { className: 'card-actions' }, retryBtn, retryJobBtn, cancelBtn);
    const root = h('li', { className: 'card', dataset: { state: 'waiting' } },
      thumb,
      h('div', { className: 'card-body' },
        h('div', { className: 'card-head' }, title, badge),
        progress,
        detail,
        note,
        error,
        meta,
        links,
        actions,
      ),
    );
    for (const btn of [cancelBtn, retryBtn, retryJobBtn]) btn.setAttribute('aria-describedby', titleId);
    return { root, title, badge, thumb, progress, detail, note, error, meta, links, previewLink, originalLink, actions, cancelBtn, retryBtn, retryJobBtn };
  }

  function displayName(entry) {
    const job = entry.job;
    const fromImage = (img) => (img && typeof img.filename === 'string' && img.filename ? img.filename : null);
    return entry.filename
      || fromImage(entry.image)
      || fromImage(job && job.result && job.result.image)
      || (job && job.image_id != null ? fromImage(imagesById.get(String(job.image_id))) : null)
      || (job && job.type && job.type !== 'image' && !job.image_id ? `${job.type} task` : 'Untitled image');
  }

  function setHidden(el, hidden) {
    if (el.hidden !== hidden) el.hidden = hidden;
  }

  function setText(el, text) {
    const value = text == null ? '' : String(text);
    if (el.textContent !== value) el.textContent = value;
    setHidden(el, value === '');
  }

  /** Visible state of an entry: { state, badge, percent, detail, note, error }. */
  function viewOf(entry) {
    const job = entry.job;
    const up = entry.upload;
    if (job) {
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
          const waiting = queuedView(job);
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
    if (up) {
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
    return { state: 'queued', badge: 'queued', percent: 0, detail: '' };
  }

  function renderEntry(entry) {
    if (entry.detached) return;
    const el = entry.el;
    const name = displayName(entry);
    const view = viewOf(entry);
    const job = entry.job;

    if (el.title.textContent !== name) el.title.textContent = name;
    el.root.dataset.state = view.state;
    if (entry.jobId) el.root.dataset.jobId = entry.jobId;
    if (el.badge.textContent !== view.badge) el.badge.textContent = view.badge;
    if (el.progress.value !== view.percent) el.progress.value = view.percent;
    el.progress.setAttribute('aria-valuetext', `${view.percent}% — ${view.badge}`);
    setText(el.detail, view.detail);
    setText(el.note, view.note);
    setText(el.error, view.error);

    // Thumbnail (only once the job has completed); it opens the image's detail view.
    const image = entry.image;
    const completed = job && job.state === 'completed';
    const thumbUrl = completed && image ? safeUrl(image.thumbnail_url) : null;
    if (thumbUrl !== entry.shownThumb) {
      entry.shownThumb = thumbUrl;
      if (thumbUrl) {
        const img = h('img', { src: thumbUrl, alt: '', width: 72, height: 72, decoding: 'async' });
        const open = h('button', {
          type: 'button', className: 'card-thumb-btn', 'aria-haspopup': 'dialog', 'data-testid': 'card-open',
          onclick: (e) => openDetail(imageIdOf(entry), e.currentTarget),
        }, img);
        open.setAttribute('aria-label', `Details of ${name}`);
        el.thumb.replaceChildren(open);
      } else {
        el.thumb.replaceChildren(h('span', { className: 'thumb-placeholder', 'aria-hidden': 'true' }));
      }
    }
    const openBtn = thumbUrl ? el.thumb.firstElementChild : null;
    if (openBtn && openBtn.getAttribute('aria-label') !== `Details of ${name}`) openBtn.setAttribute('aria-label', `Details of ${name}`);

    // Metadata and links.
    const metaFor = completed && image ? image : null;
    if (metaFor !== entry.shownMetaFor) {
      entry.shownMetaFor = metaFor;
      const rows = metaFor ? describeMetadata(metaFor) : [];
      el.meta.replaceChildren(...rows.map(([term, value]) => h('div', { className: 'meta-row' }, h('dt', { text: term }), h('dd', { text: value }))));
      setHidden(el.meta, rows.length === 0);
      const preview = metaFor ? safeUrl(metaFor.preview_url) : null;
      const original = metaFor ? safeUrl(metaFor.original_url) : null;
      if (preview) el.previewLink.href = preview; else el.previewLink.removeAttribute('href');
      if (original) el.originalLink.href = original; else el.originalLink.removeAttribute('href');
      setHidden(el.previewLink, !preview);
      setHidden(el.originalLink, !original);
      setHidden(el.links, !preview && !original);
    }

    // Actions.
    const uploadActive = !job && entry.upload && (entry.upload.status === 'waiting' || entry.upload.status === 'uploading');
    const jobCancellable = job && CANCELLABLE_STATES.includes(job.state);
    setHidden(el.cancelBtn, !(uploadActive || jobCancellable));
    el.cancelBtn.disabled = Boolean(jobCancellable && entry.cancelling);
    const cancelText = jobCancellable && entry.cancelling ? 'Cancelling…' : 'Cancel';
    if (el.cancelBtn.textContent !== cancelText) el.cancelBtn.textContent = cancelText;
    setHidden(el.retryBtn, !(entry.file && !job && entry.upload && (entry.upload.status === 'error' || entry.upload.status === 'cancelled')));
    setHidden(el.retryJobBtn, !isTransientFailure(job));
    el.retryJobBtn.disabled = entry.retryingJob;
    const retryText = entry.retryingJob ? 'Retrying…' : 'Retry';
    if (el.retryJobBtn.textContent !== retryText) el.retryJobBtn.textContent = retryText;
    setHidden(el.actions, el.cancelBtn.hidden && el.retryBtn.hidden && el.retryJobBtn.hidden);

    if (entry.drop && entry.drop === currentDrop) renderTotal();
  }

  /** The image a card is about (from the upload response, the finished job or the job's image_id), or null. */
  function imageIdOf(entry) {
    if (entry.image && entry.image.id != null) return String(entry.image.id);
    if (entry.job && entry.job.image_id != null) return String(entry.job.image_id);
    return null;
  }

  function announceEntry(entry) {
    const view = viewOf(entry);
    if (entry.announcedState === view.state) return;
    entry.announcedState = view.state;
    const name = displayName(entry);
    const messages = {
      queued: `${name}: uploaded, queued for processing.`,
      active: `${name}: processing.`,
      retrying: `${name}: retrying.`,
      completed: `${name}: done.`,
      failed: `${name}: failed. ${view.error || ''}`.trim(),
      cancelled: `${name}: cancelled.`,
      'upload-failed': `${name}: upload failed. ${view.error || ''}`.trim(),
    };
    if (messages[view.state]) announce(messages[view.state]);
  }

  function updateJobsChrome() {
    const visible = ui.jobs.children.length;
    setHidden(ui.jobsEmpty, visible > 0);
    let finished = 0;
    for (const card of ui.jobs.children) {
      const s = card.dataset.state;
      if (isTerminal(s) || s === 'upload-failed') finished += 1;
    }
    setHidden(ui.clearFinished, finished === 0);
  }

  function attachCard(entry) {
    ui.jobs.prepend(entry.el.root);
    updateJobsChrome();
  }

  /** Merge a job into its entry (creating a card if this is the first we hear of it). */
  function ingestJob(job, seq, mode) {
    if (!job || typeof job !== 'object' || job.id == null) return;
    const id = String(job.id);
    if (supersededJobs.has(id)) return;
    if (job.image_id != null && deletedImages.has(String(job.image_id))) return;
    let entry = entries.get(id);
    if (entry) {
      const strict = mode === 'event' || entry.dismissed;
      const ok = strict ? shouldApply(entry.lastSeq, { job, seq }) : shouldReplace(entry.lastSeq, job);
      if (!ok) return;
    } else {
      // A reprocess of an image whose card has finished takes over that card.
      const previous = job.type === 'image.reprocess' ? finishedEntryForImage(job.image_id) : null;
      if (previous) {
        rebindEntry(previous, job, seq, mode !== 'snapshot');
        return;
      }
      entry = newEntry();
      entry.jobId = id;
      entries.set(id, entry);
      attachCard(entry);
      scheduleFilenameLookup(entry);
    }
    entry.job = entry.job ? { ...entry.job, ...job } : { ...job };
    entry.lastSeq = nextSeq(entry.lastSeq, seq);
    afterJobChange(entry, mode !== 'snapshot');
  }

  /** The newest card about `imageId` whose job has ended (so a new job may take it over), or null. */
  function finishedEntryForImage(imageId) {
    if (imageId == null) return null;
    let found = null;
    for (const entry of entries.values()) {
      if (entry.detached || !entry.job || !isTerminal(entry.job.state)) continue;
      if (imageIdOf(entry) === String(imageId) && (!found || entry.uid > found.uid)) found = entry;
    }
    return found;
  }

  /**
   * Let `entry`'s card follow a new job (a retry of its failed one). Events of the
   * old job are ignored from now on; a card an early event of the new job created is merged in.
   */
  function rebindEntry(entry, job, seq, shouldAnnounce) {
    const newId = String(job.id);
    const oldId = entry.jobId;
    let current = { ...job };
    let lastSeq = nextSeq(null, seq ?? job.seq);
    const early = entries.get(newId);
    if (early && early !== entry) {
      if (!shouldReplace(early.lastSeq, job)) {
        current = early.job;
        lastSeq = early.lastSeq;
      }
      detachEntry(early);
    }
    if (oldId && oldId !== newId) {
      supersededJobs.add(oldId);
      entries.delete(oldId);
    }
    entry.jobId = newId;
    entries.set(newId, entry);
    entry.job = current;
    entry.lastSeq = lastSeq;
    entry.duplicate = false;
    entry.actionError = null;
    entry.retryingJob = false;
    entry.cancelling = false;
    afterJobChange(entry, shouldAnnounce);
  }

  /** Run a transiently failed job again: image jobs as `image.reprocess`, other tasks with their payload. */
  async function retryJob(entry) {
    const job = entry.job;
    if (!isTransientFailure(job) || entry.retryingJob) return;
    entry.retryingJob = true;
    entry.actionError = null;
    renderEntry(entry);
    try {
      // The same job runs again (same id, fresh attempts); its events drive this card.
      const res = await api(`/api/jobs/${encodeURIComponent(job.id)}/retry`, { method: 'POST' });
      if (!res || !res.job || res.job.id == null) throw new Error('The server sent an unexpected response.');
      if (entry.detached) return;
      entry.retryingJob = false;
      ingestJob(res.job, res.job.seq, 'event');
      announce(`${displayName(entry)}: retrying.`);
    } catch (err) {
      entry.retryingJob = false;
      entry.actionError = `Could not retry: ${(err && err.message) || 'unknown error'}`;
      renderEntry(entry);
      announce(`${displayName(entry)}: ${entry.actionError}`);
    }
  }

  /** Take a card off the page for good (another card took over its job, or its image is gone). */
  function detachEntry(entry) {
    entry.detached = true;
    entry.el.root.remove();
    if (entry.drop) {
      entry.drop.entries = entry.drop.entries.filter((e) => e !== entry);
      entry.drop = null;
      renderTotal();
    }
  }

  /** An image is gone (deleted here): drop its gallery item, its cards and its place in the drop. */
  function forgetImage(imageId) {
    const id = String(imageId);
    deletedImages.add(id);
    imagesById.delete(id);
    galleryRemove(id);
    let removed = false;
    for (const [jobId, entry] of [...entries]) {
      if (imageIdOf(entry) !== id) continue;
      entries.delete(jobId);
      supersededJobs.add(jobId);
      detachEntry(entry);
      removed = true;
    }
    if (removed) updateJobsChrome();
  }

  function afterJobChange(entry, shouldAnnounce) {
    const job = entry.job;
    if (job.state === 'completed' && job.result && job.result.image && typeof job.result.image === 'object') {
      entry.image = { ...(entry.image || {}), ...job.result.image };
      galleryUpsert(entry.image);
    }
    if (job.state !== 'queued' && job.state !== 'active' && job.state !== 'retrying') entry.cancelling = false;
    if (entry.dismissed) {
      entry.dismissed = false;
      attachCard(entry);
    }
    renderEntry(entry);
    if (shouldAnnounce) announceEntry(entry);
    else entry.announcedState = viewOf(entry).state;
    updateJobsChrome();
  }

  /** The upload response arrived: bind the upload card to its job id (adopting any card an event created first). */
  function attachJobToUpload(entry, job, image, duplicate) {
    const id = String(job.id);
    supersededJobs.delete(id);
    if (image && image.id != null) deletedImages.delete(String(image.id));
    entry.duplicate = Boolean(duplicate);
    if (image && typeof image === 'object') {
      entry.image = { ...(entry.image || {}), ...image };
      if (image.id != null) imagesById.set(String(image.id), entry.image);
      if (!entry.filename && image.filename) entry.filename = image.filename;
    }
    const existing = entries.get(id);
    if (existing && existing !== entry) {
      // A live event (or a previous upload of the same bytes) got here first.
      entry.job = existing.job;
      entry.lastSeq = existing.lastSeq;
      if (!entry.image && existing.image) entry.image = existing.image;
      detachEntry(existing);
    }
    entry.jobId = id;
    entries.set(id, entry);
    if (shouldReplace(entry.lastSeq, job)) {
      entry.job = entry.job ? { ...entry.job, ...job } : { ...job };
      entry.lastSeq = nextSeq(entry.lastSeq, job.seq);
    }
    if (entry.image && entry.image.status === 'ready') galleryUpsert(entry.image);
    afterJobChange(entry, true);
  }

  /** A card created from an event has no filename yet; ask once if no upload response supplied it. */
  function scheduleFilenameLookup(entry) {
    setTimeout(() => {
      const job = entry.job;
      if (entry.detached || entry.filename || !job || job.image_id == null) return;
      if (displayName(entry) !== 'Untitled image') return;
      api(`/api/images/${encodeURIComponent(job.image_id)}`)
        .then((img) => {
          if (img && typeof img === 'object' && !entry.detached) {
            if (img.id != null) imagesById.set(String(img.id), img);
            if (!entry.image) entry.image = img;
            if (typeof img.filename === 'string' && img.filename) entry.filename = img.filename;
            renderEntry(entry);
          }
        })
        .catch(() => { /* the card keeps its placeholder name */ });
    }, FILENAME_LOOKUP_DELAY_MS);
  }

  async function cancelEntry(entry) {
    const job = entry.job;
    if (!job) {
      const up = entry.upload;
      if (!up) return;
      if (up.status === 'waiting') {
        const i = uploadQueue.indexOf(entry);
        if (i >= 0) uploadQueue.splice(i, 1);
        up.status = 'cancelled';
      } else if (up.status === 'uploading' && up.xhr) {
        up.xhr.abort();
      }
      renderEntry(entry);
      updateJobsChrome();
      return;
    }
    if (!CANCELLABLE_STATES.includes(job.state) || entry.cancelling) return;
    entry.cancelling = true;
    entry.actionError = null;
    renderEntry(entry);
    try {
      await api(`/api/jobs/${encodeURIComponent(entry.jobId)}/cancel`, { method: 'POST' });
      // The final state arrives as a job:cancelled event.
    } catch (err) {
      entry.cancelling = false;
      entry.actionError = `Could not cancel: ${err.message}`;
      renderEntry(entry);
    }
  }

  ui.clearFinished.addEventListener('click', () => {
    for (const card of [...ui.jobs.children]) {
      const s = card.dataset.state;
      if (isTerminal(s) || s === 'upload-failed') card.remove();
    }
    for (const entry of entries.values()) {
      if (entry.job && isTerminal(entry.job.state)) entry.dismissed = true;
    }
    if (currentDrop && summarizeDrop(dropFiles(currentDrop)).finished) {
      currentDrop = null;
      renderTotal();
    }
    updateJobsChrome();
    ui.dropzone.focus();
  });

  // -------------------------------------------------------------------------
  // Total progress of the current drop (every file added since the last drop finished)
  // -------------------------------------------------------------------------


  function dropFiles(drop) {
    return drop.entries.map((entry) => ({ upload: entry.upload, job: entry.job }));
  }

  /** Files added while a drop is still going join it; otherwise they start a new one. */
  function joinDrop(created) {
    if (!currentDrop || summarizeDrop(dropFiles(currentDrop)).finished) currentDrop = { entries: [] };
    for (const entry of created) {
      entry.drop = currentDrop;
      currentDrop.entries.push(entry);
    }
    renderTotal();
  }

  function renderTotal() {
    const summary = currentDrop ? summarizeDrop(dropFiles(currentDrop)) : null;
    if (!summary || summary.total === 0) {
      setHidden(ui.total, true);
      return;
    }
    const label = dropLabel(summary);
    if (ui.totalProgress.value !== summary.percent) ui.totalProgress.value = summary.percent;
    ui.totalProgress.setAttribute('aria-valuetext', `${summary.percent}% — ${label}`);
    setText(ui.totalText, label);
    setText(ui.totalPercent, `${summary.percent}%`);
    ui.total.dataset.state = summary.finished ? (summary.completed === summary.total ? 'completed' : 'finished') : 'active';
    setHidden(ui.total, false);
  }

  // -------------------------------------------------------------------------
  // Uploads
  // -------------------------------------------------------------------------

  const uploadQueue = [];
  let activeUploads = 0;

  function addFiles(fileList) {
    const files = [...fileList].filter((f) => f instanceof File);
    if (!files.length) return;
    const priority = ui.priority.value;
    // Prepend in reverse so the batch reads in selection order at the top.
    const created = files.map((file) => {
      const entry = newEntry({ file, filename: file.name || 'pasted image' });
      entry.priority = priority;
      return entry;
    });
    joinDrop(created);
    for (const entry of [...created].reverse()) {
      attachCard(entry);
      renderEntry(entry);
    }
    for (const entry of created) uploadQueue.push(entry);
    announce(files.length === 1 ? `Uploading ${created[0].filename}.` : `Uploading ${files.length} files.`);
    pumpUploads();
  }

  function retryUpload(entry) {
    if (!entry.file || entry.job) return;
    entry.upload = { status: 'waiting', loaded: 0, total: entry.file.size, error: null, xhr: null };
    entry.announcedState = null;
    renderEntry(entry);
    updateJobsChrome();
    uploadQueue.push(entry);
    pumpUploads();
    entry.el.cancelBtn.focus();
  }

  function pumpUploads() {
    while (activeUploads < MAX_PARALLEL_UPLOADS && uploadQueue.length) {
      const entry = uploadQueue.shift();
      activeUploads += 1;
      runUpload(entry).finally(() => {
        activeUploads -= 1;
        pumpUploads();
      });
    }
  }

  function sendUpload(entry, bearer) {
    return new Promise((resolve, reject) => {
      const up = entry.upload;
      const form = new FormData();
      form.append('file', entry.file, entry.file.name || 'image');
      if (entry.priority && entry.priority !== 'normal') form.append('priority', entry.priority);
      const xhr = new XMLHttpRequest();
      up.xhr = xhr;
      xhr.open('POST', '/api/images');
      xhr.setRequestHeader('Authorization', `Bearer ${bearer}`);
      xhr.setRequestHeader('Accept', 'application/json');
      xhr.upload.addEventListener('progress', (e) => {
        if (e.lengthComputable) {
          // e.total includes multipart overhead; scale to the file size for display.
          up.loaded = Math.min(up.total, Math.round((e.loaded / e.total) * up.total));
        }
        renderEntry(entry);
      });
      xhr.addEventListener('load', () => resolve({ status: xhr.status, text: xhr.responseText }));
      xhr.addEventListener('error', () => reject(new Error(errorMessage(0))));
      xhr.addEventListener('timeout', () => reject(new Error('The upload timed out.')));
      xhr.addEventListener('abort', () => {
        const err = new Error('Upload cancelled.');
        err.aborted = true;
        reject(err);
      });
      xhr.send(form);
    });
  }

  async function runUpload(entry) {
    const up = entry.upload;
    if (!up || up.status !== 'waiting') return;
    up.status = 'uploading';
    up.loaded = 0;
    renderEntry(entry);
    try {
      let bearer = await getToken();
      let res = await sendUpload(entry, bearer);
      if (res.status === 401) {
        bearer = await renewSession(bearer);
        up.loaded = 0;
        res = await sendUpload(entry, bearer);
      }
      up.xhr = null;
      if (res.status === 200 || res.status === 201 || res.status === 202) {
        let body = null;
        try { body = JSON.parse(res.text); } catch { /* handled below */ }
        if (!body || !body.job || body.job.id == null) throw new Error('The server sent an unexpected response.');
        up.status = 'done';
        up.loaded = up.total;
        attachJobToUpload(entry, body.job, body.image, body.duplicate === true);
      } else {
        throw new Error(errorMessage(res.status, res.text));
      }
    } catch (err) {
      up.xhr = null;
      if (entry.job) return; // an event already moved this card on; keep that state
      if (err && err.aborted) {
        up.status = 'cancelled';
        entry.announcedState = 'cancelled';
        announce(`${entry.filename}: upload cancelled.`);
      } else {
        up.status = 'error';
        up.error = (err && err.message) || 'Upload failed.';
        announceEntry(entry);
      }
      renderEntry(entry);
      updateJobsChrome();
    }
  }

  window.addEventListener('beforeunload', (e) => {
    if (activeUploads > 0 || uploadQueue.length > 0) {
      e.preventDefault();
      e.returnValue = '';
    }
  });

  // Picker, drag & drop (anywhere on the page), paste.
  ui.dropzone.addEventListener('click', () => ui.fileInput.click());
  ui.fileInput.addEventListener('change', () => {
    addFiles(ui.fileInput.files || []);
    ui.fileInput.value = '';
  });

  const hasFiles = (e) => Boolean(e.dataTransfer && [...e.dataTransfer.types].includes('Files'));
  let dragDepth = 0;
  document.addEventListener('dragenter', (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    dragDepth += 1;
    document.body.classList.add('dragging');
  });
  document.addEventListener('dragover', (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = 'copy';
    ui.dropzone.classList.toggle('over', ui.dropzone.contains(e.target));
  });
  document.addEventListener('dragleave', (e) => {
    if (!hasFiles(e)) return;
    dragDepth = Math.max(0, dragDepth - 1);
    if (dragDepth === 0) {
      document.body.classList.remove('dragging');
      ui.dropzone.classList.remove('over');
    }
  });
  document.addEventListener('drop', (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    dragDepth = 0;
    document.body.classList.remove('dragging');
    ui.dropzone.classList.remove('over');
    addFiles(e.dataTransfer.files);
  });
  document.addEventListener('paste', (e) => {
    const files = e.clipboardData ? [...e.clipboardData.files].filter((f) => f.type.startsWith('image/')) : [];
    if (files.length) {
      e.preventDefault();
      addFiles(files);
    }
  });

  // -------------------------------------------------------------------------
  // Gallery
  // -------------------------------------------------------------------------

  const galleryItems = new Map(); // image id -> <li>
  let galleryGeneration = 0;
  let galleryLoaded = false;
  let galleryLoading = false;
  let galleryNextBefore = null; // cursor of the next page, null when there is none

  function buildGalleryItem(image, thumbUrl) {
    const name = typeof image.filename === 'string' && image.filename ? image.filename : 'Untitled image';
    const img = h('img', { src: thumbUrl, alt: '', width: 200, height: 200, loading: 'lazy', decoding: 'async' });
    const caption = h('span', { className: 'gallery-name', text: name });
    const open = h('button', {
      type: 'button', className: 'gallery-link', 'aria-haspopup': 'dialog',
      onclick: (e) => openDetail(String(image.id), e.currentTarget),
    }, img, caption);
    const dims = Number.isFinite(image.width) && Number.isFinite(image.height) ? `${image.width} × ${image.height}` : null;
    if (dims) caption.title = `${name} — ${dims}`;
    return h('li', {
      className: 'gallery-item', 'data-testid': 'gallery-item', dataset: { imageId: String(image.id) },
    }, open);
  }

  /** Put a gallery <li> at its newest-first place among those shown. */
  function galleryPlace(li, image) {
    for (const other of ui.gallery.children) {
      if (compareNewestFirst(image, { id: other.dataset.imageId }) < 0) {
        ui.gallery.insertBefore(li, other);
        return;
      }
    }
    ui.gallery.append(li);
  }

  /**
   * Show a ready image in the gallery at its newest-first place (refreshing its
   * thumbnail if it is already there). An image older than every loaded one while
   * more pages exist is left for its page, so paging neither skips nor repeats it.
   */
  function galleryUpsert(image) {
    if (!image || typeof image !== 'object' || image.id == null) return;
    const id = String(image.id);
    if (deletedImages.has(id)) return;
    imagesById.set(id, { ...(imagesById.get(id) || {}), ...image });
    const thumbUrl = safeUrl(image.thumbnail_url);
    const existing = galleryItems.get(id);
    if (existing) {
      const img = existing.querySelector('img');
      if (thumbUrl && img && img.getAttribute('src') !== thumbUrl && image.status === 'ready') img.src = thumbUrl;
      return;
    }
    if (image.status !== 'ready' || !thumbUrl) return;
    const last = ui.gallery.lastElementChild;
    if (galleryNextBefore != null && last && compareNewestFirst(image, { id: last.dataset.imageId }) > 0) return;
    const li = buildGalleryItem(image, thumbUrl);
    galleryItems.set(id, li);
    galleryPlace(li, image);
    updateGalleryChrome();
  }

  /** Take an image out of the gallery; returns the element that should get focus next. */
  function galleryRemove(id) {
    const li = galleryItems.get(id);
    if (!li) return null;
    const neighbour = li.nextElementSibling || li.previousElementSibling;
    galleryItems.delete(id);
    li.remove();
    updateGalleryChrome();
    return neighbour ? neighbour.querySelector('button') : null;
  }

  function updateGalleryChrome() {
    const n = galleryItems.size;
    const more = galleryNextBefore != null;
    ui.galleryCount.textContent = n ? `${n}${more ? '+' : ''} ${n === 1 && !more ? 'image' : 'images'}` : '';
    if (n > 0) setHidden(ui.galleryStatus, true);
    else if (galleryLoaded) setText(ui.galleryStatus, 'No images yet. Finished uploads appear here.');
    setHidden(ui.galleryMore, !galleryLoaded || !more);
    ui.galleryMore.disabled = galleryLoading;
    const label = galleryLoading ? 'Loading…' : 'Load more';
    if (ui.galleryMore.textContent !== label) ui.galleryMore.textContent = label;
  }

  function resetGallery() {
    galleryGeneration += 1;
    galleryItems.clear();
    ui.gallery.replaceChildren();
    galleryLoaded = false;
    galleryLoading = false;
    galleryNextBefore = null;
    setText(ui.galleryMoreError, '');
    setText(ui.galleryStatus, 'Loading…');
    updateGalleryChrome();
  }

  /**
   * Load the first page (or, with `more`, the next one). Pages that add nothing to
   * show (images still processing or failed) are skipped over, a few at a time.
   */
  async function loadGallery(more = false) {
    if (more && (galleryLoading || galleryNextBefore == null)) return;
    const generation = ++galleryGeneration;
    galleryLoading = true;
    setText(ui.galleryMoreError, '');
    updateGalleryChrome();
    let cursor = more ? galleryNextBefore : null;
    try {
      for (let pages = 0; pages < 5; pages += 1) {
        const query = `limit=${GALLERY_PAGE_SIZE}${cursor != null ? `&before=${encodeURIComponent(cursor)}` : ''}`;
        const data = await api(`/api/images?${query}`);
        if (generation !== galleryGeneration) return;
        const items = data && Array.isArray(data.items) ? data.items : [];
        const shownBefore = galleryItems.size;
        galleryNextBefore = null; // let every item of this page in, in order
        for (const image of items) galleryUpsert(image);
        cursor = data && data.next_before != null ? String(data.next_before) : null;
        galleryNextBefore = cursor;
        if (galleryItems.size > shownBefore || cursor == null) break;
      }
      galleryLoaded = true;
    } catch (err) {
      if (generation !== galleryGeneration) return;
      if (more) setText(ui.galleryMoreError, `Could not load more images: ${err.message}`);
      else if (galleryItems.size === 0) setText(ui.galleryStatus, `Could not load your images: ${err.message}`);
    } finally {
      if (generation === galleryGeneration) {
        galleryLoading = false;
        updateGalleryChrome();
      }
    }
  }

  ui.galleryMore.addEventListener('click', () => {
    const count = ui.gallery.children.length;
    loadGallery(true).then(() => {
      // Keep keyboard users in place: focus the first newly loaded image when the
      // button had focus (it may just have been hidden: no more pages).
      const first = ui.gallery.children[count];
      const focusWasHere = document.activeElement === ui.galleryMore || document.activeElement === document.body;
      if (first && focusWasHere) first.querySelector('button').focus();
    });
  });

  // -------------------------------------------------------------------------
  // Image detail (a modal <dialog>)
  // -------------------------------------------------------------------------

  const detail = { imageId: null, image: null, opener: null, generation: 0, deleting: false };

  function setDownload(link, url, name) {
    const safe = safeUrl(url);
    if (safe) {
      link.href = safe;
      link.setAttribute('download', name);
    } else {
      link.removeAttribute('href');
    }
    setHidden(link.parentElement, !safe);
  }

  function renderDetail(image) {
    const d = ui.detail;
    const name = typeof image.filename === 'string' && image.filename ? image.filename : 'Untitled image';
    setText(d.title, name);
    const preview = safeUrl(image.preview_url);
    if (preview) {
      if (d.preview.getAttribute('src') !== preview) d.preview.src = preview;
      d.preview.alt = `Preview of ${name}`;
      if (Number.isFinite(image.width) && Number.isFinite(image.height)) {
        d.preview.width = image.width;
        d.preview.height = image.height;
      }
    } else {
      d.preview.removeAttribute('src');
    }
    setHidden(d.preview, !preview);
    setText(d.noPreview, preview ? '' : (image.status === 'failed' ? 'No preview: processing failed.' : 'No preview yet.'));
    d.meta.replaceChildren(...describeImageDetails(image).map(([term, value]) =>
      h('div', { className: 'detail-row' }, h('dt', { text: term }), h('dd', { text: value }))));
    setDownload(d.downloads.original, image.original_url, downloadName(image.filename, 'original'));
    setDownload(d.downloads.preview, image.preview_url, downloadName(image.filename, 'preview'));
    setDownload(d.downloads.thumbnail, image.thumbnail_url, downloadName(image.filename, 'thumbnail'));
    setText(d.confirmText, `Delete “${name}”? The image and its files are removed for good.`);
  }

  function showConfirm(show) {
    const d = ui.detail;
    setHidden(d.confirm, !show);
    setHidden(d.deleteBtn.parentElement, show);
    if (show) d.confirmNo.focus();
  }

  /** Open the detail view of an image; `opener` gets focus back when it closes. */
  async function openDetail(imageId, opener) {
    if (imageId == null) return;
    const d = ui.detail;
    const generation = ++detail.generation;
    detail.imageId = String(imageId);
    detail.opener = opener || document.activeElement;
    detail.deleting = false;
    const known = imagesById.get(detail.imageId) || { id: detail.imageId };
    detail.image = known;
    renderDetail(known);
    showConfirm(false);
    d.deleteBtn.disabled = false;
    d.confirmYes.disabled = false;
    d.confirmYes.textContent = 'Delete for good';
    setText(d.error, '');
    setText(d.status, 'Loading the latest details…');
    if (!d.dialog.open) d.dialog.showModal();
    d.close.focus();
    try {
      const fresh = await api(`/api/images/${encodeURIComponent(detail.imageId)}`);
      if (generation !== detail.generation || !d.dialog.open) return;
      if (fresh && typeof fresh === 'object' && fresh.id != null) {
        detail.image = fresh;
        imagesById.set(detail.imageId, fresh);
        renderDetail(fresh);
        galleryUpsert(fresh);
      }
      setText(d.status, '');
    } catch (err) {
      if (generation !== detail.generation || !d.dialog.open) return;
      if (err.status === 404) {
        setText(d.status, '');
        setText(d.error, 'This image no longer exists.');
        d.deleteBtn.disabled = true;
        forgetImage(detail.imageId);
      } else {
        setText(d.status, '');
        setText(d.error, `Could not load the latest details: ${err.message}`);
      }
    }
  }

  function closeDetail() {
    if (ui.detail.dialog.open) ui.detail.dialog.close();
  }

  async function deleteDetailImage() {
    const d = ui.detail;
    const id = detail.imageId;
    if (id == null || detail.deleting) return;
    const name = displayImageName(detail.image);
    detail.deleting = true;
    d.confirmYes.disabled = true;
    d.confirmNo.disabled = true;
    d.confirmYes.textContent = 'Deleting…';
    setText(d.error, '');
    try {
      await api(`/api/images/${encodeURIComponent(id)}`, { method: 'DELETE' });
    } catch (err) {
      if (err.status !== 404) { // 404: it is already gone, which is what we wanted
        detail.deleting = false;
        d.confirmYes.disabled = false;
        d.confirmNo.disabled = false;
        d.confirmYes.textContent = 'Delete for good';
        setText(d.error, `Could not delete: ${err.message}`);
        d.confirmYes.focus();
        return;
      }
    }
    const next = galleryItems.has(id) ? galleryRemove(id) : null;
    forgetImage(id);
    if (detail.opener && !detail.opener.isConnected) detail.opener = next;
    d.confirmNo.disabled = false;
    closeDetail();
    announce(`Deleted ${name}.`);
  }

  function displayImageName(image) {
    return image && typeof image.filename === 'string' && image.filename ? image.filename : 'the image';
  }

  ui.detail.close.addEventListener('click', closeDetail);
  ui.detail.deleteBtn.addEventListener('click', () => showConfirm(true));
  ui.detail.confirmNo.addEventListener('click', () => {
    showConfirm(false);
    ui.detail.deleteBtn.focus();
  });
  ui.detail.confirmYes.addEventListener('click', deleteDetailImage);
  ui.detail.dialog.addEventListener('cancel', (e) => {
    // Escape first backs out of the delete question, then closes.
    if (!ui.detail.confirm.hidden && !detail.deleting) {
      e.preventDefault();
      showConfirm(false);
      ui.detail.deleteBtn.focus();
    } else if (detail.deleting) {
      e.preventDefault();
    }
  });
  ui.detail.dialog.addEventListener('click', (e) => {
    // A click on the backdrop (outside the dialog's box) closes it.
    if (e.target !== ui.detail.dialog || detail.deleting) return;
    const r = ui.detail.dialog.getBoundingClientRect();
    const inside = e.clientX >= r.left && e.clientX <= r.right && e.clientY >= r.top && e.clientY <= r.bottom;
    if (!inside) closeDetail();
  });
  ui.detail.dialog.addEventListener('close', () => {
    detail.generation += 1;
    showConfirm(false);
    const back = detail.opener && detail.opener.isConnected ? detail.opener : ui.galleryHeading;
    detail.opener = null;
    detail.imageId = null;
    detail.image = null;
    ui.detail.preview.removeAttribute('src');
    if (back && typeof back.focus === 'function') back.focus();
  });

  // -------------------------------------------------------------------------
  // Live connection (Socket.IO)
  // -------------------------------------------------------------------------

  let socket = null;
  let socketToken = null;
  let connState = null;
  let failedAttempts = 0;
  let authRenewals = 0;
  let connectTimer = 0;
  let retryDelay = 2000;

  function setConn(state, label, detail = '') {
    ui.conn.title = detail;
    if (connState === state && ui.connLabel.textContent === label) return;
    connState = state;
    ui.conn.dataset.state = state;
    ui.connLabel.textContent = label;
  }

  function showDisconnected() {
    if (!navigator.onLine) setConn('offline', 'Offline', 'Your device is offline.');
    else if (failedAttempts >= 3) setConn('offline', 'Offline', 'Cannot reach the server; still trying…');
    else setConn('reconnecting', 'Reconnecting…', 'Trying to reach the server…');
  }

  /** (Re)connect the socket after `delay` ms. `force` drops a live connection first (token changed). */
  function scheduleSocketConnect(delay, force = false) {
    if (!socket) return;
    clearTimeout(connectTimer);
    connectTimer = setTimeout(() => {
      if (force && (socket.connected || socket.active)) socket.disconnect();
      if (!socket.connected && !socket.active) socket.connect();
    }, delay);
  }

  function handleSnapshot(payload) {
    const jobs = payload && Array.isArray(payload.jobs) ? payload.jobs.filter((j) => j && j.id != null) : [];
    // Oldest first so that new cards (which are prepended) end up newest on top.
    const time = (j) => { const d = parseDate(j.created_at); return d ? d.getTime() : 0; };
    jobs.sort((a, b) => time(a) - time(b));
    for (const job of jobs) ingestJob(job, job.seq, 'snapshot');
    // A card still unfinished that the snapshot left out ended while we were away for
    // longer than the snapshot's window: ask for its true state once (no polling).
    const inSnapshot = new Set(jobs.map((j) => String(j.id)));
    for (const [jobId, entry] of entries) {
      if (entry.detached || !entry.job || inSnapshot.has(jobId)) continue;
      if (TERMINAL_STATES.includes(entry.job.state)) continue;
      api(`/api/jobs/${encodeURIComponent(jobId)}`)
        .then((job) => { if (job && job.id != null) ingestJob(job, job.seq, 'snapshot'); })
        .catch(() => {});
    }
    if (snapshotsSeen++ > 0) loadGallery(); // a reconnect: images may have changed meanwhile
  }

  function handleJobEvent(name, payload) {
    if (!payload || typeof payload !== 'object' || !payload.job || typeof payload.job !== 'object' || payload.job.id == null) return;
    const job = payload.job.state ? payload.job : { ...payload.job, state: stateFromEvent(name) };
    ingestJob(job, eventSeq(payload), 'event');
  }

  function startSocket() {
    const ioFactory = globalThis.io;
    if (typeof ioFactory !== 'function') {
      setConn('offline', 'Offline', 'The live-update library failed to load.');
      return;
    }
    socket = ioFactory({
      // A function so that every (re)connect attempt sends the current token.
      auth: (cb) => {
        getToken().then(
          (t) => { socketToken = t; cb({ token: t }); },
          () => { socketToken = null; cb({}); },
        );
      },
      transports: ['websocket', 'polling'],
    });

    socket.on('connect', () => {
      failedAttempts = 0;
      authRenewals = 0;
      retryDelay = 2000;
      setConn('connected', 'Connected', 'Live updates are on.');
    });

    socket.on('disconnect', (reason) => {
      if (reason === 'io client disconnect') return; // we did it on purpose (and reconnect ourselves)
      if (reason === 'io server disconnect') {
        // The server ended the session; Socket.IO will not retry on its own.
        setConn('reconnecting', 'Reconnecting…');
        scheduleSocketConnect(1000);
        return;
      }
      showDisconnected();
    });

    socket.on('connect_error', (err) => {
      const message = (err && err.message) || '';
      if (isUnauthorizedMessage(message)) {
        if (authRenewals >= 2) {
          setConn('offline', 'Offline', `Could not authenticate: ${message}`);
          scheduleSocketConnect(30_000);
          return;
        }
        authRenewals += 1;
        setConn('reconnecting', 'Reconnecting…', 'Refreshing your session…');
        renewSession(socketToken)
          .then(() => scheduleSocketConnect(0))
          .catch(() => {
            setConn('offline', 'Offline', 'Could not create a session.');
            scheduleSocketConnect(retryDelay);
            retryDelay = Math.min(retryDelay * 2, 30_000);
          });
        return;
      }
      failedAttempts += 1;
      if (socket.active) {
        showDisconnected(); // the manager keeps retrying by itself
      } else {
        // Refused by the server for another reason: retry with backoff.
        setConn('offline', 'Offline', message || 'The server refused the connection.');
        scheduleSocketConnect(retryDelay);
        retryDelay = Math.min(retryDelay * 2, 30_000);
      }
    });

    socket.io.on('reconnect_attempt', (attempt) => {
      if (!navigator.onLine) setConn('offline', 'Offline', 'Your device is offline.');
      else if (failedAttempts >= 3) setConn('offline', 'Offline', `Trying to reconnect (attempt ${attempt})…`);
      else setConn('reconnecting', 'Reconnecting…', `Attempt ${attempt}`);
    });

    socket.on('jobs:snapshot', handleSnapshot);
    for (const name of JOB_EVENTS) socket.on(name, (payload) => handleJobEvent(name, payload));
  }

  window.addEventListener('offline', () => setConn('offline', 'Offline', 'Your device is offline.'));
  window.addEventListener('online', () => {
    if (socket && !socket.connected) {
      setConn('reconnecting', 'Reconnecting…');
      if (!socket.active) scheduleSocketConnect(0);
    }
  });

  // -------------------------------------------------------------------------
  // Start
  // -------------------------------------------------------------------------

  async function boot(delay = 2000) {
    try {
      await getToken();
    } catch (err) {
      setConn('offline', 'Offline', err.message);
      setText(ui.galleryStatus, `Could not start a session: ${err.message} Retrying…`);
      setTimeout(() => boot(Math.min(delay * 2, 30_000)), delay);
      return;
    }
    startSocket();
    loadGallery();
  }

  // Delayed jobs show a countdown ("in 5 min"): refresh it now and then.
  setInterval(() => {
    const now = Date.now();
    for (const entry of entries.values()) {
      if (!entry.detached && entry.job && isDelayed(entry.job, now - 20_000)) renderEntry(entry);
    }
  }, 15_000);

  updateJobsChrome();
  boot();
}

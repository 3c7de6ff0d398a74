// Darkroom admin dashboard: queues, recent jobs, job timelines and the dead-letter
// queue. Plain ES module, no framework, no build. After the initial REST load it is
// kept current only by Socket.IO pushes (`queues:stats`, `job:*`); lists are fetched
// again only when a filter changes or the socket reconnects (events may have been missed).
//
// Security note: everything from the server (types, payloads, error messages,
// tracebacks) is written with textContent, never as HTML.
import { h } from './dom.js';

// ---------------------------------------------------------------------------
// Small pure helpers (exported so they can be unit-tested under node).
// ---------------------------------------------------------------------------

export const TOKEN_KEY = 'darkroom.adminToken';
export const NOT_ADMIN = 'That is not an admin token.';
export const JOB_EVENTS = Object.freeze([
  'job:queued', 'job:active', 'job:progress', 'job:retrying',
  'job:completed', 'job:failed', 'job:cancelled',
]);
export const COUNT_STATES = Object.freeze(['queued', 'delayed', 'active', 'retrying', 'completed', 'failed', 'cancelled']);

/** The seq carried by a live event (`event.seq`, falling back to `event.job.seq`), or null. */
export function eventSeq(event) {
  if (event && Number.isFinite(event.seq)) return event.seq;
  if (event && event.job && Number.isFinite(event.job.seq)) return event.job.seq;
  return null;
}

/** Is something carrying `seq` newer than the job we hold (`known`)? Unordered things are. */
export function isNewer(known, seq) {
  if (!known || !Number.isFinite(known.seq) || !Number.isFinite(seq)) return true;
  return seq > known.seq;
}

/** "job:completed" -> "completed" */
export function stateFromEvent(name) {
  return typeof name === 'string' && name.startsWith('job:') && name !== 'job:progress' ? name.slice(4) : null;
}

export function clampPercent(value) {
  const n = Number(value);
  return Number.isFinite(n) ? Math.min(100, Math.max(0, Math.round(n))) : 0;
}

export function shortId(id, length = 8) {
  const s = id == null ? '' : String(id);
  return s.length > length ? s.slice(0, length) : s;
}

/** A count cell's text: just the number ("0" for anything missing). */
export function formatCount(value) {
  const n = Number(value);
  return String(Number.isFinite(n) && n > 0 ? Math.round(n) : 0);
}

/** Seconds as "—", "42 s", "5 min", "2 h 5 min", "3 d 4 h". */
export function formatAge(seconds) {
  if (seconds == null || seconds === '') return '—';
  const s = Number(seconds);
  if (!Number.isFinite(s) || s < 0) return '—';
  if (s < 60) return `${Math.round(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

export function formatRate(value) {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) return '—';
  return n < 10 ? String(Number(n.toFixed(1))) : String(Math.round(n));
}

export function formatDateTime(value) {
  if (value == null || value === '') return '—';
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? String(value) : d.toLocaleString(undefined, { dateStyle: 'short', timeStyle: 'medium' });
}

/** "?a=1&b=x" from an object, leaving out null/empty values; "" when nothing is left. */
export function buildQuery(params) {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    if (value != null && value !== '') q.set(key, String(value));
  }
  const s = q.toString();
  return s ? `?${s}` : '';
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

/** "Type: message" for an {type, message} error, or "". */
export function errorText(error) {
  if (!error || typeof error !== 'object') return '';
  const type = typeof error.type === 'string' ? error.type : '';
  const message = typeof error.message === 'string' ? error.message : '';
  return type && message ? `${type}: ${message}` : type || message;
}

export function prettyJson(value) {
  if (value === undefined) return '—';
  try { return JSON.stringify(value, null, 2); } catch { return String(value); }
}

/** Rows [term, value] describing a job in the detail panel; unknown values are left out. */
export function describeJob(job) {
  if (!job || typeof job !== 'object') return [];
  const rows = [
    ['ID', job.id], ['Type', job.type], ['State', job.state], ['Stage', job.stage],
    ['Progress', job.progress == null ? null : `${clampPercent(job.progress)}%`],
    ['Attempts', job.attempt == null ? null : `${job.attempt} of ${job.max_attempts ?? '?'}`],
    ['Priority', job.priority], ['Queue position', job.queue_position],
    ['Created', job.created_at && formatDateTime(job.created_at)],
    ['Run at', job.run_at && formatDateTime(job.run_at)],
    ['Started', job.started_at && formatDateTime(job.started_at)],
    ['Finished', job.finished_at && formatDateTime(job.finished_at)],
    ['Image', job.image_id], ['Batch', job.batch_id],
  ];
  return rows.filter(([, v]) => v != null && v !== '').map(([k, v]) => [k, String(v)]);
}

/** Best human message for a failed HTTP response body (`{"error": {"code", "message"}}`). */
export function errorMessage(status, bodyText) {
  let body = bodyText;
  if (typeof bodyText === 'string') {
    try { body = JSON.parse(bodyText); } catch { body = null; }
  }
  const err = body && body.error;
  if (err && typeof err === 'object' && typeof err.message === 'string' && err.message) return err.message;
  if (typeof err === 'string' && err) return err;
  if (status === 0) return 'Network error: could not reach the server.';
  if (status === 401 || status === 403) return NOT_ADMIN;
  if (status === 404) return 'Not found.';
  if (status === 503) return 'The service is temporarily unavailable.';
  return `Request failed (HTTP ${status}).`;
}

export function isUnauthorizedMessage(message) {
  return typeof message === 'string' && message.trim().toLowerCase().startsWith('unauthorized');
}

// ---------------------------------------------------------------------------
// Browser app. Nothing below runs outside a browser, and nothing is put on window.
// ---------------------------------------------------------------------------

if (typeof window !== 'undefined' && typeof document !== 'undefined') startAdmin();

function startAdmin() {
  const MAX_ROWS = 200;
  const MAX_KNOWN = 20000;
  const $ = (id) => document.getElementById(id);
  const ui = {
    conn: $('conn'), connLabel: document.querySelector('#conn .conn-label'), workers: $('workers'),
    signOut: $('sign-out'), login: $('login'), tokenForm: $('token-form'), tokenInput: $('token-input'),
    tokenError: $('token-error'), dashboard: $('dashboard'), banner: $('banner'),
    queues: $('queues'), queuesAt: $('queues-at'), queuesStatus: $('queues-status'),
    jobsFilter: $('jobs-filter'), jobsState: $('jobs-state'), jobsType: $('jobs-type'), jobs: $('jobs'),
    jobsStatus: $('jobs-status'), jobsEmpty: $('jobs-empty'), jobsCount: $('jobs-count'), jobsMore: $('jobs-more'),
    dlqFilter: $('dlq-filter'), dlqType: $('dlq-type'), dlqError: $('dlq-error'), dlq: $('dlq'),
    dlqStatus: $('dlq-status'), dlqEmpty: $('dlq-empty'), dlqMore: $('dlq-more'), dlqRetryAll: $('dlq-retry-all'), dlqClear: $('dlq-clear'),
    detail: $('detail'), detailTitle: $('detail-title'), detailClose: $('detail-close'),
    detailStatus: $('detail-status'), detailSummary: $('detail-summary'), detailError: $('detail-error'),
    detailErrorText: $('detail-error-text'), detailTraceback: $('detail-traceback'),
    detailPayload: $('detail-payload'), detailTimeline: $('detail-timeline'),
    confirm: $('confirm'), confirmText: $('confirm-text'), confirmYes: $('confirm-yes'),
  };


  function setText(el, text) {
    const value = text == null ? '' : String(text);
    if (el.textContent !== value) el.textContent = value;
  }

  /** A status line: text (empty hides it via CSS) and a kind (info | ok | error). */
  function say(el, text, kind = 'info') {
    setText(el, text);
    el.dataset.kind = kind;
  }

  /** Run `fn` with `btn` disabled and showing `label`; refocus it afterwards if it had focus. */
  async function busy(btn, label, fn) {
    const hadFocus = document.activeElement === btn;
    const old = btn.textContent;
    btn.disabled = true;
    btn.textContent = label;
    try {
      return await fn();
    } finally {
      btn.disabled = false;
      if (btn.textContent === label) btn.textContent = old;
      if (hadFocus && btn.isConnected && (!document.activeElement || document.activeElement === document.body)) btn.focus();
    }
  }

  // ----- token & REST -----
  let memoryToken = null;
  const tokenStore = {
    get() { try { return localStorage.getItem(TOKEN_KEY) || memoryToken; } catch { return memoryToken; } },
    set(v) { memoryToken = v; try { localStorage.setItem(TOKEN_KEY, v); } catch { /* memory only */ } },
    clear() { memoryToken = null; try { localStorage.removeItem(TOKEN_KEY); } catch { /* ignore */ } },
  };
  let token = null;
  let session = 0; // bumped on every sign-in/out: answers for an older session are ignored

  // `quiet`: the session ended (or the token is bad): there is nothing to show in the panel.
  const ApiError = (status, message, quiet = false) => Object.assign(new Error(message), { status, quiet });

  async function api(path, method = 'GET') {
    const gen = session;
    let res;
    let text = '';
    try {
      res = await fetch(path, { method, headers: { Authorization: `Bearer ${token}`, Accept: 'application/json' } });
      text = await res.text();
    } catch {
      throw ApiError(0, errorMessage(0), gen !== session);
    }
    if (gen !== session) throw ApiError(res.status, 'stale', true);
    if (res.status === 401 || res.status === 403) {
      signOut(NOT_ADMIN);
      throw ApiError(res.status, NOT_ADMIN, true);
    }
    if (!res.ok) throw ApiError(res.status, errorMessage(res.status, text));
    if (!text) return null;
    try { return JSON.parse(text); } catch { return null; }
  }

  function signIn(value) {
    token = value;
    tokenStore.set(value);
    session += 1;
    ui.login.hidden = true;
    ui.dashboard.hidden = false;
    ui.signOut.hidden = false;
    say(ui.tokenError, '');
    ui.tokenError.hidden = true;
    resetViews();
    // One request checks the token first (a bad one then fails once, not four times).
    const gen = session;
    loadQueues().then(() => {
      if (gen !== session) return;
      connectSocket();
      loadJobs();
      loadDlq();
    });
  }

  function signOut(message = '') {
    session += 1;
    closeSocket();
    token = null;
    tokenStore.clear();
    resetViews();
    if (ui.detail.open) ui.detail.close();
    if (ui.confirm.open) ui.confirm.close();
    ui.dashboard.hidden = true;
    ui.signOut.hidden = true;
    ui.login.hidden = false;
    setText(ui.workers, '—');
    setConn('offline', 'Offline', 'Not signed in.');
    say(ui.tokenError, message, 'error');
    ui.tokenError.hidden = !message;
    ui.tokenInput.value = '';
    ui.tokenInput.focus();
  }

  ui.tokenForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const value = ui.tokenInput.value.trim();
    if (value) signIn(value);
  });
  ui.signOut.addEventListener('click', () => signOut(''));

  // ----- what we know about jobs: id -> newest Job seen (from REST or events) -----
  const known = new Map();

  /** Keep `job` if it is at least as new as what we hold; returns the newest copy. */
  function remember(job) {
    const have = known.get(job.id);
    if (have && Number.isFinite(have.seq) && Number.isFinite(job.seq) && job.seq < have.seq) return have;
    known.set(job.id, job);
    if (known.size > MAX_KNOWN) {
      let drop = known.size - MAX_KNOWN + 1000;
      for (const id of known.keys()) { if (drop-- <= 0) break; known.delete(id); }
    }
    return job;
  }

  function resetViews() {
    known.clear();
    queueRows.clear();
    ui.queues.replaceChildren();
    jobsView.gen += 1;
    jobsView.rows.clear();
    ui.jobs.replaceChildren();
    dlqView.gen += 1;
    dlqView.items.clear();
    dlqView.loaded = false;
    ui.dlq.replaceChildren();
    ui.jobsEmpty.hidden = true;
    ui.dlqEmpty.hidden = true;
    for (const el of [ui.banner, ui.queuesStatus, ui.jobsStatus, ui.dlqStatus, ui.queuesAt, ui.jobsCount]) say(el, '');
    ui.jobsMore.hidden = true;
    ui.dlqMore.hidden = true;
  }

  // -------------------------------------------------------------------------
  // Queues
  // -------------------------------------------------------------------------

  const queueRows = new Map(); // name -> { tr, cells, oldest, rate, badge, button, paused, pending }

  function buildQueueRow(name) {
    const cells = {};
    const tds = COUNT_STATES.map((state) => {
      cells[state] = h('td', { className: 'num', dataset: { state, label: state } }, '0');
      return cells[state];
    });
    const row = {
      cells, paused: false, pending: false,
      oldest: h('td', { className: 'num', dataset: { label: 'oldest waiting' } }),
      rate: h('td', { className: 'num', dataset: { label: 'per min' } }),
      badge: h('span', { className: 'badge' }),
      button: h('button', { type: 'button', className: 'btn btn-small' }),
    };
    row.button.addEventListener('click', () => toggleQueue(name, row));
    row.tr = h('tr', { 'data-testid': 'queue-row', dataset: { queue: name } },
      h('th', { scope: 'row', text: name }), tds, row.oldest, row.rate,
      h('td', { dataset: { label: 'status' } }, row.badge), h('td', { className: 'actions' }, row.button));
    return row;
  }

  function renderQueueButton(name, row) {
    const b = row.button;
    b.dataset.testid = row.paused ? 'resume-button' : 'pause-button';
    b.disabled = row.pending;
    setText(b, row.pending ? (row.paused ? 'Resuming…' : 'Pausing…') : (row.paused ? 'Resume' : 'Pause'));
    b.setAttribute('aria-label', `${b.textContent} queue ${name}`);
    row.tr.dataset.paused = String(row.paused);
    setText(row.badge, row.paused ? 'Paused' : 'Running');
    row.badge.dataset.paused = String(row.paused);
  }

  function renderQueues(data) {
    const list = data && Array.isArray(data.queues) ? data.queues.filter((q) => q && q.name != null) : [];
    setText(ui.workers, Number.isFinite(data && data.workers) ? String(data.workers) : '—');
    const seen = new Set();
    list.forEach((q, index) => {
      const name = String(q.name);
      seen.add(name);
      let row = queueRows.get(name);
      if (!row) { row = buildQueueRow(name); queueRows.set(name, row); }
      const counts = q.counts && typeof q.counts === 'object' ? q.counts : {};
      for (const state of COUNT_STATES) setText(row.cells[state], formatCount(counts[state]));
      setText(row.oldest, formatAge(q.oldest_waiting_s));
      setText(row.rate, formatRate(q.throughput_per_min));
      if (!row.pending) row.paused = q.paused === true;
      renderQueueButton(name, row);
      // Move only rows that are out of place (moving a row would drop the focus of its button).
      if (ui.queues.children[index] !== row.tr) ui.queues.insertBefore(row.tr, ui.queues.children[index] || null);
    });
    for (const [name, row] of queueRows) if (!seen.has(name)) { row.tr.remove(); queueRows.delete(name); }
    if (!list.length) say(ui.queuesStatus, 'No queues.');
    else if (ui.queuesStatus.dataset.kind !== 'error' && ui.queuesStatus.dataset.kind !== 'ok') say(ui.queuesStatus, '');
    const at = data && data.at ? new Date(data.at) : new Date();
    setText(ui.queuesAt, `Updated ${Number.isNaN(at.getTime()) ? '' : at.toLocaleTimeString()}`);
  }

  async function loadQueues() {
    const gen = session;
    if (!queueRows.size) say(ui.queuesStatus, 'Loading…');
    try {
      const data = await api('/api/queues');
      if (gen === session) renderQueues(data);
    } catch (err) {
      if (!err.quiet) say(ui.queuesStatus, `Could not load the queues: ${err.message}`, 'error');
    }
  }

  async function toggleQueue(name, row) {
    if (row.pending) return;
    const hadFocus = document.activeElement === row.button;
    const action = row.paused ? 'resume' : 'pause';
    row.pending = true;
    renderQueueButton(name, row);
    try {
      const data = await api(`/api/queues/${encodeURIComponent(name)}/${action}`, 'POST');
      row.paused = data && typeof data.paused === 'boolean' ? data.paused : action === 'pause';
      say(ui.queuesStatus, `Queue ${name} ${row.paused ? 'paused' : 'resumed'}.`, 'ok');
    } catch (err) {
      if (!err.quiet) say(ui.queuesStatus, `Could not ${action} queue ${name}: ${err.message}`, 'error');
    } finally {
      row.pending = false;
      renderQueueButton(name, row);
      if (hadFocus && row.tr.isConnected && document.activeElement === document.body) row.button.focus();
    }
  }

  // -------------------------------------------------------------------------
  // Recent jobs
  // -------------------------------------------------------------------------

  const jobsView = { filter: { state: '', type: '' }, rows: new Map(), gen: 0, loading: false, touched: new Set(), nextBefore: null };

  function buildJobRow(job) {
    const r = {
      id: h('span', { className: 'mono', title: String(job.id), text: shortId(job.id) }),
      type: h('span', { className: 'row-type' }),
      badge: h('span', { className: 'badge' }),
      stage: h('span', { className: 'row-stage' }),
      bar: h('progress', { className: 'bar', max: 100, value: 0 }),
      attempt: h('span', { className: 'row-attempt' }),
      error: h('span', { className: 'row-error' }),
    };
    const open = h('button', { type: 'button', className: 'row-open', 'aria-haspopup': 'dialog', onclick: () => openDetail(job.id) },
      r.id, r.type, r.badge, r.stage, r.bar, r.attempt, r.error);
    r.li = h('li', { className: 'row job-row', 'data-testid': 'job-row', dataset: { jobId: String(job.id) } }, open);
    return r;
  }

  function renderJobRow(r, job) {
    r.job = job;
    r.li.dataset.state = job.state || '';
    setText(r.type, job.type || '');
    setText(r.badge, job.state || '');
    setText(r.stage, job.stage || '');
    const pct = clampPercent(job.progress);
    if (r.bar.value !== pct) r.bar.value = pct;
    r.bar.setAttribute('aria-label', `Progress ${pct}%`);
    setText(r.attempt, job.attempt == null ? '' : `${job.attempt}/${job.max_attempts ?? '?'}`);
    r.attempt.title = 'Attempt / max attempts';
    setText(r.error, job.error && typeof job.error === 'object' ? job.error.message || job.error.type || '' : '');
  }

  function addJobRow(job, atTop) {
    const r = buildJobRow(job);
    renderJobRow(r, job);
    jobsView.rows.set(job.id, r);
    if (atTop) ui.jobs.prepend(r.li); else ui.jobs.append(r.li);
    while (jobsView.rows.size > MAX_ROWS) {
      const last = ui.jobs.lastElementChild;
      if (!last) break;
      jobsView.rows.delete(last.dataset.jobId);
      last.remove();
      jobsView.nextBefore = ui.jobs.lastElementChild ? ui.jobs.lastElementChild.dataset.jobId : null;
    }
  }

  /** Insert, update in place or remove the row of `job` according to the filter. */
  function applyJobToList(job) {
    const r = jobsView.rows.get(job.id);
    if (jobMatches(job, jobsView.filter)) {
      if (r) renderJobRow(r, job); else addJobRow(job, true);
    } else if (r) {
      r.li.remove();
      jobsView.rows.delete(job.id);
    }
  }

  function updateJobsChrome() {
    const n = jobsView.rows.size;
    setText(ui.jobsCount, n ? `${n} shown` : '');
    ui.jobsMore.hidden = !jobsView.nextBefore || jobsView.loading;
    ui.jobsEmpty.hidden = n > 0 || jobsView.loading || ui.jobsStatus.dataset.kind === 'error';
  }

  async function loadJobs(more = false) {
    const gen = ++jobsView.gen;
    if (!more) {
      jobsView.filter = { state: ui.jobsState.value, type: ui.jobsType.value.trim() };
      jobsView.touched.clear();
    }
    const f = jobsView.filter;
    jobsView.loading = true;
    say(ui.jobsStatus, 'Loading…');
    ui.jobsMore.hidden = true;
    try {
      const data = await api(`/api/jobs${buildQuery({ state: f.state, type: f.type, limit: 50, before: more ? jobsView.nextBefore : null })}`);
      if (gen !== jobsView.gen) return;
      if (!more) { jobsView.rows.clear(); ui.jobs.replaceChildren(); }
      for (const item of (data && Array.isArray(data.items) ? data.items : [])) {
        if (!item || item.id == null) continue;
        const job = remember(item);
        if (jobMatches(job, f) && !jobsView.rows.has(job.id)) addJobRow(job, false);
      }
      jobsView.nextBefore = data && data.next_before != null ? data.next_before : null;
      jobsView.loading = false;
      say(ui.jobsStatus, '');
      // Events that arrived while loading win over the (possibly older) list.
      for (const id of jobsView.touched) if (known.has(id)) applyJobToList(known.get(id));
      jobsView.touched.clear();
    } catch (err) {
      if (gen !== jobsView.gen || err.quiet) return;
      jobsView.loading = false;
      say(ui.jobsStatus, `Could not load jobs: ${err.message}`, 'error');
    }
    updateJobsChrome();
  }

  let jobsTimer = 0;
  const jobsFilterChanged = () => {
    const type = ui.jobsType.value.trim();
    if (type !== jobsView.filter.type || ui.jobsState.value !== jobsView.filter.state) loadJobs();
  };
  ui.jobsState.addEventListener('change', jobsFilterChanged);
  ui.jobsType.addEventListener('input', () => { clearTimeout(jobsTimer); jobsTimer = setTimeout(jobsFilterChanged, 400); });
  ui.jobsFilter.addEventListener('submit', (e) => e.preventDefault());
  ui.jobsType.addEventListener('keydown', (e) => { if (e.key === 'Enter') { clearTimeout(jobsTimer); jobsFilterChanged(); } });
  ui.jobsMore.addEventListener('click', () => loadJobs(true));

  // -------------------------------------------------------------------------
  // Dead-letter queue
  // -------------------------------------------------------------------------

  const dlqView = { filter: { type: '', error: '' }, items: new Map(), gen: 0, loading: false, touched: new Map(), nextBefore: null };

  function buildDlqItem(item) {
    const job = item.job;
    const id = String(job.id);
    const feedback = h('p', { className: 'row-feedback', role: 'alert' });
    const retry = h('button', { type: 'button', className: 'btn btn-small', 'data-testid': 'dlq-retry', 'aria-label': `Retry job ${shortId(id)}`, text: 'Retry' });
    const del = h('button', { type: 'button', className: 'btn btn-small btn-danger', 'data-testid': 'dlq-delete', 'aria-label': `Delete dead letter ${shortId(id)}`, text: 'Delete' });
    const details = h('button', { type: 'button', className: 'btn btn-small btn-ghost', 'aria-haspopup': 'dialog', 'aria-label': `Details of job ${shortId(id)}`, text: 'Details', onclick: () => openDetail(job.id) });
    retry.addEventListener('click', () => dlqAction(id, retry, feedback, 'retry'));
    del.addEventListener('click', () => dlqAction(id, del, feedback, 'delete'));
    const err = item.error || {};
    return h('li', { className: 'row dlq-item', 'data-testid': 'dlq-item', dataset: { jobId: id } },
      h('div', { className: 'dlq-main' },
        h('p', { className: 'dlq-title' }, h('span', { className: 'row-type', text: job.type || '' }), ' ',
          h('span', { className: 'mono', title: id, text: shortId(id) })),
        h('p', { className: 'dlq-error' }, h('strong', { text: err.type || 'Error' }), err.message ? `: ${err.message}` : ''),
        h('p', { className: 'dlq-meta', text: `${item.attempts ?? '?'} attempt${item.attempts === 1 ? '' : 's'} · failed ${formatDateTime(item.failed_at)}` }),
        feedback),
      h('div', { className: 'actions' }, details, retry, del));
  }

  function upsertDlq(item, atTop) {
    const id = String(item.job.id);
    const li = buildDlqItem(item);
    const old = dlqView.items.get(id);
    dlqView.items.set(id, li);
    if (old) old.replaceWith(li);
    else if (atTop) ui.dlq.prepend(li);
    else ui.dlq.append(li);
  }

  function removeDlq(id) {
    const li = dlqView.items.get(String(id));
    if (!li) return;
    const hadFocus = li.contains(document.activeElement);
    const next = li.nextElementSibling || li.previousElementSibling;
    li.remove();
    dlqView.items.delete(String(id));
    if (hadFocus) (next ? next.querySelector('button') : ui.dlqRetryAll).focus();
    updateDlqChrome();
  }

  function applyToDlq(name, job) {
    const id = String(job.id);
    if (job.state === 'failed') {
      if (name === 'job:failed' && dlqMatches(dlqItemFromJob(job), dlqView.filter)) upsertDlq(dlqItemFromJob(job), true);
    } else if (dlqView.items.has(id)) {
      removeDlq(id);
    }
    updateDlqChrome();
  }

  function updateDlqChrome() {
    ui.dlqMore.hidden = !dlqView.nextBefore || dlqView.loading;
    ui.dlqEmpty.hidden = dlqView.items.size > 0 || dlqView.loading || (ui.dlqStatus.dataset.kind === 'error' && !dlqView.loaded);
    setText(ui.dlqEmpty, dlqView.filter.type || dlqView.filter.error ? 'No dead letters match this filter.' : 'The dead-letter queue is empty.');
  }

  async function loadDlq(more = false) {
    const gen = ++dlqView.gen;
    if (!more) {
      dlqView.filter = { type: ui.dlqType.value.trim(), error: ui.dlqError.value.trim() };
      dlqView.touched.clear();
    }
    const f = dlqView.filter;
    dlqView.loading = true;
    say(ui.dlqStatus, 'Loading…');
    ui.dlqMore.hidden = true;
    try {
      const data = await api(`/api/dlq${buildQuery({ limit: 50, type: f.type, error: f.error, before: more ? dlqView.nextBefore : null })}`);
      if (gen !== dlqView.gen) return;
      if (!more) { dlqView.items.clear(); ui.dlq.replaceChildren(); }
      for (const item of (data && Array.isArray(data.items) ? data.items : [])) {
        if (!item || !item.job || item.job.id == null) continue;
        const job = remember(item.job);
        if (job.state === 'failed' && !dlqView.items.has(String(job.id))) upsertDlq({ ...item, job }, false);
      }
      dlqView.nextBefore = data && data.next_before != null ? data.next_before : null;
      dlqView.loading = false;
      dlqView.loaded = true;
      say(ui.dlqStatus, '');
      for (const [id, name] of dlqView.touched) if (known.has(id)) applyToDlq(name, known.get(id));
      dlqView.touched.clear();
    } catch (err) {
      if (gen !== dlqView.gen || err.quiet) return;
      dlqView.loading = false;
      say(ui.dlqStatus, `Could not load the dead-letter queue: ${err.message}`, 'error');
    }
    updateDlqChrome();
  }

  async function dlqAction(id, btn, feedback, action) {
    say(feedback, '');
    try {
      await busy(btn, action === 'retry' ? 'Retrying…' : 'Deleting…', () => (action === 'retry'
        ? api(`/api/dlq/${encodeURIComponent(id)}/retry`, 'POST')
        : api(`/api/dlq/${encodeURIComponent(id)}`, 'DELETE')));
      say(ui.dlqStatus, action === 'retry' ? `Job ${shortId(id)} queued again.` : `Dead letter ${shortId(id)} deleted.`, 'ok');
      removeDlq(id);
    } catch (err) {
      if (err.status === 404 && action === 'delete') { removeDlq(id); return; }
      if (!err.quiet) say(feedback, `Could not ${action}: ${err.message}`, 'error');
    }
  }

  ui.dlqRetryAll.addEventListener('click', async () => {
    if (ui.dlqRetryAll.disabled) return;
    try {
      const data = await busy(ui.dlqRetryAll, 'Retrying…', () => api('/api/dlq/retry', 'POST'));
      const retried = data && Array.isArray(data.retried) ? data.retried : [];
      const errors = data && Array.isArray(data.errors) ? data.errors : [];
      for (const id of retried) removeDlq(id);
      for (const e of errors) {
        const li = e && dlqView.items.get(String(e.job_id));
        const fb = li && li.querySelector('.row-feedback');
        if (fb) say(fb, `Could not retry: ${(e.error && e.error.message) || 'unknown error'}`, 'error');
      }
      const text = retried.length || errors.length
        ? `Retried ${retried.length} job${retried.length === 1 ? '' : 's'}.${errors.length ? ` ${errors.length} could not be retried.` : ''}`
        : 'Nothing to retry.';
      say(ui.dlqStatus, text, errors.length ? 'error' : 'ok');
    } catch (err) {
      if (!err.quiet) say(ui.dlqStatus, `Could not retry: ${err.message}`, 'error');
    }
  });

  ui.dlqClear.addEventListener('click', async () => {
    if (ui.dlqClear.disabled) return;
    const yes = await confirmDialog('Delete every entry of the dead-letter queue? The jobs stay failed; this cannot be undone.', 'Clear all');
    if (!yes) { ui.dlqClear.focus(); return; }
    try {
      await busy(ui.dlqClear, 'Clearing…', () => api('/api/dlq', 'DELETE'));
      dlqView.items.clear();
      ui.dlq.replaceChildren();
      dlqView.nextBefore = null;
      say(ui.dlqStatus, 'The dead-letter queue was cleared.', 'ok');
      updateDlqChrome();
    } catch (err) {
      if (!err.quiet) say(ui.dlqStatus, `Could not clear: ${err.message}`, 'error');
    }
  });

  let dlqTimer = 0;
  const dlqFilterChanged = () => {
    if (ui.dlqType.value.trim() !== dlqView.filter.type || ui.dlqError.value.trim() !== dlqView.filter.error) loadDlq();
  };
  for (const input of [ui.dlqType, ui.dlqError]) {
    input.addEventListener('input', () => { clearTimeout(dlqTimer); dlqTimer = setTimeout(dlqFilterChanged, 400); });
    input.addEventListener('keydown', (e) => { if (e.key === 'Enter') { clearTimeout(dlqTimer); dlqFilterChanged(); } });
  }
  ui.dlqFilter.addEventListener('submit', (e) => e.preventDefault());
  ui.dlqMore.addEventListener('click', () => loadDlq(true));

  /** A real in-page confirmation; resolves true only for the Confirm button. */
  function confirmDialog(text, yesLabel) {
    return new Promise((resolve) => {
      setText(ui.confirmText, text);
      setText(ui.confirmYes, yesLabel);
      ui.confirm.returnValue = '';
      ui.confirm.addEventListener('close', () => resolve(ui.confirm.returnValue === 'yes'), { once: true });
      ui.confirm.showModal();
    });
  }

  // -------------------------------------------------------------------------
  // Job detail
  // -------------------------------------------------------------------------

  const detail = { id: null, gen: 0, loading: false, maxSeq: -Infinity, buffer: [] };

  function renderDetailJob(job) {
    if (!job) return;
    setText(ui.detailTitle, `Job ${shortId(job.id)}${job.type ? ` · ${job.type}` : ''}`);
    ui.detail.dataset.state = job.state || '';
    ui.detailSummary.replaceChildren(...describeJob(job).map(([k, v]) =>
      h('div', { className: 'meta-row' }, h('dt', { text: k }), h('dd', { text: v }))));
    const err = errorText(job.error);
    setText(ui.detailErrorText, err);
    ui.detailErrorText.hidden = !err;
    ui.detailError.hidden = !err && !ui.detailTraceback.textContent;
  }

  function timelineRow(ev) {
    const at = ev.at ? new Date(ev.at) : null;
    return h('tr', {},
      h('td', { className: 'num', text: ev.seq == null ? '' : String(ev.seq) }),
      h('td', { text: ev.name || '' }), h('td', { text: ev.state || '' }), h('td', { text: ev.stage || '' }),
      h('td', { className: 'num', text: ev.progress == null ? '' : `${clampPercent(ev.progress)}%` }),
      h('td', { title: ev.at || '', text: at && !Number.isNaN(at.getTime()) ? at.toLocaleTimeString() : '' }),
      h('td', { className: 'cell-error', text: errorText(ev.error) }));
  }

  function appendTimeline(ev) {
    if (Number.isFinite(ev.seq) && ev.seq <= detail.maxSeq) return;
    if (Number.isFinite(ev.seq)) detail.maxSeq = ev.seq;
    ui.detailTimeline.append(timelineRow(ev));
  }

  async function loadTimeline() {
    const gen = ++detail.gen;
    const id = detail.id;
    detail.loading = true;
    say(ui.detailStatus, 'Loading…');
    try {
      const data = await api(`/api/jobs/${encodeURIComponent(id)}/timeline`);
      if (gen !== detail.gen) return;
      const job = data && data.job && data.job.id != null ? remember(data.job) : known.get(id);
      setText(ui.detailPayload, prettyJson(data ? data.payload : undefined));
      setText(ui.detailTraceback, data && typeof data.traceback === 'string' ? data.traceback : '');
      ui.detailTraceback.hidden = !ui.detailTraceback.textContent;
      ui.detailTimeline.replaceChildren();
      detail.maxSeq = -Infinity;
      const events = data && Array.isArray(data.events) ? data.events : [];
      for (const ev of events) if (ev && typeof ev === 'object') appendTimeline(ev);
      for (const ev of detail.buffer) appendTimeline(ev);
      detail.buffer = [];
      if (!events.length && !ui.detailTimeline.children.length) {
        ui.detailTimeline.append(h('tr', {}, h('td', { colSpan: 7, className: 'empty-cell', text: 'No events recorded.' })));
      }
      renderDetailJob(job);
      say(ui.detailStatus, '');
    } catch (err) {
      if (gen !== detail.gen || err.quiet) return;
      say(ui.detailStatus, `Could not load this job: ${err.message}`, 'error');
    } finally {
      if (gen === detail.gen) detail.loading = false;
    }
  }

  function openDetail(id) {
    detail.id = id;
    detail.buffer = [];
    detail.maxSeq = -Infinity;
    setText(ui.detailPayload, '…');
    setText(ui.detailTraceback, '');
    ui.detailTraceback.hidden = true;
    ui.detailTimeline.replaceChildren();
    ui.detailSummary.replaceChildren();
    setText(ui.detailTitle, `Job ${shortId(id)}`);
    renderDetailJob(known.get(id));
    if (!ui.detail.open) ui.detail.showModal();
    ui.detailClose.focus();
    loadTimeline();
  }

  function detailEvent(name, job, seq) {
    const ev = { seq, name, state: job.state, stage: job.stage, progress: job.progress, at: new Date().toISOString(), error: job.error };
    if (detail.loading) { detail.buffer.push(ev); return; }
    ui.detailTimeline.querySelector('.empty-cell')?.parentElement.remove();
    appendTimeline(ev);
    renderDetailJob(job);
    if (name === 'job:failed') loadTimeline(); // a new traceback exists now
  }

  ui.detailClose.addEventListener('click', () => ui.detail.close());
  ui.detail.addEventListener('close', () => { detail.id = null; detail.gen += 1; detail.buffer = []; });

  // -------------------------------------------------------------------------
  // Live events
  // -------------------------------------------------------------------------

  function onJobEvent(name, payload) {
    if (!payload || typeof payload !== 'object' || !payload.job || typeof payload.job !== 'object' || payload.job.id == null) return;
    const seq = eventSeq(payload);
    const have = known.get(payload.job.id);
    if (!isNewer(have, seq)) return; // stale or duplicate
    const job = { ...payload.job };
    if (!job.state) job.state = stateFromEvent(name) || (have && have.state) || '';
    if (seq != null) job.seq = seq;
    remember(job);
    if (jobsView.loading) jobsView.touched.add(job.id);
    applyJobToList(job);
    updateJobsChrome();
    if (dlqView.loading) dlqView.touched.set(job.id, name);
    applyToDlq(name, job);
    if (detail.id === job.id) detailEvent(name, job, seq);
  }

  let socket = null;
  let everConnected = false;
  let failedAttempts = 0;
  let retryTimer = 0;
  let retryDelay = 2000;

  function setConn(state, label, detailText = '') {
    ui.conn.dataset.state = state;
    ui.conn.title = detailText;
    setText(ui.connLabel, label);
  }

  function showDisconnected() {
    if (!navigator.onLine) setConn('offline', 'Offline', 'Your device is offline.');
    else if (failedAttempts >= 3) setConn('offline', 'Offline', 'Cannot reach the server; still trying…');
    else setConn('reconnecting', 'Reconnecting…', 'Trying to reach the server…');
  }

  function closeSocket() {
    clearTimeout(retryTimer);
    if (socket) {
      const s = socket;
      socket = null;
      s.removeAllListeners();
      s.disconnect();
    }
    everConnected = false;
    failedAttempts = 0;
  }

  function subscribeAll(s, gen) {
    s.timeout(10_000).emit('subscribe', { scope: 'all' }, (err, ack) => {
      if (gen !== session || s !== socket) return;
      if (err) {
        say(ui.banner, 'The server did not confirm the subscription to all jobs; live updates may be missing.', 'error');
      } else if (ack && ack.ok) {
        say(ui.banner, '');
      } else if (ack && ack.error && ack.error.code === 'forbidden') {
        signOut(NOT_ADMIN);
      } else {
        say(ui.banner, `Live updates are off: ${errorText(ack && ack.error) || 'subscription refused'}`, 'error');
      }
      ui.banner.hidden = !ui.banner.textContent;
    });
  }

  function connectSocket() {
    closeSocket();
    const ioFactory = globalThis.io;
    if (typeof ioFactory !== 'function') {
      setConn('offline', 'Offline', 'The live-update library failed to load.');
      return;
    }
    const gen = session;
    const s = ioFactory({ auth: { token }, transports: ['websocket', 'polling'], forceNew: true });
    socket = s;
    setConn('reconnecting', 'Connecting…', 'Connecting to the server…');
    const mine = (fn) => (...args) => { if (gen === session && s === socket) fn(...args); };

    s.on('connect', mine(() => {
      failedAttempts = 0;
      retryDelay = 2000;
      setConn('connected', 'Connected', 'Live updates are on.');
      subscribeAll(s, gen);
      // After a reconnect, events may have been missed: load everything once again.
      if (everConnected) {
        loadQueues();
        loadJobs();
        loadDlq();
        if (detail.id != null) loadTimeline();
      }
      everConnected = true;
    }));
    s.on('disconnect', mine((reason) => {
      if (reason === 'io client disconnect') return;
      if (reason === 'io server disconnect') {
        setConn('reconnecting', 'Reconnecting…');
        retryTimer = setTimeout(() => { if (s === socket) s.connect(); }, 1000);
        return;
      }
      showDisconnected();
    }));
    s.on('connect_error', mine((err) => {
      const message = (err && err.message) || '';
      if (isUnauthorizedMessage(message)) { signOut(NOT_ADMIN); return; }
      failedAttempts += 1;
      if (s.active) { showDisconnected(); return; }
      setConn('offline', 'Offline', message || 'The server refused the connection.');
      clearTimeout(retryTimer);
      retryTimer = setTimeout(() => { if (s === socket && !s.connected) s.connect(); }, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 30_000);
    }));
    s.io.on('reconnect_attempt', mine(showDisconnected));
    s.on('queues:stats', mine((payload) => renderQueues(payload)));
    // Another admin deleted entries (or cleared the queue): mirror it here.
    s.on('dlq:removed', mine((payload) => {
      if (payload && payload.all) {
        for (const id of [...dlqView.items.keys()]) removeDlq(id);
      } else if (payload && Array.isArray(payload.job_ids)) {
        for (const id of payload.job_ids) removeDlq(id);
      }
    }));
    for (const name of JOB_EVENTS) s.on(name, mine((payload) => onJobEvent(name, payload)));
  }

  window.addEventListener('offline', () => { if (socket) setConn('offline', 'Offline', 'Your device is offline.'); });
  window.addEventListener('online', () => {
    if (socket && !socket.connected) {
      setConn('reconnecting', 'Reconnecting…');
      if (!socket.active) socket.connect();
    }
  });

  // ----- start -----
  const saved = tokenStore.get();
  if (saved) signIn(saved); else signOut('');
}

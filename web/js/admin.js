// Darkroom admin dashboard: queues, worker processes, charts, job search, job timelines
// and the dead-letter queue.
// Build-free ES modules, no framework; startAdmin (run by web/admin.js, the page's
// script) signs in with the admin token and wires the views together. After the initial
// REST load the views are kept current only by Socket.IO pushes (admin-live.js); lists
// are fetched again only when a filter changes (filters live in the page's URL, so a
// copied link opens the same search), on Refresh, or when the socket reconnects.
//
// Security note: everything from the server (types, payloads, error messages,
// tracebacks) is written with textContent, never as HTML.
import { ApiError, createTokenStore, errorMessage, parseJson, send } from './api.js';
import { createCharts } from './admin-charts.js';
import { createDeadLetters } from './admin-dlq.js';
import { createJobDetail } from './admin-detail.js';
import { createJobs } from './admin-jobs.js';
import { createAdminLive } from './admin-live.js';
import { ADMIN_MESSAGES, createJobCache, NOT_ADMIN, TOKEN_KEY } from './admin-model.js';
import { createQueues } from './admin-queues.js';
import { createWorkers } from './admin-workers.js';
import { byId, say, setText } from './dom.js';
import { connIndicator } from './live.js';

function findElements() {
  const ids = {
    conn: 'conn', workers: 'workers', signOut: 'sign-out', login: 'login', tokenForm: 'token-form',
    tokenInput: 'token-input', tokenError: 'token-error', dashboard: 'dashboard', banner: 'banner',
    queues: 'queues', queuesHead: 'queues-head', queuesAt: 'queues-at', queuesStatus: 'queues-status',
    roster: 'roster', rosterWrap: 'roster-wrap', rosterSummary: 'roster-summary', rosterStatus: 'roster-status',
    rosterEmpty: 'roster-empty', charts: 'charts', chartsAt: 'charts-at', chartsStatus: 'charts-status',
    chartsEmpty: 'charts-empty',
    jobsFilter: 'jobs-filter', jobsId: 'jobs-id', jobsState: 'jobs-state', jobsType: 'jobs-type',
    jobsError: 'jobs-error', jobsMoreFilters: 'jobs-more-filters', jobsQueue: 'jobs-queue', jobsUser: 'jobs-user',
    jobsFilename: 'jobs-filename', jobsSha256: 'jobs-sha256', jobsFrom: 'jobs-from', jobsTo: 'jobs-to',
    jobsClear: 'jobs-clear', jobsRefresh: 'jobs-refresh', jobsFilterError: 'jobs-filter-error', jobs: 'jobs',
    jobsStatus: 'jobs-status', jobsEmpty: 'jobs-empty', jobsCount: 'jobs-count', jobsMore: 'jobs-more',
    dlqFilter: 'dlq-filter', dlqId: 'dlq-id', dlqType: 'dlq-type', dlqError: 'dlq-error',
    dlqMoreFilters: 'dlq-more-filters', dlqQueue: 'dlq-queue', dlqUser: 'dlq-user', dlqFilename: 'dlq-filename',
    dlqFrom: 'dlq-from', dlqTo: 'dlq-to', dlqFilterClear: 'dlq-filter-clear', dlqRefresh: 'dlq-refresh',
    dlqFilterError: 'dlq-filter-error', dlq: 'dlq', dlqStatus: 'dlq-status', dlqEmpty: 'dlq-empty',
    dlqMore: 'dlq-more', dlqRetryAll: 'dlq-retry-all', dlqDeleteAll: 'dlq-delete-all',
    detail: 'detail', detailTitle: 'detail-title', detailClose: 'detail-close', detailStatus: 'detail-status',
    detailSummary: 'detail-summary', detailError: 'detail-error', detailErrorText: 'detail-error-text',
    detailTraceback: 'detail-traceback', detailPayload: 'detail-payload', detailTimeline: 'detail-timeline',
    confirm: 'confirm', confirmText: 'confirm-text', confirmYes: 'confirm-yes',
  };
  return Object.fromEntries(Object.entries(ids).map(([key, id]) => [key, byId(id)]));
}

/** Start the dashboard on admin.html. */
export function startAdmin() {
  const ui = findElements();
  const tokens = createTokenStore(TOKEN_KEY);
  // The views reach each other through `admin`, looked up when called. `session` is
  // bumped on every sign-in/out: answers for an older session are ignored.
  const admin = { ui, conn: connIndicator(ui.conn), token: null, session: 0, cache: createJobCache() };

  /** An API call with the admin token; resolves to the parsed body (null for none), rejects with ApiError. */
  admin.api = async (path, method = 'GET') => {
    const gen = admin.session;
    let res;
    try {
      res = await send(path, { method, token: admin.token });
    } catch (err) {
      throw new ApiError(0, err.message, gen !== admin.session);
    }
    if (gen !== admin.session) throw new ApiError(res.status, 'stale', true);
    if (res.status === 401 || res.status === 403) {
      signOut(NOT_ADMIN);
      throw new ApiError(res.status, NOT_ADMIN, true);
    }
    if (!res.ok) throw new ApiError(res.status, errorMessage(res.status, res.text, ADMIN_MESSAGES));
    return parseJson(res.text);
  };

  function resetViews() {
    admin.cache.clear();
    admin.queues.reset();
    admin.workers.reset();
    admin.charts.reset();
    admin.jobs.reset();
    admin.dlq.reset();
    for (const el of [ui.banner, ui.queuesStatus, ui.jobsStatus, ui.dlqStatus, ui.queuesAt, ui.jobsCount, ui.jobsFilterError, ui.dlqFilterError]) say(el, '');
  }

  function signIn(value) {
    admin.token = value;
    tokens.set(value);
    admin.session += 1;
    ui.login.hidden = true;
    ui.dashboard.hidden = false;
    ui.signOut.hidden = false;
    say(ui.tokenError, '');
    ui.tokenError.hidden = true;
    resetViews();
    // One request checks the token first (a bad one then fails once, not four times).
    const gen = admin.session;
    admin.queues.load().then(() => {
      if (gen !== admin.session) return;
      admin.live.connect();
      admin.workers.load();
      admin.charts.load();
      admin.jobs.load();
      admin.dlq.load();
    });
  }

  function signOut(message = '') {
    admin.session += 1;
    admin.live.close();
    admin.token = null;
    tokens.clear();
    resetViews();
    if (ui.detail.open) ui.detail.close();
    if (ui.confirm.open) ui.confirm.close();
    ui.dashboard.hidden = true;
    ui.signOut.hidden = true;
    ui.login.hidden = false;
    setText(ui.workers, '—');
    admin.conn.set('offline', 'Offline', 'Not signed in.');
    say(ui.tokenError, message, 'error');
    ui.tokenError.hidden = !message;
    ui.tokenInput.value = '';
    ui.tokenInput.focus();
  }

  admin.signOut = signOut;
  admin.queues = createQueues(admin);
  admin.workers = createWorkers(admin);
  admin.charts = createCharts(admin);
  admin.jobs = createJobs(admin);
  admin.dlq = createDeadLetters(admin);
  admin.detail = createJobDetail(admin);
  admin.live = createAdminLive(admin);

  ui.tokenForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const value = ui.tokenInput.value.trim();
    if (value) signIn(value);
  });
  ui.signOut.addEventListener('click', () => signOut(''));
  admin.charts.listen();
  admin.jobs.listen();
  admin.dlq.listen();
  admin.detail.listen();
  admin.live.listen();

  const saved = tokens.get();
  if (saved) signIn(saved); else signOut('');
}

// A job's whole life on its own page (admin-job.html, served at /admin/jobs/{id}): its
// state, every attempt with its worker, stages, error and back-off, the events as pushed,
// webhook deliveries, payload, result and image, and the actions that apply to it.
// GET /api/jobs/{id}/timeline draws it; while the job runs, a socket subscribed to the
// job keeps the header current at once and has the timeline loaded again, at most every
// REFRESH_MS. It uses the admin token the dashboard keeps (admin-model.js TOKEN_KEY).
//
// This module is the page's script: it starts the page when loaded. The job's id comes
// from the address and is checked here; everything from the server is set as text.
import { ApiError, createTokenStore, errorMessage, parseJson, send } from './api.js';
import {
  backoffText, eventFromPush, formatElapsed, jobActions, jobIdFromPath, lastSeq, mergeEvents, newerJob,
  outcomeLabel, resultImage, splitWorker, stageShare,
} from './admin-job-model.js';
import { ADMIN_MESSAGES, describeJob, NOT_ADMIN, TOKEN_KEY } from './admin-model.js';
import { busy, byId, h, idTag, say, setHidden, setText, showText } from './dom.js';
import { clampPercent, formatCountdown, formatDuration, formatTimestamp, prettyJson, safeUrl, shortId } from './format.js';
import { connIndicator, FIRST_RETRY_MS, nextRetryDelay, socketFactory } from './live.js';
import { errorText, isNewer, isUnauthorizedMessage, JOB_EVENTS, jobFromEvent } from './wire.js';

// Progress events come several a second; the timeline (attempts, stages, events) is
// loaded again at most this often while they do.
const REFRESH_MS = 1500;
const SUBSCRIBE_TIMEOUT_MS = 10_000;
// Pushed events kept beyond the stored ones (the next timeline load replaces them).
const MAX_PUSHED = 500;
const HEADED = Object.freeze(['Type', 'State', 'Stage', 'Progress']);

function findElements() {
  const ids = {
    main: 'main', conn: 'conn', notice: 'notice', signIn: 'sign-in', loadStatus: 'load-status', job: 'job',
    title: 'job-title', state: 'job-state', progress: 'job-progress', percent: 'job-percent', stage: 'job-stage',
    summary: 'job-summary', retry: 'retry', cancel: 'cancel', deleteImage: 'delete-image',
    actionStatus: 'action-status', error: 'error', errorText: 'error-text', traceback: 'traceback',
    image: 'image', imageStatus: 'image-status', thumbnailFigure: 'thumbnail-figure', thumbnail: 'thumbnail',
    previewFigure: 'preview-figure', preview: 'preview', original: 'original',
    attempts: 'attempts', attemptsCount: 'attempts-count', attemptsEmpty: 'attempts-empty',
    events: 'events', eventsCount: 'events-count',
    deliveries: 'deliveries', deliveriesWrap: 'deliveries-wrap', deliveriesEmpty: 'deliveries-empty',
    payload: 'payload', result: 'result', confirm: 'confirm', confirmText: 'confirm-text', confirmYes: 'confirm-yes',
  };
  return Object.fromEntries(Object.entries(ids).map(([key, id]) => [key, byId(id)]));
}

/** A time of day to the millisecond, what tells a job's events apart; the raw value if unreadable. */
function clockTime(value) {
  const d = value ? new Date(value) : null;
  if (!d || Number.isNaN(d.getTime())) return value == null ? '' : String(value);
  return d.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit', fractionalSecondDigits: 3 });
}

/** <dl> rows: [term, value, {mono, testid}]; rows without a value are left out. */
function metaRows(rows) {
  return rows.filter(([, value]) => value != null && value !== '').map(([term, value, opts = {}]) => h('div', { className: 'meta-row' },
    h('dt', { text: term }),
    h('dd', { className: opts.mono ? 'mono' : null, 'data-testid': opts.testid || null, title: opts.title || null, text: String(value) })));
}

/** Start the page: check the id and the token, draw the job, then follow it live. */
export function startJobPage() {
  const ui = findElements();
  const conn = connIndicator(ui.conn);
  const { id, raw } = jobIdFromPath(location.pathname);
  const view = {
    token: null, job: null, timeline: null, stored: [], pushed: [],
    image: null, imageGone: false, imageSeq: null,
    loading: false, again: false, lastLoad: 0, timer: 0, acting: false, stopped: false,
    openTracebacks: new Set(),
  };
  let socket = null;
  let everConnected = false;
  let failedAttempts = 0;
  let retryTimer = 0;
  let retryDelay = FIRST_RETRY_MS;

  /** Stop for good with `message` (and the sign-in hint when the token is the trouble). */
  function stop(message, signIn = false) {
    view.stopped = true;
    clearTimeout(view.timer);
    closeSocket();
    ui.job.hidden = true;
    say(ui.loadStatus, '');
    say(ui.notice, message, 'error');
    setHidden(ui.notice, !message);
    ui.signIn.hidden = !signIn;
    conn.set('offline', 'Offline', signIn ? 'Not signed in.' : 'Not following a job.');
  }

  /** An API call with the admin token; resolves to the parsed body (null for none), rejects with ApiError. */
  async function api(path, method = 'GET') {
    const res = await send(path, { method, token: view.token });
    if (res.status === 401 || res.status === 403) {
      stop(NOT_ADMIN, true);
      throw new ApiError(res.status, NOT_ADMIN, true);
    }
    if (!res.ok) throw new ApiError(res.status, errorMessage(res.status, res.text, ADMIN_MESSAGES));
    return parseJson(res.text);
  }

  const jobPath = (suffix = '') => `/api/jobs/${encodeURIComponent(id)}${suffix}`;

  // ---------- drawing ----------

  function renderJob() {
    const job = view.job;
    if (!job) return;
    ui.main.dataset.state = job.state || '';
    const key = `${job.id} ${job.type || ''}`;
    if (ui.title.dataset.key !== key) {
      ui.title.dataset.key = key;
      ui.title.replaceChildren('Job ', idTag(job.id), job.type ? ` · ${job.type}` : '');
    }
    document.title = `Job ${shortId(job.id)} · ${job.state || ''} · Darkroom admin`;
    setText(ui.state, job.state || '');
    const pct = clampPercent(job.progress);
    if (ui.progress.value !== pct) ui.progress.value = pct;
    ui.progress.setAttribute('aria-label', `Progress ${pct}%`);
    setText(ui.percent, `${pct}%`);
    setText(ui.stage, job.stage || '');
    // Type, state, stage and progress are in the heading and bar above.
    const rows = describeJob(job).filter(([term]) => !HEADED.includes(term)).map(([term, value]) => [term, value,
      term === 'ID' ? { mono: true, testid: 'job-id' } : term === 'Attempts' ? { testid: 'job-attempts' }
        : term === 'Image' || term === 'Batch' ? { mono: true } : {}]);
    const took = formatDuration(job.started_at, job.finished_at);
    if (took) rows.push(['Ran for', took]);
    if (job.state === 'retrying' || job.state === 'delayed') rows.push(['Next run', formatCountdown(job.run_at) || 'due now']);
    ui.summary.replaceChildren(...metaRows(rows));
    const err = errorText(job.error);
    // The stored traceback outlives a retry that then succeeded: shown with the job's error only.
    const traceback = err && view.timeline && typeof view.timeline.traceback === 'string' ? view.timeline.traceback : '';
    showText(ui.errorText, err);
    showText(ui.traceback, traceback);
    setHidden(ui.error, !err && !traceback);
    setText(ui.result, prettyJson(job.result == null ? undefined : job.result));
    renderActions();
  }

  function renderActions() {
    if (view.acting || !view.job) return;
    const can = jobActions(view.job, !!view.image && !view.imageGone);
    setHidden(ui.retry, !can.retry);
    setHidden(ui.cancel, !can.cancel);
    setHidden(ui.deleteImage, !can.deleteImage);
  }

  function stageRow(stage, total, running) {
    const share = stageShare(stage.seconds, total);
    const open = stage.seconds == null;
    return h('tr', { 'data-testid': 'attempt-stage', dataset: { stage: stage.stage || '' } },
      h('th', { scope: 'row', text: stage.stage || '' }),
      h('td', { title: stage.started_at || '', text: clockTime(stage.started_at) }),
      h('td', { className: 'num', 'data-testid': 'stage-seconds', text: open ? (running ? 'running…' : '—') : formatElapsed(stage.seconds) }),
      h('td', { className: 'stage-share' },
        h('progress', { className: 'bar stage-bar', max: 100, value: open ? null : share,
          'aria-label': open ? 'Still running' : `${share}% of the attempt` })));
  }

  function attemptCard(a, job, isLast) {
    const worker = splitWorker(a.worker);
    const running = a.outcome == null;
    const stages = Array.isArray(a.stages) ? a.stages : [];
    const known = stages.reduce((sum, s) => sum + (Number.isFinite(s.seconds) ? s.seconds : 0), 0);
    const total = Number.isFinite(a.seconds) ? a.seconds : known;
    const err = errorText(a.error);
    const card = h('li', { className: 'attempt', 'data-testid': 'attempt', dataset: { number: String(a.number ?? ''), outcome: outcomeLabel(a.outcome) } },
      h('div', { className: 'attempt-head' },
        h('h3', { text: `Attempt ${a.number ?? '?'}` }),
        h('span', { className: 'badge', 'data-testid': 'attempt-outcome', text: outcomeLabel(a.outcome) }),
        h('span', { className: 'attempt-took', 'data-testid': 'attempt-seconds', text: running ? 'running…' : formatElapsed(a.seconds) })),
      h('dl', { className: 'meta attempt-meta' }, ...metaRows([
        ['Host', worker ? worker.host : '—', { mono: true, testid: 'attempt-host', title: a.worker || '' }],
        ['PID', worker && worker.pid ? worker.pid : '—', { mono: true, testid: 'attempt-pid' }],
        ['Thread', worker && worker.thread ? worker.thread : '—', { mono: true, testid: 'attempt-thread' }],
        ['Started', formatTimestamp(a.started_at)],
        ['Ended', a.ended_at ? formatTimestamp(a.ended_at) : running ? 'still running' : '—'],
      ])));
    if (stages.length) {
      card.append(h('div', { className: 'table-wrap stages-wrap' },
        h('table', { className: 'grid stages' },
          h('caption', { className: 'visually-hidden', text: `Stages of attempt ${a.number ?? ''}` }),
          h('thead', {}, h('tr', {},
            h('th', { scope: 'col', text: 'Stage' }), h('th', { scope: 'col', text: 'Started' }),
            h('th', { scope: 'col', className: 'num', text: 'Took' }), h('th', { scope: 'col', text: 'Share of the attempt' }))),
          h('tbody', {}, stages.map((s) => stageRow(s, total, running))))));
    }
    if (err) card.append(h('p', { className: 'card-error', 'data-testid': 'attempt-error', text: err }));
    if (typeof a.traceback === 'string' && a.traceback) {
      const details = h('details', { className: 'traceback', 'data-testid': 'attempt-traceback', open: view.openTracebacks.has(a.number) },
        h('summary', { text: 'Traceback' }),
        h('pre', { className: 'code', tabIndex: 0, text: a.traceback }));
      details.addEventListener('toggle', () => {
        if (details.open) view.openTracebacks.add(a.number); else view.openTracebacks.delete(a.number);
      });
      card.append(details);
    }
    const items = [card];
    const waited = backoffText(a);
    if (waited) {
      items.push(h('li', { className: 'attempt-wait', 'data-testid': 'attempt-backoff', text: waited }));
    } else if (isLast && a.outcome === 'retrying' && job && job.state === 'retrying') {
      const when = formatCountdown(job.run_at);
      items.push(h('li', { className: 'attempt-wait', 'data-testid': 'attempt-backoff',
        text: `Waiting; attempt ${(a.number ?? 0) + 1} ${when ? `starts ${when}` : 'is due now'}` }));
    }
    return items;
  }

  function renderAttempts() {
    const attempts = view.timeline && Array.isArray(view.timeline.attempts) ? view.timeline.attempts : [];
    ui.attempts.replaceChildren(...attempts.flatMap((a, i) => attemptCard(a, view.job, i === attempts.length - 1)));
    setText(ui.attemptsCount, attempts.length ? `${attempts.length} attempt${attempts.length === 1 ? '' : 's'}` : '');
    setText(ui.attemptsEmpty, view.job && view.job.state === 'cancelled' ? 'Never ran.' : 'Not run yet.');
    setHidden(ui.attemptsEmpty, attempts.length > 0);
  }

  function eventRow(ev) {
    return h('tr', { 'data-testid': 'job-event', dataset: { seq: String(ev.seq), name: ev.name || '', live: ev.live ? 'true' : 'false' } },
      h('td', { className: 'num', text: String(ev.seq) }),
      h('td', { title: errorText(ev.error) || null, text: ev.name || '' }),
      h('td', { text: ev.state || '' }),
      h('td', { text: ev.stage || '' }),
      h('td', { className: 'num', text: ev.progress == null ? '' : `${clampPercent(ev.progress)}%` }),
      h('td', { title: ev.at || '', text: clockTime(ev.at) }),
      h('td', { className: 'mono', text: ev.worker || '' }));
  }

  function renderEvents() {
    const events = mergeEvents(view.stored, view.pushed);
    const key = events.map((ev) => `${ev.seq}${ev.live ? 'p' : 's'}`).join(',');
    if (ui.events.dataset.key === key) return;
    ui.events.dataset.key = key;
    ui.events.replaceChildren(...(events.length ? events.map(eventRow)
      : [h('tr', {}, h('td', { colSpan: 7, className: 'empty-cell', text: 'No events recorded.' }))]));
    setText(ui.eventsCount, events.length ? `${events.length} event${events.length === 1 ? '' : 's'}` : '');
  }

  function deliveryRow(d) {
    return h('tr', { 'data-testid': 'delivery', dataset: { state: d.state || '' } },
      h('td', { className: 'mono delivery-url', text: d.url || '' }),
      h('td', { text: d.event || '' }),
      h('td', { text: d.state || '' }),
      h('td', { className: 'num', 'data-testid': 'delivery-status', text: d.status == null ? '—' : String(d.status) }),
      h('td', { className: 'num', text: `${d.attempt ?? '?'}/${d.max_attempts ?? '?'}` }),
      h('td', { title: d.created_at || '', text: formatTimestamp(d.created_at) }),
      h('td', { className: 'num', text: formatDuration(d.started_at, d.finished_at) || '—' }),
      h('td', { className: 'cell-error', text: errorText(d.error) }));
  }

  function renderDeliveries() {
    const deliveries = view.timeline && Array.isArray(view.timeline.deliveries) ? view.timeline.deliveries : [];
    ui.deliveries.replaceChildren(...deliveries.map(deliveryRow));
    setHidden(ui.deliveriesWrap, deliveries.length === 0);
    setHidden(ui.deliveriesEmpty, deliveries.length > 0);
  }

  /** Show `url` in `img` unless it already shows this image's file (signed URLs change; the file does not). */
  function showFile(img, figure, url, imageId) {
    const safe = safeUrl(url);
    if (!safe) {
      if (img.dataset.imageId !== imageId) { img.removeAttribute('src'); delete img.dataset.imageId; }
      setHidden(figure, !img.dataset.imageId);
      return;
    }
    if (img.dataset.imageId !== imageId) {
      img.dataset.imageId = imageId;
      img.src = safe;
    }
    setHidden(figure, false);
  }

  function renderImage() {
    const job = view.job;
    setHidden(ui.image, !(job && job.image_id));
    if (!job || !job.image_id) return;
    const image = view.imageGone ? null : view.image;
    if (!image) {
      for (const [img, figure] of [[ui.thumbnail, ui.thumbnailFigure], [ui.preview, ui.previewFigure]]) {
        img.removeAttribute('src');
        delete img.dataset.imageId;
        figure.hidden = true;
      }
      ui.original.hidden = true;
      if (view.imageGone) say(ui.imageStatus, 'The image was deleted.');
      return;
    }
    const imageId = String(image.id);
    showFile(ui.thumbnail, ui.thumbnailFigure, image.thumbnail_url, imageId);
    showFile(ui.preview, ui.previewFigure, image.preview_url, imageId);
    const original = safeUrl(image.original_url);
    if (original) ui.original.href = original;
    ui.original.hidden = !original;
    const name = typeof image.filename === 'string' ? image.filename : '';
    ui.thumbnail.alt = name ? `Thumbnail of ${name}` : "Thumbnail of the job's image";
    ui.preview.alt = name ? `Preview of ${name}` : "Preview of the job's image";
    const shown = !ui.thumbnailFigure.hidden || !ui.previewFigure.hidden;
    if (ui.imageStatus.dataset.kind !== 'error' || shown) {
      say(ui.imageStatus, shown ? (name ? `${name}${image.width ? ` · ${image.width}×${image.height}` : ''}` : '')
        : 'No thumbnail or preview yet.');
    }
  }

  function render() {
    renderJob();
    renderAttempts();
    renderEvents();
    renderDeliveries();
    setText(ui.payload, prettyJson(view.timeline ? view.timeline.payload : undefined));
    renderImage();
  }

  // ---------- loading ----------

  /** The job's <Image>: from a completed job's result, else asked for (once per change of the job). */
  async function loadImage() {
    const job = view.job;
    if (!job || !job.image_id) return;
    const fromResult = resultImage(job);
    if (fromResult) {
      view.image = fromResult;
      view.imageGone = false;
      return;
    }
    if (view.imageSeq === job.seq) return;
    view.imageSeq = job.seq;
    try {
      view.image = await api(`/api/images/${encodeURIComponent(job.image_id)}`);
      view.imageGone = false;
    } catch (err) {
      if (err.quiet) return;
      if (err.status === 404) {
        view.image = null;
        view.imageGone = true;
      } else {
        say(ui.imageStatus, `Could not load the image: ${err.message}`, 'error');
      }
    }
  }

  async function loadTimeline() {
    if (view.stopped) return;
    if (view.loading) { view.again = true; return; }
    view.loading = true;
    view.lastLoad = Date.now();
    if (!view.timeline) say(ui.loadStatus, 'Loading…');
    try {
      const data = await api(jobPath('/timeline'));
      if (!data || !data.job || data.job.id !== id) throw new ApiError(0, 'the server sent no job');
      view.timeline = data;
      view.stored = Array.isArray(data.events) ? data.events.filter((ev) => ev && typeof ev === 'object') : [];
      const storedTo = lastSeq(view.stored);
      view.pushed = view.pushed.filter((ev) => ev.seq > storedTo);
      view.job = newerJob(view.job, data.job);
      await loadImage();
      if (view.stopped) return;
      say(ui.loadStatus, '');
      ui.job.hidden = false;
      render();
    } catch (err) {
      if (err.quiet || view.stopped) return;
      if (err.status === 404) stop(`No job has the id ${id}. It may have been deleted, or the address is mistyped.`);
      else if (!view.timeline) stop(`Could not load this job: ${err.message}`);
      else say(ui.loadStatus, `Could not refresh this job: ${err.message}`, 'error');
    } finally {
      view.loading = false;
      if (view.again) { view.again = false; refreshSoon(); }
    }
  }

  /** Load the timeline again, at most every REFRESH_MS. */
  function refreshSoon() {
    if (view.timer || view.stopped) return;
    const wait = Math.max(0, view.lastLoad + REFRESH_MS - Date.now());
    view.timer = setTimeout(() => { view.timer = 0; loadTimeline(); }, wait);
  }

  /** A newer copy of the job (a push, a subscription's answer, an action's answer). */
  function applyJob(job) {
    if (!job || job.id !== id || !isNewer(view.job, job.seq)) return false;
    view.job = job;
    renderJob();
    renderImage();
    refreshSoon();
    return true;
  }

  // ---------- actions ----------

  /** A real in-page confirmation; resolves true only for the Confirm button (red when `danger`). */
  function confirm(text, yesLabel, danger) {
    return new Promise((resolve) => {
      setText(ui.confirmText, text);
      setText(ui.confirmYes, yesLabel);
      ui.confirmYes.classList.toggle('btn-danger-solid', danger);
      ui.confirmYes.classList.toggle('btn-primary', !danger);
      ui.confirm.returnValue = '';
      ui.confirm.addEventListener('close', () => resolve(ui.confirm.returnValue === 'yes'), { once: true });
      ui.confirm.showModal();
    });
  }

  const ACTIONS = {
    retry: {
      button: () => ui.retry, verb: 'retry', busy: 'Retrying…', yes: 'Retry', danger: false,
      ask: () => `Run job ${shortId(id)} again? It starts over with fresh attempts.`,
      call: () => api(jobPath('/retry'), 'POST'),
      done: () => 'Queued again.',
    },
    cancel: {
      button: () => ui.cancel, verb: 'cancel', busy: 'Cancelling…', yes: 'Cancel the job', danger: true,
      ask: () => `Cancel job ${shortId(id)}? A running attempt stops at its next stage.`,
      call: () => api(jobPath('/cancel'), 'POST'),
      done: () => 'Cancelled.',
    },
    deleteImage: {
      button: () => ui.deleteImage, verb: 'delete the image', busy: 'Deleting…', yes: 'Delete image', danger: true,
      ask: () => `Delete the image of job ${shortId(id)} with its thumbnail and preview? A job still waiting for it ends cancelled. This cannot be undone.`,
      call: () => api(`/api/images/${encodeURIComponent(view.job.image_id)}`, 'DELETE'),
      done: () => 'Image deleted.',
    },
  };

  async function act(kind) {
    const action = ACTIONS[kind];
    const btn = action.button();
    if (view.acting || !(await confirm(action.ask(), action.yes, action.danger))) { btn.focus(); return; }
    say(ui.actionStatus, '');
    view.acting = true;
    try {
      const data = await busy(btn, action.busy, action.call);
      if (kind === 'deleteImage') {
        view.image = null;
        view.imageGone = true;
      }
      view.acting = false;
      say(ui.actionStatus, action.done(), 'ok');
      if (!(data && applyJob(data.job))) { renderJob(); renderImage(); }
    } catch (err) {
      view.acting = false;
      if (!err.quiet) say(ui.actionStatus, `Could not ${action.verb}: ${err.message}`, 'error');
      renderActions();
    }
    refreshSoon();
  }

  // ---------- live ----------

  function closeSocket() {
    clearTimeout(retryTimer);
    if (socket) {
      const s = socket;
      socket = null;
      s.removeAllListeners();
      s.disconnect();
    }
  }

  function onPush(name, payload) {
    const decoded = jobFromEvent(name, payload, view.job);
    if (!decoded || decoded.job.id !== id) return; // another job (the admin's own, say)
    const { job, seq } = decoded;
    if (!isNewer(view.job, seq)) return; // stale or a repeat
    if (seq != null) job.seq = seq;
    view.pushed.push(eventFromPush(name, job, seq, payload.published_at));
    if (view.pushed.length > MAX_PUSHED) view.pushed.splice(0, view.pushed.length - MAX_PUSHED);
    applyJob(job);
    renderEvents();
  }

  function subscribe(s) {
    s.timeout(SUBSCRIBE_TIMEOUT_MS).emit('subscribe', { job_id: id }, (err, ack) => {
      if (s !== socket) return;
      if (err) {
        conn.set('reconnecting', 'Not following', 'The server did not confirm the subscription; live updates may be missing.');
      } else if (ack && ack.ok) {
        conn.set('connected', 'Live', 'Live updates of this job are on.');
        applyJob(ack.job);
      } else if (ack && ack.error && ack.error.code === 'forbidden') {
        stop(NOT_ADMIN, true);
      } else if (ack && ack.error && ack.error.code === 'not_found') {
        stop(`No job has the id ${id}. It may have been deleted.`);
      } else {
        conn.set('offline', 'Not live', `Live updates are off: ${errorText(ack && ack.error) || 'subscription refused'}`);
      }
    });
  }

  function connect() {
    const io = socketFactory();
    if (!io) {
      conn.set('offline', 'Offline', 'The live-update library failed to load.');
      return;
    }
    const s = io({ auth: { token: view.token }, transports: ['websocket', 'polling'], forceNew: true });
    socket = s;
    conn.set('reconnecting', 'Connecting…', 'Connecting to the server…');
    const mine = (fn) => (...args) => { if (s === socket) fn(...args); };
    s.on('connect', mine(() => {
      failedAttempts = 0;
      retryDelay = FIRST_RETRY_MS;
      subscribe(s);
      if (everConnected) refreshSoon(); // events may have been missed meanwhile
      everConnected = true;
    }));
    s.on('disconnect', mine((reason) => {
      if (reason === 'io client disconnect') return;
      if (reason === 'io server disconnect') {
        conn.set('reconnecting', 'Reconnecting…');
        retryTimer = setTimeout(() => { if (s === socket) s.connect(); }, 1000);
        return;
      }
      conn.disconnected(failedAttempts);
    }));
    s.on('connect_error', mine((err) => {
      const message = (err && err.message) || '';
      if (isUnauthorizedMessage(message)) { stop(NOT_ADMIN, true); return; }
      failedAttempts += 1;
      if (s.active) { conn.disconnected(failedAttempts); return; }
      conn.set('offline', 'Offline', message || 'The server refused the connection.');
      clearTimeout(retryTimer);
      retryTimer = setTimeout(() => { if (s === socket && !s.connected) s.connect(); }, retryDelay);
      retryDelay = nextRetryDelay(retryDelay);
    }));
    s.io.on('reconnect_attempt', mine(() => conn.disconnected(failedAttempts)));
    for (const name of JOB_EVENTS) s.on(name, mine((payload) => onPush(name, payload)));
  }

  // ---------- start ----------

  if (!id) {
    stop(raw ? `“${raw}” is not a job id: a job id is 1 to 64 characters, 0-9 and a-f.` : 'This address names no job.');
    return;
  }
  document.title = `Job ${shortId(id)} · Darkroom admin`;
  view.token = createTokenStore(TOKEN_KEY).get();
  if (!view.token) {
    stop('', true);
    return;
  }
  for (const kind of Object.keys(ACTIONS)) ACTIONS[kind].button().addEventListener('click', () => act(kind));
  window.addEventListener('offline', () => { if (socket) conn.set('offline', 'Offline', 'Your device is offline.'); });
  window.addEventListener('online', () => {
    if (socket && !socket.connected) {
      conn.set('reconnecting', 'Reconnecting…');
      if (!socket.active) socket.connect();
    }
  });
  loadTimeline().then(() => { if (!view.stopped) connect(); });
}

startJobPage();

// The dashboard's live connection: one socket per sign-in, subscribed to every job;
// `queues:stats`, `workers:stats`, `charts:point`, `job:*` and `dlq:removed` pushes keep
// the views current, and after a reconnect everything is loaded once again (events may
// have been missed).
import { say } from './dom.js';
import { NOT_ADMIN } from './admin-model.js';
import { FIRST_RETRY_MS, nextRetryDelay, socketFactory } from './live.js';
import { JOB_EVENTS, errorText, isNewer, isUnauthorizedMessage, jobFromEvent } from './wire.js';

const SUBSCRIBE_TIMEOUT_MS = 10_000;

/** `admin` holds ui, conn, the session counter and token, cache, signOut and the views. */
export function createAdminLive(admin) {
  const { ui, conn } = admin;
  let socket = null;
  let everConnected = false;
  let failedAttempts = 0;
  let retryTimer = 0;
  let retryDelay = FIRST_RETRY_MS;

  function onJobEvent(name, payload) {
    const decoded = jobFromEvent(name, payload, admin.cache.get(payload && payload.job ? payload.job.id : undefined));
    if (!decoded) return;
    const { job, seq } = decoded;
    if (!isNewer(admin.cache.get(job.id), seq)) return; // stale or duplicate
    if (seq != null) job.seq = seq;
    admin.cache.remember(job);
    admin.jobs.onJob(job);
    admin.dlq.onJob(name, job);
    admin.detail.onJob(name, job, seq);
  }

  function close() {
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
    s.timeout(SUBSCRIBE_TIMEOUT_MS).emit('subscribe', { scope: 'all' }, (err, ack) => {
      if (gen !== admin.session || s !== socket) return;
      if (err) {
        say(ui.banner, 'The server did not confirm the subscription to all jobs; live updates may be missing.', 'error');
      } else if (ack && ack.ok) {
        say(ui.banner, '');
      } else if (ack && ack.error && ack.error.code === 'forbidden') {
        admin.signOut(NOT_ADMIN);
      } else {
        say(ui.banner, `Live updates are off: ${errorText(ack && ack.error) || 'subscription refused'}`, 'error');
      }
      ui.banner.hidden = !ui.banner.textContent;
    });
  }

  function connect() {
    close();
    const io = socketFactory();
    if (!io) {
      conn.set('offline', 'Offline', 'The live-update library failed to load.');
      return;
    }
    const gen = admin.session;
    const s = io({ auth: { token: admin.token }, transports: ['websocket', 'polling'], forceNew: true });
    socket = s;
    conn.set('reconnecting', 'Connecting…', 'Connecting to the server…');
    // Handlers of a socket that a later sign-in or sign-out replaced do nothing.
    const mine = (fn) => (...args) => { if (gen === admin.session && s === socket) fn(...args); };

    s.on('connect', mine(() => {
      failedAttempts = 0;
      retryDelay = FIRST_RETRY_MS;
      conn.set('connected', 'Connected', 'Live updates are on.');
      subscribeAll(s, gen);
      if (everConnected) {
        admin.queues.load();
        admin.workers.load();
        admin.charts.load();
        admin.jobs.load();
        admin.dlq.load();
        admin.detail.reload();
      }
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
      if (isUnauthorizedMessage(message)) { admin.signOut(NOT_ADMIN); return; }
      failedAttempts += 1;
      if (s.active) { conn.disconnected(failedAttempts); return; }
      conn.set('offline', 'Offline', message || 'The server refused the connection.');
      clearTimeout(retryTimer);
      retryTimer = setTimeout(() => { if (s === socket && !s.connected) s.connect(); }, retryDelay);
      retryDelay = nextRetryDelay(retryDelay);
    }));
    s.io.on('reconnect_attempt', mine(() => conn.disconnected(failedAttempts)));
    s.on('queues:stats', mine((payload) => admin.queues.render(payload)));
    s.on('workers:stats', mine((payload) => admin.workers.render(payload)));
    s.on('charts:point', mine((payload) => admin.charts.onPoint(payload)));
    s.on('dlq:removed', mine((payload) => admin.dlq.onRemoved(payload)));
    for (const name of JOB_EVENTS) s.on(name, mine((payload) => onJobEvent(name, payload)));
  }

  function listen() {
    window.addEventListener('offline', () => { if (socket) conn.set('offline', 'Offline', 'Your device is offline.'); });
    window.addEventListener('online', () => {
      if (socket && !socket.connected) {
        conn.set('reconnecting', 'Reconnecting…');
        if (!socket.active) socket.connect();
      }
    });
  }

  return { connect, close, listen };
}

// The live connection (Socket.IO, from the classic script vendor/socket.io.min.js, which
// defines the global `io` and is loaded before the modules): the connection indicator
// both pages show, retry timing, and the web client's own socket.
import { JOB_EVENTS, isUnauthorizedMessage } from './wire.js';

export const FIRST_RETRY_MS = 2000;
export const MAX_RETRY_MS = 30_000;

/** The next wait before retrying a refused connection: doubled, at most MAX_RETRY_MS. */
export function nextRetryDelay(delay) {
  return Math.min(delay * 2, MAX_RETRY_MS);
}

/** [state, label, detail] of the indicator while the connection is down. */
export function disconnectedStatus(online, failedAttempts) {
  if (!online) return ['offline', 'Offline', 'Your device is offline.'];
  if (failedAttempts >= 3) return ['offline', 'Offline', 'Cannot reach the server; still trying…'];
  return ['reconnecting', 'Reconnecting…', 'Trying to reach the server…'];
}

/** The Socket.IO client factory, or null when its script failed to load. */
export function socketFactory() {
  return typeof globalThis.io === 'function' ? globalThis.io : null;
}

/** The connection indicator `el` (its data-state, title and .conn-label). */
export function connIndicator(el) {
  const label = el.querySelector('.conn-label');
  const set = (state, text, detail = '') => {
    el.title = detail;
    if (el.dataset.state === state && label.textContent === text) return;
    el.dataset.state = state;
    label.textContent = text;
  };
  return {
    set,
    disconnected(failedAttempts) { set(...disconnectedStatus(navigator.onLine, failedAttempts)); },
  };
}

/**
 * The web client's socket: it authenticates with the current session token on every
 * attempt, renews the session when the token is refused, and hands `jobs:snapshot`
 * and `job:*` payloads to `onSnapshot(payload)` and `onJobEvent(name, payload)`.
 * Returns `{ reconnect(delay, force), resume() }`.
 */
export function startLive({ conn, session, onSnapshot, onJobEvent }) {
  let socket = null;
  let socketToken = null;
  let failedAttempts = 0;
  let authRenewals = 0;
  let connectTimer = 0;
  let retryDelay = FIRST_RETRY_MS;

  /** (Re)connect the socket after `delay` ms. `force` drops a live connection first (token changed). */
  function reconnect(delay, force = false) {
    if (!socket) return;
    clearTimeout(connectTimer);
    connectTimer = setTimeout(() => {
      if (force && (socket.connected || socket.active)) socket.disconnect();
      if (!socket.connected && !socket.active) socket.connect();
    }, delay);
  }

  /** The device is back online: reconnect now unless the manager is already at it. */
  function resume() {
    if (socket && !socket.connected) {
      conn.set('reconnecting', 'Reconnecting…');
      if (!socket.active) reconnect(0);
    }
  }

  function retryLater() {
    reconnect(retryDelay);
    retryDelay = nextRetryDelay(retryDelay);
  }

  function onConnectError(err) {
    const message = (err && err.message) || '';
    if (isUnauthorizedMessage(message)) {
      if (authRenewals >= 2) {
        conn.set('offline', 'Offline', `Could not authenticate: ${message}`);
        reconnect(MAX_RETRY_MS);
        return;
      }
      authRenewals += 1;
      conn.set('reconnecting', 'Reconnecting…', 'Refreshing your session…');
      session.renewSession(socketToken)
        .then(() => reconnect(0))
        .catch(() => {
          conn.set('offline', 'Offline', 'Could not create a session.');
          retryLater();
        });
      return;
    }
    failedAttempts += 1;
    if (socket.active) {
      conn.disconnected(failedAttempts); // the manager keeps retrying by itself
    } else {
      // Refused by the server for another reason: retry with backoff.
      conn.set('offline', 'Offline', message || 'The server refused the connection.');
      retryLater();
    }
  }

  const io = socketFactory();
  if (!io) {
    conn.set('offline', 'Offline', 'The live-update library failed to load.');
    return { reconnect, resume };
  }
  socket = io({
    // A function so that every (re)connect attempt sends the current token.
    auth: (cb) => {
      session.getToken().then(
        (t) => { socketToken = t; cb({ token: t }); },
        () => { socketToken = null; cb({}); },
      );
    },
    transports: ['websocket', 'polling'],
  });

  socket.on('connect', () => {
    failedAttempts = 0;
    authRenewals = 0;
    retryDelay = FIRST_RETRY_MS;
    conn.set('connected', 'Connected', 'Live updates are on.');
  });
  socket.on('disconnect', (reason) => {
    if (reason === 'io client disconnect') return; // we did it on purpose (and reconnect ourselves)
    if (reason === 'io server disconnect') {
      // The server ended the session; Socket.IO will not retry on its own.
      conn.set('reconnecting', 'Reconnecting…');
      reconnect(1000);
      return;
    }
    conn.disconnected(failedAttempts);
  });
  socket.on('connect_error', onConnectError);
  socket.io.on('reconnect_attempt', (attempt) => {
    if (!navigator.onLine) conn.set('offline', 'Offline', 'Your device is offline.');
    else if (failedAttempts >= 3) conn.set('offline', 'Offline', `Trying to reconnect (attempt ${attempt})…`);
    else conn.set('reconnecting', 'Reconnecting…', `Attempt ${attempt}`);
  });
  socket.on('jobs:snapshot', onSnapshot);
  for (const name of JOB_EVENTS) socket.on(name, (payload) => onJobEvent(name, payload));

  return { reconnect, resume };
}
